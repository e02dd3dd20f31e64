"""
A shadow policy (C{--shadow-algo}): a second algorithm asked for its
choice beside the live one on every pick, which never routes.  Its choices
are counted, so the status JSON and C{/metrics} show how often it agrees
with the live policy and how many requests each backend would have had.

A shadow cannot touch live traffic: whatever it raises is caught, counted
and logged at most once a minute (L{txlb.throttle.Throttle}), and the request goes on.
It sees the same candidates the live policy saw, after the live policy
picked, so a shadow reading C{active} counts sees the same ones.

Cost per pick: the shadow's own pick, and a few counter increments.  State:
the shadow algorithm's, and one count per backend it chose.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from txlb.backend import Backend
from txlb.interfaces import IAlgorithm, IResponseObserver
from txlb.throttle import Throttle


class Shadow:
    """
    A policy that chooses beside the live one and never routes.

    @ivar name: What C{--shadow-algo} named it.
    @ivar algorithm: The shadow L{IAlgorithm}, made again from the backends
        whenever the live one is.
    @ivar compared: Picks it made (the live policy's are the same number).
    @ivar agreed: Those where it chose the backend the live policy chose.
    @ivar picks: How many it sent to each backend, by address.
    @ivar errors: Picks and observations where it raised.
    """

    _log = Logger()

    def __init__(
        self,
        name: str,
        makeAlgorithm: Callable[[Sequence[Backend]], IAlgorithm],
        backends: Sequence[Backend],
        clock: Any,
    ) -> None:
        self.name = name
        self.makeAlgorithm = makeAlgorithm
        self.compared = 0
        self.agreed = 0
        self.picks: dict[str, int] = {}
        self.errors = 0
        self._throttle = Throttle(clock)
        self.algorithm: IAlgorithm | None = None
        self.answered: Callable[[Backend, float], None] | None = None
        self.rebuild(backends)

    def rebuild(self, backends: Sequence[Backend]) -> None:
        """
        Make the shadow algorithm again, for new backends or weights; the
        counts go on.  If it raises, the shadow sits out until the next
        rebuild.
        """
        try:
            self.algorithm = self.makeAlgorithm(backends)
        except Exception:
            self.algorithm = None
            self._failed("being made")
            return
        observes = IResponseObserver.providedBy(self.algorithm)
        self.answered = self._observe if observes else None

    def compare(self, request: IRequest, candidates: Sequence[Backend], live: Backend) -> None:
        """
        Ask the shadow for its choice among C{candidates}, the live policy
        having chosen C{live}, and count it.
        """
        algorithm = self.algorithm
        if algorithm is None:
            return
        try:
            choice = algorithm.pick(request, candidates)
            address = choice.address
            if choice not in candidates:
                raise ValueError(f"chose {address}, which is not a candidate")
        except Exception:
            self._failed("picking")
            return
        self.compared += 1
        if choice is live:
            self.agreed += 1
        self.picks[address] = self.picks.get(address, 0) + 1

    def _observe(self, backend: Backend, seconds: float) -> None:
        try:
            algorithm: Any = self.algorithm
            algorithm.answered(backend, seconds)
        except Exception:
            self._failed("observing a response")

    def agreement(self) -> float | None:
        """
        The share of picks where the shadow chose what the live policy
        chose, or C{None} before the first.
        """
        return self.agreed / self.compared if self.compared else None

    def status(self) -> dict[str, Any]:
        """
        The shadow as the status JSON shows it.
        """
        agreement = self.agreement()
        return {
            "algorithm": self.name,
            "compared": self.compared,
            "agreement": None if agreement is None else round(agreement, 4),
            "picks": dict(self.picks),
            "errors": self.errors,
        }

    def _failed(self, doing: str) -> None:
        """
        The shadow raised while C{doing}: count it, and log it unless it
        was logged less than a minute ago.
        """
        self.errors += 1
        throttle = self._throttle
        if throttle.allow():
            self._log.failure(
                "Shadow policy {policy} raised while {doing} (no effect on traffic;"
                " {held} more errors since the last entry; logged at most once a minute)",
                policy=self.name,
                doing=doing,
                held=throttle.release(),
            )
