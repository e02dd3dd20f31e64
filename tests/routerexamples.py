"""
Routers written outside txlb, as users write them, for the tests of
C{router = "package.module:Name"}: good ones, and each way one can be
broken.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest
from zope.interface import implementer

from txlb.interfaces import IRouter


@implementer(IRouter)
class ByField:
    """
    The pool the request's C{X-Pool} field names, or L{None} without one.
    """

    def route(self, request: IRequest) -> str | None:
        values = request.requestHeaders.getRawHeaders(b"x-pool")
        return values[0].decode("ascii") if values else None


@implementer(IRouter)
class Counted:
    """
    Counts how many were made and how many requests it was asked about;
    lets every request through.
    """

    made = 0

    def __init__(self) -> None:
        Counted.made += 1
        self.asked = 0

    def route(self, request: IRequest) -> str | None:
        self.asked += 1
        return None


@implementer(IRouter)
class Raising:
    """
    A router with a bug.
    """

    def route(self, request: IRequest) -> str | None:
        raise RuntimeError("a bug\nin two lines")


@implementer(IRouter)
class NotAString:
    """
    A router that answers a pool's index instead of its name.
    """

    def route(self, request: IRequest) -> object:
        return 1


class Undeclared:
    """
    Has C{route}, but does not say it provides L{IRouter}.
    """

    def route(self, request: IRequest) -> str | None:
        return None


@implementer(IRouter)
class NoRouteMethod:
    """
    Says it provides L{IRouter}, and has no C{route}.
    """


@implementer(IRouter)
class WrongSignature:
    """
    A C{route} that takes no request.
    """

    def route(self):  # type: ignore[no-untyped-def]
        return None


@implementer(IRouter)
class NeedsArguments:
    """
    Cannot be made with no arguments.
    """

    def __init__(self, pools: list[str]) -> None:
        self.pools = pools

    def route(self, request: IRequest) -> str | None:
        return None


@implementer(IRouter)
class Unmakeable:
    """
    Fails when made.
    """

    def __init__(self) -> None:
        raise RuntimeError("needs a config file")

    def route(self, request: IRequest) -> str | None:
        return None


#: Not a class at all.
NOT_CALLABLE = "api"
