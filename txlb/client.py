"""
The connections to backends: Agent, tuned and made transparent.

txlb sends through C{twisted.web.client.Agent}, the Agent treq itself
drives, not through treq's C{HTTPClient}: that one always asks for gzip and
decodes it, keeps one cookie jar for every client, follows redirects and
re-encodes the URL (see the README's design section).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web._newclient import HTTP11ClientProtocol
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
)
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from txlb.backend import Backend

#: Idle connections kept open to each backend.
MAX_IDLE_PER_BACKEND = 64
#: Seconds an idle backend connection is kept: below the keep-alive timeout
#: of common backends (gunicorn closes idle connections after 2 s, Node and
#: Apache after 5 s), so txlb never sends a request down a connection the
#: backend is closing.
BACKEND_IDLE_TIMEOUT = 1.5


def makeAgent(reactor: Any, connectTimeout: float) -> RawTargetAgent:
    """
    The Agent the forward half sends through: persistent connections, many
    idle ones per backend, closed before the backends close them.
    """
    pool = quietPool(reactor, persistent=True)
    pool.maxPersistentPerHost = MAX_IDLE_PER_BACKEND
    pool.cachedConnectionTimeout = BACKEND_IDLE_TIMEOUT  # type: ignore[assignment]
    return RawTargetAgent(reactor, pool, connectTimeout)


def quietPool(reactor: Any, persistent: bool) -> HTTPConnectionPool:
    """
    A connection pool whose connections use L{_ClientProtocol} and log
    nothing when they open and close.
    """
    pool = HTTPConnectionPool(reactor, persistent)
    pool._factory = _QuietClientFactory
    return pool


class _ClientProtocol(HTTP11ClientProtocol):
    """
    Agent's HTTP client protocol, telling a reset from a clean close.

    Agent ends a body delimited by the connection closing with
    L{http.PotentialDataLoss} whether the backend closed or reset the
    connection.  This notes a reset on the response, so that the proxy does
    not pass a truncated body off as whole.
    """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        parser = self._parser
        response = getattr(parser, "response", None)
        if response is not None and not reason.check(ConnectionDone):
            response.reset = reason
        super().connectionLost(reason)


class _QuietClientFactory(_HTTP11ClientFactory):
    """
    Agent's connection factory with L{_ClientProtocol}, and without the
    "Starting factory" log line it writes for every new backend connection.
    """

    noisy = False

    def buildProtocol(self, addr: Any) -> HTTP11ClientProtocol:
        return _ClientProtocol(self._quiescentCallback)


class RawTargetAgent(Agent):
    """
    An Agent that sends the client's request-target byte for byte.

    L{Agent.request} rebuilds the target from a parsed URL, which drops an
    empty C{?} and, on newer Pythons, turns C{//a} into C{////a}.  This class
    hands the raw target to Agent's request machinery instead.
    """

    def __init__(self, reactor: Any, pool: HTTPConnectionPool, connectTimeout: float) -> None:
        super().__init__(reactor, connectTimeout=connectTimeout, pool=pool)
        self.pool = pool
        self.connectTimeout = connectTimeout
        self._endpoints: dict[Backend, IStreamClientEndpoint] = {}

    def requestBackend(
        self,
        backend: Backend,
        method: bytes,
        target: bytes,
        headers: http.Headers,
        bodyProducer: IBodyProducer | None,
        connected: Callable[[], None] = lambda: None,
    ) -> Any:
        """
        Send C{method target} to C{backend}, calling C{connected} if a new
        connection is made for it (a pooled one may be reused instead).

        @return: A L{Deferred} firing with the L{IResponse}.
        """
        uri = backend.uri
        return self._requestWithEndpoint(
            (uri.scheme, uri.host, uri.port),
            _NotifyingEndpoint(self._endpoint(backend), connected),
            method,
            uri,
            headers,
            bodyProducer,
            target,
        )

    def forgetEndpoints(self) -> None:
        """
        Make new endpoints from now on: the backends or the connect timeout
        changed.
        """
        self._endpoints.clear()

    def _endpoint(self, backend: Backend) -> IStreamClientEndpoint:
        """
        The endpoint for new connections to C{backend}: a plain TCP one for
        an IP address, so no name lookup runs; a hostname is looked up on
        each new connection, so DNS changes are followed.
        """
        endpoint = self._endpoints.get(backend)
        if endpoint is None:
            reactor, host, port, timeout = (
                self._reactor,
                backend.host,
                backend.port,
                self.connectTimeout,
            )
            try:
                version = ipaddress.ip_address(host).version
            except ValueError:
                endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
            else:
                kind = TCP4ClientEndpoint if version == 4 else TCP6ClientEndpoint
                endpoint = kind(reactor, host, port, timeout=timeout)
            self._endpoints[backend] = endpoint
        return endpoint


@implementer(IStreamClientEndpoint)
class _NotifyingEndpoint:
    """
    An endpoint that says when it has made a connection, for the access
    log's connect time.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, connected: Callable[[], None]) -> None:
        self._endpoint = endpoint
        self._connected = connected

    def connect(self, factory: Any) -> Any:
        return self._endpoint.connect(factory).addCallback(self._made)

    def _made(self, protocol: Any) -> Any:
        self._connected()
        return protocol
