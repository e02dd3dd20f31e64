"""
What txlb keeps in etcd, under its prefix (C{--etcd-prefix}, C{/txlb/} by
default):

  - C{config.toml}: a whole configuration document, as C{--config} reads;
  - C{pools/NAME/backends/HOST:PORT}: a backend in pool C{NAME}, its value
    C{{"weight": N}} or empty (weight 1), usually under a lease the backend
    keeps alive;
  - C{state/pools/NAME/backends/HOST:PORT}: what the admin API changed
    about the backend at C{HOST:PORT} in pool C{NAME}, a JSON object:
    C{"weight": N} (its weight), C{"draining": true}, C{"removed": true}
    (out of the pool, whatever else lists it), C{"added": true} (in the
    pool, with its C{"weight"});
  - C{state/pools/NAME/algorithm}: the algorithm and shadow the admin API
    switched the pool C{NAME} to, C{{"algo": "p2c", "shadow": "ewma"}}
    (either may be left out: the configuration's holds; a null shadow is
    none).

Keys here are relative to the prefix.  L{readLayout} reads them all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from txlb.adminstate import AdminState
from txlb.backend import MAX_WEIGHT, Backend, parseBackend

CONFIG = "config.toml"

#: Where the admin API's changes are kept.
STATE = "state/"


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
    return _member(key, key, value)


def _member(relative: str, key: str, value: bytes) -> tuple[str, Backend] | None:
    """
    L{parseMember} of C{relative} (a member key, or none), naming C{key}
    in its errors.
    """
    parts = relative.split("/")
    if len(parts) < 3 or parts[0] != "pools" or parts[2] != "backends":
        return None
    if len(parts) != 4:
        # pools/NAME/backends with no address, or an address with a slash:
        # a mistake, not a key of a later version.
        raise ValueError(f"{key}: expected pools/NAME/backends/HOST:PORT")
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


def stateKey(pool: str, address: str) -> str:
    """
    The key of what the admin API changed about the backend at C{address}
    in C{pool}.

    @raise ValueError: As L{memberKey}.
    """
    return STATE + memberKey(pool, address)


def algorithmKey(pool: str) -> str:
    """
    The key of the algorithm the admin API switched C{pool} to.

    @raise ValueError: For a pool name that is empty or holds a C{/}.
    """
    if not pool or "/" in pool:
        raise ValueError(f"{pool!r} is not a pool name (one path segment)")
    return f"{STATE}pools/{pool}/algorithm"


class Layout(NamedTuple):
    """
    What the keys under the prefix say, pool by pool.

    @ivar members: The backends registered in each pool, in the order of
        their keys.
    @ivar states: What the admin API changed in each pool.
    @ivar algorithms: The algorithm (C{algo}) and shadow (C{shadow-algo})
        the admin API switched each pool to.
    @ivar problems: Each key that cannot be read, and why, in one line.
    """

    members: dict[str, list[Backend]]
    states: dict[str, AdminState]
    algorithms: dict[str, dict[str, str | None]]
    problems: dict[str, str]


def readLayout(values: Mapping[str, bytes]) -> Layout:
    """
    Read every member, admin state and algorithm key of C{values} (keys
    relative to the prefix); others (C{config.toml} and keys of later
    versions) are left alone.
    """
    layout = Layout({}, {}, {}, {})
    for key in sorted(values):
        value = values[key]
        try:
            member = parseMember(key, value)
            if member is not None:
                pool, backend = member
                layout.members.setdefault(pool, []).append(backend)
            elif key.startswith(STATE):
                _readState(key, value, layout)
        except ValueError as e:
            layout.problems[key] = str(e)
    return layout


def _readState(key: str, value: bytes, layout: Layout) -> None:
    """
    Read one key under C{state/} into C{layout}.

    @raise ValueError: With a one-line reason naming C{key}.
    """
    parts = key[len(STATE) :].split("/")
    if len(parts) == 3 and parts[0] == "pools" and parts[2] == "algorithm":
        if not parts[1]:
            raise ValueError(f"{key}: no pool name")
        document = _object(value, key)
        algorithm: dict[str, str | None] = {}
        for field, option in (("algo", "algo"), ("shadow", "shadow-algo")):
            if field not in document:
                continue
            spec = document[field]
            if not (isinstance(spec, str) and spec) and not (spec is None and field == "shadow"):
                raise ValueError(f'{key}: "{field}" must be an algorithm\'s name')
            algorithm[option] = spec
        layout.algorithms[parts[1]] = algorithm
        return
    member = _member(key[len(STATE) :], key, b"")
    if member is None:
        # A key of a later version.
        return
    pool, backend = member
    document = _object(value, key)
    state = layout.states.setdefault(pool, AdminState())
    if _flag(document, "removed", key):
        state.remove(backend.key)
        return
    weight = document.get("weight")
    if weight is not None:
        backend.weight = _weight(json.dumps({"weight": weight}).encode(), key)
    if _flag(document, "added", key):
        state.add(backend)
    state.change(
        backend.key,
        weight=backend.weight if weight is not None else None,
        draining=_flag(document, "draining", key) or None,
    )


def _object(value: bytes, key: str) -> dict[str, Any]:
    try:
        document = json.loads(value)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise ValueError(f"{key}: the value is not a JSON object")
    return document


def _flag(document: dict[str, Any], field: str, key: str) -> bool:
    value = document.get(field, False)
    if not isinstance(value, bool):
        raise ValueError(f'{key}: "{field}" must be true or false')
    return value


def changedState(
    value: bytes | None, weight: int | None = None, draining: bool | None = None
) -> bytes | None:
    """
    The value of a backend's state key after the admin API set its weight
    and/or its drain (as L{AdminState.change}), from C{value} (C{None}:
    no key).

    @return: The new value, or C{None} when nothing is left to keep (the
        key is deleted).
    """
    document = _current(value)
    if weight is not None:
        document["weight"] = weight
    if draining is True:
        document["draining"] = True
    elif draining is False:
        document.pop("draining", None)
    return _encoded(document)


def removedState(value: bytes | None) -> bytes:
    """
    The value of a backend's state key after the admin API removed it.
    """
    return _encoded({"removed": True}) or b""


def addedState(value: bytes | None, weight: int) -> bytes:
    """
    The value of a backend's state key after the admin API added it, with
    C{weight}: whatever was said of its address before is replaced.
    """
    return _encoded({"added": True, "weight": weight}) or b""


def algorithmState(
    value: bytes | None, changes: Mapping[str, str | None], configured: Mapping[str, str | None]
) -> bytes | None:
    """
    The value of a pool's algorithm key after the admin API switched
    C{changes} (C{algo}, C{shadow-algo}), from C{value}: what equals the
    configuration's (C{configured}) is left out, so that a later
    configuration's holds again.

    @return: The new value, or C{None} when nothing is left to keep.
    """
    fields = {"algo": "algo", "shadow-algo": "shadow"}
    document = {k: v for k, v in _current(value).items() if k in fields.values()}
    for option, spec in changes.items():
        if spec == configured.get(option):
            document.pop(fields[option], None)
        else:
            document[fields[option]] = spec
    return _encoded(document)


def _current(value: bytes | None) -> dict[str, Any]:
    """
    A state key's JSON object, or an empty one for none (or one that
    cannot be read, which the change replaces).
    """
    if not value:
        return {}
    try:
        document = json.loads(value)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _encoded(document: dict[str, Any]) -> bytes | None:
    if not document:
        return None
    return json.dumps(document, sort_keys=True, separators=(", ", ": ")).encode("ascii")
