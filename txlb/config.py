"""
The configuration file: TOML whose keys are the command line's options.

Each key is the name of a long option (C{retries}, C{health-path},
C{forwarded-for}) and its value is what the option takes, so a file is
checked by the same code as a command line.  C{backends} is a list of
C{[http://]HOST:PORT[=WEIGHT]} strings; a flag takes C{true} or C{false}.
An option that may be given several times (C{backends-dns}, C{dns-server})
takes a list of strings, or one string.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable
from typing import Any

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


def arguments(
    text: str, parameters: set[str], flags: set[str], repeatable: frozenset[str] = frozenset()
) -> list[str]:
    """
    The command-line arguments a configuration file stands for.

    @param text: The file's TOML.
    @param parameters: The long names of the options that take a value.
    @param flags: The long names of the options that take none.
    @param repeatable: The long names of the options that may be given
        several times, whose value may be a list.
    @raise ConfigError: For TOML that does not parse, an unknown key, or a
        value of the wrong type.
    """
    try:
        settings = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}") from None
    args: list[str] = []
    known = (parameters | flags | repeatable) - NOT_IN_FILE
    for key, value in settings.items():
        if key not in known:
            raise ConfigError(f"unknown setting {key!r}{didYouMean(key, known)}")
        if key in flags:
            if not isinstance(value, bool):
                raise ConfigError(f"{key}: expected true or false, not {value!r}")
            if value:
                args.append(f"--{key}")
            continue
        if key in repeatable and isinstance(value, list):
            if not all(isinstance(item, str) for item in value):
                raise ConfigError(f"{key}: expected a list of strings")
            for item in value:
                args += [f"--{key}", item]
            continue
        args += [f"--{key}", _text(key, value)]
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
    if key == "backends" and isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            raise ConfigError('backends: expected a list of "HOST:PORT[=WEIGHT]" strings')
        return ",".join(value)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{key}: expected a string or a number, not {value!r}")
    return str(value)
