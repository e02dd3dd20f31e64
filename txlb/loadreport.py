"""
Load reports from backends: the value of the load header (C{X-Txlb-Load} by
default) a backend may add to a response, read as one number from 0 (idle)
to 1 (saturated).

Two forms are understood:

  - a bare number, the backend's utilisation: C{0.72}.  Above 1 counts as 1;
  - a structured-field dictionary of numbers (RFC 8941 section 3.2), such as
    C{cpu=0.72, mem=0.4, queue=12}: the load is the largest member, where
    C{queue} (requests waiting) counts as C{queue / (queue + 1)} (0 waiting
    is 0, 1 is 0.5, 12 is 0.92) and any other member is a utilisation,
    capped at 1.  Members that are not numbers, and parameters after C{;},
    are ignored.

Anything else (negative, empty, not a number) is no report.  Parsing is a
pure function of the bytes, so it is tested table-style.
"""

from __future__ import annotations

import math


def parseLoad(value: bytes) -> float | None:
    """
    The load C{value} reports, from 0 to 1, or C{None} if it reports none.
    """
    text = value.strip()
    number = _number(text)
    if number is not None:
        return min(number, 1.0)
    loads = []
    for member in text.split(b","):
        key, equals, item = member.partition(b"=")
        number = _number(item.partition(b";")[0].strip())
        if not equals or number is None:
            continue
        key = key.strip()
        loads.append(number / (number + 1) if key == b"queue" else min(number, 1.0))
    return max(loads) if loads else None


def _number(text: bytes) -> float | None:
    """
    C{text} as a finite number of at least 0, or C{None}.
    """
    try:
        number = float(text)
    except ValueError:
        return None
    if not 0 <= number < math.inf:
        return None
    return number
