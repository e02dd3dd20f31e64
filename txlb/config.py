"""
The configuration file: TOML whose keys are the command line's options,
with named pools and routes.

Each top-level key is the name of a long option (C{retries},
C{health-path}, C{forwarded-for}) and its value is what the option takes,
so a file is checked by the same code as a command line.  C{backends} is a
list of C{[http://]HOST:PORT[=WEIGHT]} strings; a flag takes C{true} or
C{false}.  An option that may be given several times (C{listen},
C{backends-dns}, C{dns-server}) takes a list of strings, or one string.

Each C{[pools.NAME]} table takes the options that belong to a pool of
backends, the same way; C{[[routes]]} are read by L{txlb.routeconfig}.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable
from typing import Any, NamedTuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.9 and 3.10, as Debian's pypy3: the same parser, from PyPI
    import tomli as tomllib

#: Options that make no sense in the file itself.
NOT_IN_FILE = frozenset({"config", "demo"})


class ConfigError(Exception):
    """
    The configuration file cannot be used; the message says why, in one
    line.
    """


class Document(NamedTuple):
    """
    A configuration file, read.

    @ivar arguments: The command-line arguments its top-level keys stand
        for.
    @ivar pools: The arguments of each C{[pools.NAME]} table, by name, in
        the file's order.
    @ivar routes: The C{[[routes]]} tables, as given (C{None} without
        any).
    """

    arguments: list[str]
    pools: dict[str, list[str]]
    routes: Any


def read(
    text: str,
    parameters: set[str],
    flags: set[str],
    repeatable: frozenset[str] = frozenset(),
    poolKeys: frozenset[str] = frozenset(),
    refused: frozenset[str] = frozenset(),
    refusedWhy: str = "",
) -> Document:
    """
    Read a configuration file.

    @param text: The file's TOML.
    @param parameters: The long names of the options that take a value.
    @param flags: The long names of the options that take none.
    @param repeatable: The long names of the options that may be given
        several times, whose value may be a list.
    @param poolKeys: The long names of the options a pool's table may
        hold.
    @param refused: Top-level keys this document may not hold, for the
        reason C{refusedWhy}.
    @raise ConfigError: For TOML that does not parse, an unknown key, a
        refused one, or a value of the wrong type.
    """
    try:
        settings = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}") from None
    present = [key for key in settings if key in refused]
    if present:
        raise ConfigError(f"{', '.join(present)}: {refusedWhy}")
    pools: dict[str, list[str]] = {}
    tables = settings.pop("pools", {})
    if not isinstance(tables, dict):
        raise ConfigError("pools: expected tables ([pools.NAME])")
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"pools.{name}: expected a table ([pools.{name}])")
        pools[name] = _arguments(
            table, parameters & poolKeys, flags & poolKeys, repeatable & poolKeys, f"pools.{name}."
        )
    routes = settings.pop("routes", None)
    return Document(_arguments(settings, parameters, flags, repeatable), pools, routes)


def arguments(
    text: str, parameters: set[str], flags: set[str], repeatable: frozenset[str] = frozenset()
) -> list[str]:
    """
    The command-line arguments a configuration file's top-level keys stand
    for (see L{read}).
    """
    return read(text, parameters, flags, repeatable).arguments


def _arguments(
    settings: dict[str, Any],
    parameters: set[str],
    flags: set[str],
    repeatable: frozenset[str],
    where: str = "",
) -> list[str]:
    """
    The command-line arguments a table of options stands for; C{where}
    prefixes the names in errors.
    """
    args: list[str] = []
    known = (parameters | flags | repeatable) - NOT_IN_FILE
    for key, value in settings.items():
        if key not in known:
            raise ConfigError(f"unknown setting {where + key!r}{didYouMean(key, known)}")
        if key in flags:
            if not isinstance(value, bool):
                raise ConfigError(f"{where}{key}: expected true or false, not {value!r}")
            if value:
                args.append(f"--{key}")
            continue
        if key in repeatable and isinstance(value, list):
            if not all(isinstance(item, str) for item in value):
                raise ConfigError(f"{where}{key}: expected a list of strings")
            for item in value:
                args += [f"--{key}", item]
            continue
        args += [f"--{key}", _text(where + key, value)]
    return args


def didYouMean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """
    A hint naming the choice nearest C{word} (a misspelt option or setting),
    to end an error message with, or nothing if none is near.

    @param prefix: What to write before the choice (C{--} for an option).
    """
    nearest = difflib.get_close_matches(word, sorted(choices), n=1)
    return f": did you mean {prefix}{nearest[0]}?" if nearest else ""


def _text(key: str, value: Any) -> str:
    """
    An option's value as the command line would give it.
    """
    if key.rpartition(".")[2] == "backends" and isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            raise ConfigError(f'{key}: expected a list of "HOST:PORT[=WEIGHT]" strings')
        return ",".join(value)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{key}: expected a string or a number, not {value!r}")
    return str(value)
