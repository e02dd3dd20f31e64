"""
Policies from outside txlb: C{--algo package.module:Name} imports an
L{IAlgorithm} provider class, and installed packages offer algorithms by
name in the C{txlb.algorithms} entry-point group.

Entry points rather than Twisted's plugin system: a package declares them
in its own metadata (C{entry_points={"txlb.algorithms": ["mine =
mypkg.policy:Mine"]}}), so it writes nothing into txlb's package, needs no
C{dropin.cache}, and nothing is imported until that name is asked for.
twistd's own plugin (C{twisted/plugins/txlb_plugin.py}) stays as it is:
that is how twistd finds txlb, not how txlb finds policies.

Whatever makes the algorithm is checked once per start-up or reload on an
instance made from the real backends (L{makeChecked}), so a broken policy
ends the start, or fails the reload, with one line, and never meets a
request.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from txlb.backend import Backend
from txlb.importing import importName, oneLine
from txlb.interfaces import IAlgorithm

#: The entry-point group installed packages list their algorithms in.
ENTRY_POINTS = "txlb.algorithms"

MakeAlgorithm = Callable[[Sequence[Backend]], IAlgorithm]


def installed() -> dict[str, Any]:
    """
    The algorithms installed packages offer, by name: their entry points.
    """
    found: Any = importlib.metadata.entry_points()
    if hasattr(found, "select"):
        group = found.select(group=ENTRY_POINTS)
    else:  # Python 3.9: a dict of groups
        group = found.get(ENTRY_POINTS, ())
    return {entry.name: entry for entry in group}


def findAlgorithm(spec: str, builtin: Mapping[str, MakeAlgorithm]) -> MakeAlgorithm:
    """
    What makes the algorithm C{spec} names: one of C{builtin}, a
    C{package.module:Name}, or a name an installed package offers.

    @raise ValueError: With one line saying why there is none.
    """
    made: MakeAlgorithm
    if spec in builtin:
        return builtin[spec]
    if ":" in spec:
        made = importName(spec)
        return made
    entry = installed().get(spec)
    if entry is None:
        raise ValueError(
            f"unknown algorithm {spec!r} (choose from {', '.join(builtin)}, "
            f"a name in the {ENTRY_POINTS} entry points, or package.module:Name)"
        )
    try:
        made = entry.load()
    except Exception as e:
        raise ValueError(f"{spec!r} (entry point {entry.value}): {oneLine(e)}") from None
    return made


def makeChecked(make: MakeAlgorithm, backends: Sequence[Backend], spec: str) -> IAlgorithm:
    """
    An algorithm made by C{make} from C{backends}, checked with
    C{zope.interface.verify.verifyObject} to provide L{IAlgorithm}.

    @raise ValueError: With one line saying what is wrong.
    """
    try:
        algorithm = make(backends)
    except Exception as e:
        raise ValueError(f"{spec!r} raised when made: {oneLine(e)}") from None
    try:
        verifyObject(IAlgorithm, algorithm)
    except Invalid as e:
        raise ValueError(f"{spec!r} is not an IAlgorithm provider: {oneLine(e)}") from None
    return algorithm
