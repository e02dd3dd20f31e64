"""
Python objects named in txlb's configuration as C{package.module:Name}:
C{--algo} policies (L{txlb.algorithms.policyloader}) and route routers
(L{txlb.routes}).  Whatever goes wrong becomes one line, so a bad name ends
a start, or fails a reload, without a traceback.
"""

from __future__ import annotations

import importlib
from typing import Any


def importName(spec: str) -> Any:
    """
    The callable (a class, usually) that C{package.module:Name} names;
    C{Name} may be dotted (C{module:Outer.Inner}).

    @raise ValueError: With one line saying why there is none.
    """
    moduleName, _, name = spec.partition(":")
    if not moduleName or not name or ":" in name:
        raise ValueError(f"{spec!r} is not package.module:Name")
    try:
        found: Any = importlib.import_module(moduleName)
    except ModuleNotFoundError as e:
        raise ValueError(f"{spec!r}: no module named {e.name!r}") from None
    except Exception as e:
        raise ValueError(f"{spec!r}: importing {moduleName} failed: {oneLine(e)}") from None
    for part in name.split("."):
        if not hasattr(found, part):
            raise ValueError(f"{spec!r}: {moduleName} has no {name!r}")
        found = getattr(found, part)
    if not callable(found):
        raise ValueError(f"{spec!r} is not a class")
    return found


def oneLine(error: Exception) -> str:
    """
    C{error} as C{Type: message}, on one line.
    """
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
