"""
What the admin API changed about backends, kept by address until the next
reload.

A change is about an address, not about the backend object in the pool at
the time: it holds while the backend is out of the pool (DNS no longer
gives it, or does not give it yet) and applies again when it is back, and
DNS does not undo it (a weight the admin API set beats the one DNS gives;
an address it removed stays out while DNS gives it).  So a worker of
C{--workers} that the supervisor restarted, and that replays the changes
before it has resolved DNS, ends up as the others are.  A reload applies
the configuration as it is, and forgets every change.
"""

from __future__ import annotations

from txlb.backend import Backend


class AdminState:
    """
    The admin API's changes to backends, by address (L{Backend.key}).

    @ivar weights: The weight it set for each address.
    @ivar drained: The addresses it drained.
    @ivar removed: The addresses it removed.
    @ivar added: The backends it added, by address.
    """

    def __init__(self) -> None:
        self.weights: dict[tuple[str, int], int] = {}
        self.drained: set[tuple[str, int]] = set()
        self.removed: set[tuple[str, int]] = set()
        self.added: dict[tuple[str, int], Backend] = {}

    def change(
        self, key: tuple[str, int], weight: int | None = None, draining: bool | None = None
    ) -> None:
        """
        The admin API set the weight and/or the drain of C{key}.
        """
        if weight is not None:
            self.weights[key] = weight
        if draining is not None:
            (self.drained.add if draining else self.drained.discard)(key)

    def remove(self, key: tuple[str, int]) -> None:
        """
        The admin API removed C{key}.
        """
        self.removed.add(key)
        self.added.pop(key, None)

    def add(self, backend: Backend) -> None:
        """
        The admin API added C{backend}: whatever it said of its address
        before is replaced.
        """
        self.removed.discard(backend.key)
        self.drained.discard(backend.key)
        self.weights[backend.key] = backend.weight
        self.added[backend.key] = backend

    def applied(self, backend: Backend) -> Backend | None:
        """
        A new backend like C{backend} (which the configuration, DNS or etcd
        gives), with the admin API's changes: C{None} if it removed its
        address.
        """
        if backend.key in self.removed:
            return None
        changed = Backend(
            backend.host,
            backend.port,
            self.weights.get(backend.key, backend.weight),
            backend.tls,
            backend.maxConn,
        )
        changed.draining = backend.key in self.drained
        return changed

    def clear(self) -> None:
        """
        Forget every change, as a reload does.
        """
        self.weights.clear()
        self.drained.clear()
        self.removed.clear()
        self.added.clear()
