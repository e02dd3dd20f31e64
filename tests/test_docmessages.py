"""
The error messages the documentation quotes are the ones txlb prints.

Every Markdown file of the checkout (those at its root and under C{docs/})
shows a failing command in a code block as a shell session: a line
C{$ COMMAND}, then what it prints.  Each C{twistd} or C{txlb-replay}
command whose output is a C{txlb:} or C{txlb-replay:} line is run here, as
a user would run it, from a folder of its own, and must print exactly that,
on stderr, and fail.

These run the installed package's commands: reinstall after a change.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from twisted.trial.unittest import SynchronousTestCase

#: The checkout the tests are in.
ROOT = Path(__file__).parent.parent

#: The commands run, and where they are.
COMMANDS = {name: str(Path(sys.executable).parent / name) for name in ("twistd", "txlb-replay")}

#: The files the examples take for granted, made in the folder they run in:
#: a module of the user's own policies (without the one the example names).
FILES = {"mypolicies.py": '"""\nMy own policies.\n"""\n'}

#: A code block's opening (or closing) fence, and its indentation.
_FENCE = re.compile(r"^(\s*)(```+|~~~+)")


class Example(NamedTuple):
    """
    A failing command the documentation shows, and what it prints.
    """

    where: str
    command: str
    output: list[str]


def markdownFiles(root: Path) -> list[Path]:
    """
    The documentation: the Markdown files at C{root} and under
    C{root/docs}, but for built or hidden ones (C{_build}, C{.tox}).
    """
    files = sorted(root.glob("*.md")) + sorted((root / "docs").rglob("*.md"))
    return [
        path
        for path in files
        if not any(part.startswith(("_", ".")) for part in path.relative_to(root).parts)
    ]


def examples(text: str, where: str) -> list[Example]:
    """
    The C{twistd} and C{txlb-replay} commands in the code blocks of the
    Markdown C{text} whose output is one of txlb's error lines.
    """
    found: list[Example] = []
    fence = None
    command: tuple[int, str] | None = None
    output: list[str] = []

    def done() -> None:
        if command is None:
            return
        words = command[1].split()
        if (
            words
            and words[0] in COMMANDS
            and output
            and output[0].startswith(
                (f"{words[0]}: ", "txlb: ") if words[0] == "txlb-replay" else ("txlb: ",)
            )
        ):
            found.append(Example(f"{where}:{command[0]}", command[1], list(output)))

    for number, line in enumerate(text.splitlines(), 1):
        opening = _FENCE.match(line)
        if fence is None:
            if opening is not None:
                fence = opening.group(2)
            continue
        if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
            done()
            fence, command, output = None, None, []
            continue
        if line.startswith("$ "):
            done()
            command, output = (number, line[2:].strip()), []
        elif command is not None and line.strip():
            output.append(line.rstrip())
    return found


class ExamplesTests(SynchronousTestCase):
    def test_found(self) -> None:
        """
        Fenced blocks give their C{$} commands with what follows them; other
        commands, other output and text outside blocks are left alone.
        """
        text = "\n".join(
            [
                "$ twistd -n txlb --nothing",
                "txlb: outside a block",
                "```",
                "$ twistd -n txlb --backends a:0",
                "txlb: --backends: bad",
                "$ txlb-replay log.json",
                "txlb-replay: name at least one policy",
                "$ curl http://localhost:8080/",
                "txlb: not txlb's",
                "$ twistd -n txlb --demo",
                "2026-12-01T00:00:00+0000 [-] Log opened.",
                "```",
                "~~~console",
                "$ twistd txlb --algo nope",
                "txlb: --algo: unknown",
                "~~~",
            ]
        )
        self.assertEqual(
            examples(text, "x.md"),
            [
                Example("x.md:4", "twistd -n txlb --backends a:0", ["txlb: --backends: bad"]),
                Example(
                    "x.md:6", "txlb-replay log.json", ["txlb-replay: name at least one policy"]
                ),
                Example("x.md:14", "twistd txlb --algo nope", ["txlb: --algo: unknown"]),
            ],
        )


class DocumentedMessagesTests(SynchronousTestCase):
    def test_asDocumented(self) -> None:
        """
        Every documented failing command prints what the documentation
        says, on stderr, and fails.
        """
        found = [
            example
            for path in markdownFiles(ROOT)
            for example in examples(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
        ]
        # The documentation shows some: if none are found, the way they are
        # written changed, and this test no longer checks them.
        self.assertNotEqual(found, [])
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        for name, text in FILES.items():
            (directory / name).write_text(text)
        env = {**os.environ, "PYTHONPATH": str(directory)}
        wrong = []
        for example in found:
            words = shlex.split(example.command)
            result = subprocess.run(
                [COMMANDS[words[0]], *words[1:]],
                cwd=directory,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            printed = (result.stdout + result.stderr).splitlines()
            if (result.returncode == 0, result.stdout, printed) != (False, "", example.output):
                wrong.append(
                    f"{example.where}: $ {example.command}\n  documented: {example.output}\n"
                    f"  printed (status {result.returncode}): {printed}"
                )
        self.assertEqual(wrong, [], "\n".join(wrong))
