"""
L{txlb.etcd.layout}: what the keys under a fleet's prefix say, and the
values the admin API writes, as tables (in memory: these are pure
functions).  The member keys' own parsing is in C{test_etcd_gateway}.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from txlb.adminstate import AdminState
from txlb.etcd.layout import (
    Layout,
    addedState,
    algorithmKey,
    algorithmState,
    changedState,
    readLayout,
    removedState,
    stateKey,
)


def described(state: AdminState) -> dict[str, Any]:
    """
    An admin state as plain values: weights, drained, removed and added
    (with their weights), by C{HOST:PORT}.
    """

    def address(key: tuple[str, int]) -> str:
        return f"{key[0]}:{key[1]}"

    return {
        "weights": {address(k): w for k, w in state.weights.items()},
        "drained": sorted(address(k) for k in state.drained),
        "removed": sorted(address(k) for k in state.removed),
        "added": {address(k): b.weight for k, b in state.added.items()},
    }


def nothing(**changed: Any) -> dict[str, Any]:
    return {"weights": {}, "drained": [], "removed": [], "added": {}, **changed}


def members(layout: Layout) -> dict[str, list[tuple[str, int]]]:
    return {
        pool: [(b.address, b.weight) for b in backends] for pool, backends in layout.members.items()
    }


class ReadLayoutTests(SynchronousTestCase):
    def test_members(self) -> None:
        """
        Member keys give each pool its backends with their weights, in the
        order of their keys, whatever the order of the mapping.
        """
        layout = readLayout(
            {
                "pools/web/backends/10.0.0.2:80": b'{"weight": 3}',
                "pools/api/backends/[::1]:8080": b"",
                "pools/web/backends/10.0.0.1:80": b"{}",
                "pools/web/backends/10.0.0.3:80": b'{"weight": 1000, "zone": "b"}',
            }
        )
        self.assertEqual(
            members(layout),
            {
                "api": [("[::1]:8080", 1)],
                "web": [("10.0.0.1:80", 1), ("10.0.0.2:80", 3), ("10.0.0.3:80", 1000)],
            },
        )
        self.assertEqual((layout.states, layout.algorithms, layout.problems), ({}, {}, {}))

    def test_backendStates(self) -> None:
        """
        Each admin state value becomes the change it stands for, in the
        pool its key names.
        """
        table: list[tuple[bytes, dict[str, Any]]] = [
            (b'{"draining": true}', nothing(drained=["h:1"])),
            (b'{"draining": false}', nothing()),
            (b'{"weight": 7}', nothing(weights={"h:1": 7})),
            (b'{"weight": 7, "draining": true}', nothing(weights={"h:1": 7}, drained=["h:1"])),
            (b'{"removed": true}', nothing(removed=["h:1"])),
            # Removed wins over anything else said of the address.
            (b'{"removed": true, "weight": 3, "draining": true}', nothing(removed=["h:1"])),
            (b'{"added": true, "weight": 4}', nothing(weights={"h:1": 4}, added={"h:1": 4})),
            (
                b'{"added": true, "weight": 2, "draining": true}',
                nothing(weights={"h:1": 2}, added={"h:1": 2}, drained=["h:1"]),
            ),
            (b'{"added": true}', nothing(weights={"h:1": 1}, added={"h:1": 1})),
            # Fields of later versions are left alone.
            (b'{"draining": true, "note": "maintenance"}', nothing(drained=["h:1"])),
            (b"{}", nothing()),
        ]
        for value, expected in table:
            layout = readLayout({"state/pools/api/backends/h:1": value})
            self.assertEqual(layout.problems, {}, value)
            self.assertEqual(list(layout.states), ["api"], value)
            self.assertEqual(described(layout.states["api"]), expected, value)
            self.assertEqual((layout.members, layout.algorithms), ({}, {}), value)

    def test_algorithms(self) -> None:
        """
        A pool's algorithm key gives the options it switches (C{algo},
        C{shadow-algo}); a null shadow is none, and what is left out is the
        configuration's.
        """
        table: list[tuple[bytes, dict[str, str | None]]] = [
            (b'{"algo": "p2c"}', {"algo": "p2c"}),
            (b'{"algo": "p2c", "shadow": "ewma"}', {"algo": "p2c", "shadow-algo": "ewma"}),
            (b'{"shadow": null}', {"shadow-algo": None}),
            (b'{"shadow": "hash"}', {"shadow-algo": "hash"}),
            (b"{}", {}),
            (b'{"algo": "pkg.mod:Mine", "later": 1}', {"algo": "pkg.mod:Mine"}),
        ]
        for value, expected in table:
            layout = readLayout({"state/pools/web/algorithm": value})
            self.assertEqual(layout.problems, {}, value)
            self.assertEqual(layout.algorithms, {"web": expected}, value)

    def test_othersLeftAlone(self) -> None:
        """
        The document and keys of later versions are not the layout's, and
        are no problem.
        """
        layout = readLayout(
            {
                "config.toml": b"not toml at all [",
                "pools/api": b"x",
                "pools/api/settings": b"x",
                "pools/api/weights/h:1": b"x",
                "state/version": b"x",
                "state/pools/api/limits": b"x",
                "state/routes/api": b"x",
                "something/else": b"x",
            }
        )
        self.assertEqual(layout, Layout({}, {}, {}, {}))

    def test_malformed(self) -> None:
        """
        Each key that cannot be read is a problem with one line naming it,
        and only it: the keys beside it still apply.
        """
        table = [
            ("pools/api/backends/nope", b"", "'nope': missing port (expected HOST:PORT)"),
            ("pools/api/backends/h:0", b"", "'h:0': bad port '0' (expected 1-65535)"),
            ("pools/api/backends/http://h:1", b"", "expected pools/NAME/backends/HOST:PORT"),
            ("pools/api/backends/h:1=2", b"", "'h:1=2' is not HOST:PORT"),
            ("pools/api/backends/h:1/", b"", "expected pools/NAME/backends/HOST:PORT"),
            ("pools/api/backends", b"", "expected pools/NAME/backends/HOST:PORT"),
            ("pools//backends/h:1", b"", "no pool name"),
            ("pools/api/backends/h:1", b"[2]", 'the value is not a JSON object like {"weight": 2}'),
            (
                "pools/api/backends/h:1",
                b"\xff",
                'the value is not a JSON object like {"weight": 2}',
            ),
            (
                "pools/api/backends/h:1",
                b'{"weight": 1001}',
                "the weight must be a whole number from 1 to 1000",
            ),
            (
                "pools/api/backends/h:1",
                b'{"weight": 2.5}',
                "the weight must be a whole number from 1 to 1000",
            ),
            (
                "pools/api/backends/h:1",
                b'{"weight": null}',
                "the weight must be a whole number from 1 to 1000",
            ),
            ("state/pools/api/backends/h:1", b"", "the value is not a JSON object"),
            ("state/pools/api/backends/h:1", b"true", "the value is not a JSON object"),
            (
                "state/pools/api/backends/h:1",
                b'{"draining": "yes"}',
                '"draining" must be true or false',
            ),
            (
                "state/pools/api/backends/h:1",
                b'{"draining": 1}',
                '"draining" must be true or false',
            ),
            (
                "state/pools/api/backends/h:1",
                b'{"removed": null}',
                '"removed" must be true or false',
            ),
            ("state/pools/api/backends/h:1", b'{"added": "true"}', '"added" must be true or false'),
            (
                "state/pools/api/backends/h:1",
                b'{"weight": 0}',
                "the weight must be a whole number from 1 to 1000",
            ),
            (
                "state/pools/api/backends/h:1",
                b'{"weight": "3"}',
                "the weight must be a whole number from 1 to 1000",
            ),
            ("state/pools/api/backends/nope", b"{}", "'nope': missing port (expected HOST:PORT)"),
            ("state/pools/api/backends/h:1/x", b"{}", "expected pools/NAME/backends/HOST:PORT"),
            ("state/pools//backends/h:1", b"{}", "no pool name"),
            ("state/pools/api/algorithm", b"p2c", "the value is not a JSON object"),
            ("state/pools/api/algorithm", b'{"algo": ""}', '"algo" must be an algorithm\'s name'),
            ("state/pools/api/algorithm", b'{"algo": null}', '"algo" must be an algorithm\'s name'),
            ("state/pools/api/algorithm", b'{"algo": 3}', '"algo" must be an algorithm\'s name'),
            (
                "state/pools/api/algorithm",
                b'{"shadow": ""}',
                '"shadow" must be an algorithm\'s name',
            ),
            (
                "state/pools/api/algorithm",
                b'{"shadow": ["ewma"]}',
                '"shadow" must be an algorithm\'s name',
            ),
            ("state/pools//algorithm", b'{"algo": "p2c"}', "no pool name"),
        ]
        for key, value, why in table:
            layout = readLayout(
                {
                    key: value,
                    "pools/api/backends/good:1": b"",
                    "state/pools/api/backends/good:1": b'{"draining": true}',
                }
            )
            self.assertEqual(layout.problems, {key: f"{key}: {why}"}, (key, value))
            self.assertEqual(members(layout), {"api": [("good:1", 1)]}, (key, value))
            self.assertEqual(described(layout.states["api"]), nothing(drained=["good:1"]), key)
            self.assertEqual(layout.algorithms, {}, (key, value))

    def test_keys(self) -> None:
        """
        The admin API's keys, and a pool name that cannot be one.
        """
        self.assertEqual(stateKey("api", "h:1"), "state/pools/api/backends/h:1")
        self.assertEqual(stateKey("api", "[::1]:80"), "state/pools/api/backends/[::1]:80")
        self.assertEqual(algorithmKey("api"), "state/pools/api/algorithm")
        for pool in ["", "a/b"]:
            error = self.assertRaises(ValueError, algorithmKey, pool)
            self.assertEqual(str(error), f"{pool!r} is not a pool name (one path segment)")
            self.assertRaises(ValueError, stateKey, pool, "h:1")
        self.assertRaises(ValueError, stateKey, "api", "h")


class EncodingTests(SynchronousTestCase):
    def test_changedState(self) -> None:
        """
        A weight and/or drain change is merged into what the key holds;
        undraining drops the field, and nothing left deletes the key (a
        value that cannot be read is replaced).
        """
        table: list[tuple[bytes | None, int | None, bool | None, bytes | None]] = [
            (None, None, True, b'{"draining": true}'),
            (None, 3, None, b'{"weight": 3}'),
            (None, 3, True, b'{"draining": true, "weight": 3}'),
            (None, None, False, None),
            (None, None, None, None),
            (b'{"weight": 3}', None, True, b'{"draining": true, "weight": 3}'),
            (b'{"draining": true, "weight": 3}', None, False, b'{"weight": 3}'),
            (b'{"draining": true}', None, False, None),
            (b'{"draining": true}', 5, None, b'{"draining": true, "weight": 5}'),
            (
                b'{"added": true, "weight": 2}',
                None,
                True,
                b'{"added": true, "draining": true, "weight": 2}',
            ),
            (b'{"added": true, "weight": 2}', 6, False, b'{"added": true, "weight": 6}'),
            (b"garbage", None, True, b'{"draining": true}'),
            (b"[1]", 2, None, b'{"weight": 2}'),
            (b"", None, True, b'{"draining": true}'),
        ]
        for value, weight, draining, expected in table:
            self.assertEqual(
                changedState(value, weight, draining), expected, (value, weight, draining)
            )

    def test_removedAndAdded(self) -> None:
        """
        A removal or an addition replaces whatever was said of the address.
        """
        for value in [None, b'{"draining": true, "weight": 3}', b"garbage"]:
            self.assertEqual(removedState(value), b'{"removed": true}', value)
            self.assertEqual(addedState(value, 4), b'{"added": true, "weight": 4}', value)

    def test_algorithmState(self) -> None:
        """
        A switch keeps only what differs from the configuration's (so that
        a later configuration's holds again), beside the other field.
        """
        configured = {"algo": "roundrobin", "shadow-algo": None}
        table: list[tuple[bytes | None, dict[str, str | None], bytes | None]] = [
            (None, {"algo": "p2c"}, b'{"algo": "p2c"}'),
            (None, {"algo": "roundrobin"}, None),
            (None, {"shadow-algo": "ewma"}, b'{"shadow": "ewma"}'),
            (None, {"shadow-algo": None}, None),
            (b'{"algo": "p2c"}', {"algo": "roundrobin"}, None),
            (b'{"algo": "p2c"}', {"shadow-algo": "ewma"}, b'{"algo": "p2c", "shadow": "ewma"}'),
            (b'{"algo": "p2c", "shadow": "ewma"}', {"shadow-algo": None}, b'{"algo": "p2c"}'),
            (b'{"algo": "p2c", "other": 1}', {"algo": "hash"}, b'{"algo": "hash"}'),
            (b"garbage", {"algo": "p2c"}, b'{"algo": "p2c"}'),
        ]
        for value, changes, expected in table:
            self.assertEqual(algorithmState(value, changes, configured), expected, (value, changes))
        # Switching the shadow off when the configuration has one is kept.
        self.assertEqual(
            algorithmState(None, {"shadow-algo": None}, {"algo": "p2c", "shadow-algo": "ewma"}),
            b'{"shadow": null}',
        )

    def test_roundTrip(self) -> None:
        """
        What each encoding writes reads back as the change it was.
        """
        key = "state/pools/api/backends/h:1"
        table: list[tuple[bytes | None, dict[str, Any]]] = [
            (changedState(None, 3, True), nothing(weights={"h:1": 3}, drained=["h:1"])),
            (changedState(b'{"draining": true}', 2, False), nothing(weights={"h:1": 2})),
            (removedState(None), nothing(removed=["h:1"])),
            (addedState(None, 5), nothing(weights={"h:1": 5}, added={"h:1": 5})),
        ]
        for value, expected in table:
            assert value is not None
            layout = readLayout({key: value})
            self.assertEqual(layout.problems, {})
            self.assertEqual(described(layout.states["api"]), expected, value)
        switched = algorithmState(
            None, {"algo": "p2c", "shadow-algo": None}, {"shadow-algo": "ewma"}
        )
        assert switched is not None
        layout = readLayout({"state/pools/api/algorithm": switched})
        self.assertEqual(layout.algorithms, {"api": {"algo": "p2c", "shadow-algo": None}})
