"""
Policies written outside txlb, as users write them, for the tests of
C{--algo package.module:Name} and C{--shadow-algo}: good ones, and each way
one can be broken.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.web.iweb import IRequest
from zope.interface import implementer

from txlb.backend import Backend
from txlb.interfaces import IAlgorithm, IResponseObserver


@implementer(IAlgorithm)
class First:
    """
    The first candidate, always (HAProxy's C{first}).
    """

    name = "first"

    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = tuple(backends)

    def pick(self, request: IRequest, candidates: Sequence[Backend]) -> Backend:
        return candidates[0]


@implementer(IAlgorithm)
class Last(First):
    """
    The last candidate, always.
    """

    name = "last"

    def pick(self, request: IRequest, candidates: Sequence[Backend]) -> Backend:
        return candidates[-1]


@implementer(IAlgorithm, IResponseObserver)
class Listening(First):
    """
    The first candidate, recording each response it hears of.
    """

    heard: list[tuple[str, float]] = []

    def answered(self, backend: Backend, seconds: float) -> None:
        self.heard.append((backend.address, seconds))


@implementer(IAlgorithm)
class Raising(First):
    """
    Raises on every pick after the C{works}th (class-wide count).
    """

    works = 0

    def pick(self, request: IRequest, candidates: Sequence[Backend]) -> Backend:
        if Raising.works > 0:
            Raising.works -= 1
            return candidates[0]
        raise ZeroDivisionError("policy bug")


@implementer(IAlgorithm)
class Stranger(First):
    """
    Picks a backend that is no candidate.
    """

    def pick(self, request: IRequest, candidates: Sequence[Backend]) -> Backend:
        return Backend("192.0.2.1", 1)


class Undeclared:
    """
    Has everything but does not say it provides IAlgorithm.
    """

    name = "undeclared"

    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = tuple(backends)

    def pick(self, request: IRequest, candidates: Sequence[Backend]) -> Backend:
        return candidates[0]


@implementer(IAlgorithm)
class NoPick:
    """
    Says it provides IAlgorithm, but has no C{pick}.
    """

    name = "nopick"

    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = tuple(backends)


@implementer(IAlgorithm)
class Unmakeable(First):
    """
    Raises when made.
    """

    def __init__(self, backends: Sequence[Backend]) -> None:
        raise RuntimeError("needs a config file")


NOT_A_CLASS = 42
