"""
What txlb keeps in etcd, under its prefix (C{--etcd-prefix}, C{/txlb/} by
default):

  - C{config.toml}: a whole configuration document, as C{--config} reads;
  - C{pools/NAME/backends/HOST:PORT}: a backend in pool C{NAME}, its value
    C{{"weight": N}} or empty (weight 1), usually under a lease the backend
    keeps alive;
  - C{state/...}: what the admin API changed.

Keys here are relative to the prefix.
"""

from __future__ import annotations

import json

from txlb.backend import MAX_WEIGHT, Backend, parseBackend

CONFIG = "config.toml"


def memberKey(pool: str, address: str) -> str:
    """
    The key that puts the backend at C{address} (C{HOST:PORT}) in C{pool}.

    @raise ValueError: With a one-line reason, for a pool name that is empty
        or holds a C{/}, or an address that is not C{HOST:PORT}.
    """
    if not pool or "/" in pool:
        raise ValueError(f"{pool!r} is not a pool name (one path segment)")
    _address(address)
    return f"pools/{pool}/backends/{address}"


def memberValue(weight: int) -> bytes:
    """
    The value of a member key: its weight.
    """
    return json.dumps({"weight": weight}).encode("ascii")


def parseMember(key: str, value: bytes) -> tuple[str, Backend] | None:
    """
    The pool and backend a member key and value describe, or C{None} if
    C{key} is not a member key.

    @raise ValueError: With a one-line reason, for a member key or value
        that cannot be read.
    """
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != "pools" or parts[2] != "backends":
        return None
    pool, address = parts[1], parts[3]
    if not pool:
        raise ValueError(f"{key}: no pool name")
    backend = _address(address, key)
    backend.weight = _weight(value, key)
    return pool, backend


def _address(address: str, key: str | None = None) -> Backend:
    where = f"{key}: " if key else ""
    if "=" in address or "://" in address:
        raise ValueError(f"{where}{address!r} is not HOST:PORT")
    try:
        return parseBackend(address)
    except ValueError as e:
        raise ValueError(f"{where}{address!r}: {e}") from None


def _weight(value: bytes, key: str) -> int:
    """
    The weight in a member's value: C{{"weight": N}}, or 1 if it is empty
    or has no weight (other fields are for later versions).
    """
    if not value.strip():
        return 1
    try:
        document = json.loads(value)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise ValueError(f'{key}: the value is not a JSON object like {{"weight": 2}}')
    weight = document.get("weight", 1)
    if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= MAX_WEIGHT:
        raise ValueError(f"{key}: the weight must be a whole number from 1 to {MAX_WEIGHT}")
    return weight
