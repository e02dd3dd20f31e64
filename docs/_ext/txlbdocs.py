"""
Sphinx directives that document txlb's command lines from the code itself.

An option's name, short form, whether it takes a value, its default, its
one-line help and how a configuration file gives it all come from the
C{usage.Options} class at build time (and, for the file, from
C{txlb.config}, by asking it); the page only adds prose.  The build fails
(with C{-W}) when an option of the code has no entry in the docs, when an
entry names an option the code lacks, or when an entry's value placeholder
does not match whether the option takes a value:

    ```{txlb-option} --listen DESCRIPTION
    Prose about --listen.
    ```

    ```{txlb-options-table}
    ```

A C{{program}} directive before them (C{```{program} txlb-replay```})
switches to another command; C{conf.py}'s C{txlb_option_classes} maps each
program (C{""} for C{twistd txlb}) to its options class.
"""

from __future__ import annotations

import dataclasses
from importlib import import_module
from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.domains.std import Cmdoption
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Option:
    """
    One option as the code declares it.
    """

    name: str
    short: str | None
    takesValue: bool
    default: Any
    help: str
    #: How a configuration file gives it: None if it cannot.
    inFile: str | None


def _optionsClass(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(import_module(module), name)


def _fileForm(name: str, parameters: set[str], flags: set[str]) -> str | None:
    """
    How a configuration file gives option C{name}, found by asking
    C{txlb.config.arguments} what it makes of a few probes.
    """
    from txlb import config, tap

    def probe(value: str) -> list[str] | None:
        try:
            return config.arguments(f"{name} = {value}", parameters, flags, tap.REPEATABLE)
        except config.ConfigError:
            return None

    if probe("true") == [f"--{name}"]:
        return "true or false"
    scalar = probe('"x"')
    if scalar is None:
        return None
    listed = probe('["x", "y"]')
    if listed == [f"--{name}", "x", f"--{name}", "y"]:
        return "a string, or a list of strings, each adding one to the command line's"
    if listed == [f"--{name}", "x,y"]:
        return "a string, or a list of strings joined with commas"
    return "a string or a number, as on the command line"


def optionsOf(path: str, withFile: bool) -> dict[str, Option]:
    """
    The options of the C{usage.Options} class at C{path}, by long name.
    """
    cls = _optionsClass(path)
    instance = cls()
    shorts = {long: short for short, long in instance.synonyms.items() if len(short) == 1}
    parameters = {row[0] for row in getattr(cls, "optParameters", [])}
    flags = {row[0] for row in getattr(cls, "optFlags", [])}
    options = {}
    for spelled in instance.longOpt:
        name = spelled.rstrip("=")
        default = instance.defaults.get(name)
        takesValue = spelled.endswith("=")
        options[name] = Option(
            name=name,
            short=shorts.get(name),
            takesValue=takesValue,
            default=default if takesValue else None,
            help=" ".join((instance.docs.get(name) or "").split()),
            inFile=_fileForm(name, parameters, flags) if withFile else None,
        )
    return options


def _classFor(env: Any) -> tuple[str, str]:
    program = env.ref_context.get("std:program") or ""
    classes = env.config.txlb_option_classes
    if program not in classes:
        raise ValueError(f"no options class for program {program!r}: add it to txlb_option_classes")
    return program, classes[program]


def _options(env: Any, program: str, path: str) -> dict[str, Option]:
    cache = env.app.__dict__.setdefault("_txlbOptions", {})
    if path not in cache:
        cache[path] = optionsOf(path, withFile=program == "")
    return cache[path]


def showDefault(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _documented(env: Any) -> dict[str, set[tuple[str, str]]]:
    if not hasattr(env, "txlb_documented"):
        env.txlb_documented = {}
    return env.txlb_documented


class TxlbOption(Cmdoption):
    """
    C{```{txlb-option} --NAME [PLACEHOLDER]}: an option of the current
    program, described from the code, followed by the directive's prose.
    """

    def run(self) -> list[nodes.Node]:
        try:
            program, path = _classFor(self.env)
        except ValueError as e:
            return [self.state.document.reporter.error(str(e), line=self.lineno)]
        spelled, _, placeholder = self.arguments[0].strip().partition(" ")
        name = spelled.removeprefix("--")
        option = _options(self.env, program, path).get(name)
        if not spelled.startswith("--") or option is None:
            logger.warning(
                "txlb-option: %s has no option %r", path, spelled, location=self.get_location()
            )
            return []
        if bool(placeholder) != option.takesValue:
            logger.warning(
                "txlb-option: --%s %s (write '--%s%s')",
                name,
                "takes a value" if option.takesValue else "takes no value",
                name,
                " VALUE" if option.takesValue else "",
                location=self.get_location(),
            )
        _documented(self.env).setdefault(self.env.docname, set()).add((program, name))
        self.txlbOption = option
        signature = f"--{name}" + (f" {placeholder}" if placeholder else "")
        if option.short:
            signature += f", -{option.short}" + (f" {placeholder}" if placeholder else "")
        self.arguments = [signature]
        return super().run()

    def transform_content(self, content_node: addnodes.desc_content) -> None:
        option = self.txlbOption
        facts = nodes.paragraph()
        facts += nodes.emphasis(text=option.help)
        if option.default is not None:
            facts += nodes.Text(" Default: ")
            facts += nodes.literal(text=showDefault(option.default))
            facts += nodes.Text(".")
        if option.inFile is not None:
            facts += nodes.Text(" Configuration file key: ")
            facts += nodes.literal(text=option.name)
            facts += nodes.Text(f" ({option.inFile}).")
        elif _classFor(self.env)[0] == "":
            facts += nodes.Text(" Command line only.")
        content_node.insert(0, facts)


class TxlbOptionsTable(SphinxDirective):
    """
    C{```{txlb-options-table}}: every option of the current program in one
    table, each linked to its entry.
    """

    has_content = False

    def run(self) -> list[nodes.Node]:
        try:
            program, path = _classFor(self.env)
        except ValueError as e:
            return [self.state.document.reporter.error(str(e), line=self.lineno)]
        options = sorted(_options(self.env, program, path).values(), key=lambda o: o.name)
        table = nodes.table(classes=["txlb-options"])
        group = nodes.tgroup(cols=3)
        table += group
        for width in (30, 15, 55):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        head += self._row([nodes.Text("option"), nodes.Text("default"), nodes.Text("what")])
        body = nodes.tbody()
        group += body
        for option in options:
            reference = addnodes.pending_xref(
                "",
                nodes.literal(text=f"--{option.name}"),
                refdomain="std",
                reftype="option",
                reftarget=f"--{option.name}",
                refexplicit=True,
                refwarn=True,
            )
            reference["std:program"] = program or None
            default = (
                nodes.literal(text=showDefault(option.default))
                if option.default is not None
                else nodes.Text("")
            )
            body += self._row([reference, default, nodes.Text(option.help)])
        return [table]

    @staticmethod
    def _row(cells: list[nodes.Node]) -> nodes.row:
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            paragraph = nodes.paragraph()
            paragraph += cell
            entry += paragraph
            row += entry
        return row


def checkEveryOptionDocumented(app: Sphinx, env: Any) -> None:
    documented = set().union(*_documented(env).values())
    for program, path in app.config.txlb_option_classes.items():
        for name in sorted(_options(env, program, path)):
            if (program, name) not in documented:
                logger.warning(
                    "--%s of %s (%s) has no txlb-option entry in the docs: add one to "
                    "the reference page of %s",
                    name,
                    path,
                    program or "twistd txlb",
                    program or "twistd txlb",
                )


def purge(app: Sphinx, env: Any, docname: str) -> None:
    _documented(env).pop(docname, None)


def merge(app: Sphinx, env: Any, docnames: set[str], other: Any) -> None:
    for docname in docnames:
        if docname in _documented(other):
            _documented(env)[docname] = _documented(other)[docname]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("txlb_option_classes", {"": "txlb.tap.Options"}, "env")
    app.add_directive("txlb-option", TxlbOption)
    app.add_directive("txlb-options-table", TxlbOptionsTable)
    app.connect("env-check-consistency", checkEveryOptionDocumented)
    app.connect("env-purge-doc", purge)
    app.connect("env-merge-info", merge)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
