"""
The client side: Twisted's HTTP server, made transparent, with limits and
deadlines, streaming request bodies and a graceful stop.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http, server

from txlb import headers, tunnel
from txlb.proxy import LoadBalancerResource
from txlb.upload import StreamingBody


class TransparentRequest(server.Request):
    """
    A request that adds nothing to the response the backend sent.

    Twisted's L{server.Request} sets C{Server} and C{Date}, adds
    C{Content-Type: text/html}, and answers C{*} targets itself.  This one
    hands every request straight to the site's resource instead; the proxy
    adds C{Date} only when the backend sent none (RFC 9110 section 6.6.1).
    It also refuses a body over the size limit as soon as that shows.

    A request with a body is forwarded as soon as its head is in, and its
    body streams to the backend as it arrives (see L{StreamingBody}):
    Twisted would otherwise read the whole body before rendering.

    @ivar stream: The L{StreamingBody} of a request with a body, else
        L{None}.
    """

    defaultContentType = None
    stream: StreamingBody | None = None
    #: The status and reason txlb refused this request with, once forwarded.
    refused: tuple[int, str] | None = None
    bodyBytes = 0
    _finishWhenReceived = False

    def gotLength(self, length: int | None) -> None:
        if self._tooLarge(length or 0):
            return
        channel = self.channel
        # The channel keeps these until the body is in; the resource needs
        # them now.
        self.method = channel._command
        self.uri = channel._path
        self.clientproto = channel._version
        bodyless = length == 0 and not self.requestHeaders.hasHeader(b"content-length")
        if bodyless or tunnel.wantsUpgrade(self):
            # Nothing to stream; or an upgrade, whose tunnel sends the body
            # with the head.
            super().gotLength(length)
            return
        self.content = BytesIO()  # requestReceived reads it; the body bypasses it
        self.stream = StreamingBody(length, channel.transport)
        self.process()

    def handleContentChunk(self, data: bytes) -> None:
        self.bodyBytes += len(data)
        if self._tooLarge(self.bodyBytes):
            return
        if self.stream is not None:
            self.stream.received(data)
        else:
            super().handleContentChunk(data)

    def process(self) -> None:
        """
        Hand the request to the resource, when its head is in (with a body)
        or when it is all in (without).
        """
        if self.stream is not None and self.stream.started:
            # The whole body is in now.
            self.stream.finished()
            if self._finishWhenReceived:
                super().finish()
            return
        self.site = self.channel.site  # type: ignore[attr-defined]
        if self.stream is not None:
            self.stream.started = True
        try:
            self.render(self.site.resource)
        except BaseException:
            self.processingFailed(Failure())

    def finish(self) -> None:
        """
        Finish the response, or, if the request body is still coming, once
        it is in: the channel must read the whole request before it moves to
        the next one.
        """
        if self.stream is not None and not self.stream.complete:
            self._finishWhenReceived = True
            self.stream.discard()
            return
        super().finish()

    def _tooLarge(self, size: int) -> bool:
        """
        Answer 413 and close if C{size} bytes of body are over the limit.
        """
        channel = self.channel
        if channel._refused:  # type: ignore[attr-defined]
            return True
        limit = channel.site.resource.settings.maxBodySize  # type: ignore[attr-defined]
        if limit is None or size <= limit:
            return False
        channel.refuse(b"413 Content Too Large")  # type: ignore[attr-defined]
        return True


class ProxyChannel(http.HTTPChannel):
    """
    Twisted's HTTP channel with some of its answers fixed, a deadline for
    request heads, and a way to close it for a graceful stop.
    """

    _headDeadline: Any = None
    _refused = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channels.add(self)  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.site.channels.discard(self)  # type: ignore[attr-defined]
        self._cancelHeadDeadline()
        super().connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        """
        Start the deadline for a request head at its first byte: a client
        dribbling its headers (slowloris) keeps resetting the idle timeout,
        but not this.
        """
        if self._refused:
            return
        if self._headDeadline is None and not self.requests:
            self._headDeadline = self.callLater(  # type: ignore[call-arg]
                self.site.resource.settings.clientTimeout,  # type: ignore[attr-defined]
                self.refuse,
                b"408 Request Timeout",
            )
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._cancelHeadDeadline()
        super().allHeadersReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        if not self._refused:
            super().allContentReceived()

    def _cancelHeadDeadline(self) -> None:
        if self._headDeadline is not None:
            if self._headDeadline.active():
                self._headDeadline.cancel()
            self._headDeadline = None

    def refuse(self, status: bytes) -> None:
        """
        Answer C{status} with an empty body and close the connection,
        reading nothing more from it; the request gets its access-log line
        (from the proxy, if it already had the request).
        """
        if self._refused:
            return
        self._refused = True
        code, _, reason = status.partition(b" ")
        request = self.requests[-1] if self.requests else None
        if request is not None and request.stream is not None and request.stream.started:
            request.refused = int(code), reason.decode()
        else:
            self.site.resource.refused(self, request, int(code), reason.decode())  # type: ignore[attr-defined]
        self._cancelHeadDeadline()
        self.setTimeout(None)
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % status
        )
        self.loseConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        Answer an over-long request line with 414 and an over-long header
        line with 431; Twisted's channel drops the connection without a
        word.  (A request exists from its request line on.)
        """
        if self.requests:
            self.refuse(b"431 Request Header Fields Too Large")
        else:
            self.refuse(b"414 URI Too Long")

    def checkPersistence(self, request: server.Request, version: bytes) -> bool:
        """
        Close after this response if the client asked to; Twisted splits
        C{Connection} on spaces, so it misses C{close} in C{close, Foo}.
        """
        if version != b"HTTP/1.1":
            return False
        if b"close" in headers.tokens(request.requestHeaders, b"connection"):
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
            return False
        return True

    def closeWhenIdle(self) -> None:
        """
        For a graceful stop: close now if no request is in progress, else
        after the response to the current one.
        """
        self.persistent = False
        if not self.requests:
            self.loseConnection()

    def spliceTo(self, protocol: IProtocol) -> bytes:
        """
        Stop speaking HTTP on this connection, after a request whose answer
        does not go through Twisted's L{server.Request} (an upgrade).

        From now on the connection's bytes go to C{protocol}, and its end to
        C{protocol.connectionLost} and then to the channel's own clean-up.
        The channel stops being the transport's producer, and its idle
        timeout stays off (a tunnel may be quiet for long).  The transport is
        left as it is, possibly paused.

        @return: The bytes the client sent after the request head, which the
            channel held back while the request was handled, in order.
        """
        # Twisted's own websocket support swaps dataReceived and
        # connectionLost the same way (HTTPChannel._protocolUpgradeForWebsockets);
        # rawDataReceived too, for bytes still being parsed below render().
        # _dataBuffer is private to Twisted (26.10): tests/test_tunnel.py
        # pins that what it holds arrives.
        assert self.transport is not None
        self.setTimeout(None)
        self._savedTimeOut = None
        self.transport.unregisterProducer()  # type: ignore[attr-defined]
        channelLost = type(self).connectionLost

        def connectionLost(reason: Failure = connectionDone) -> None:
            protocol.connectionLost(reason)
            channelLost(self, reason)

        self.dataReceived = self.rawDataReceived = protocol.dataReceived  # type: ignore[method-assign]
        self.connectionLost = connectionLost  # type: ignore[method-assign]
        early = b"".join(self._dataBuffer)
        self._dataBuffer = []
        protocol.makeConnection(self.transport)
        return early


class LoadBalancerSite(server.Site):
    """
    The site txlb listens with: transparent requests, HTTP/1.1 only, no
    form parsing, no access log of Twisted's (the proxy logs each request
    itself, with its backend and outcome), and the client connections it
    has open, to close them on a graceful stop.
    """

    requestFactory = TransparentRequest
    protocol = ProxyChannel  # type: ignore[assignment]

    def __init__(self, resource: LoadBalancerResource, reactor: Any = None) -> None:
        super().__init__(
            resource,
            parsePOSTFormSubmission=False,
            timeout=resource.settings.clientTimeout,
            reactor=reactor,
        )
        self.channels: set[ProxyChannel] = set()

    def log(self, request: http.Request) -> None:
        pass

    def acceptableProtocols(self) -> list[bytes]:
        return [b"http/1.1"]

    def closeIdleConnections(self) -> None:
        """
        Close every client connection as soon as it has no request in
        progress.
        """
        for channel in list(self.channels):
            channel.closeWhenIdle()

    def busy(self) -> bool:
        """
        Whether a client connection has a request in progress, even one
        whose head is still arriving.
        """
        return any(channel.requests for channel in self.channels)

    def abortConnections(self) -> None:
        """
        Cut every client connection still open.
        """
        for channel in list(self.channels):
            channel.transport.abortConnection()  # type: ignore[union-attr]
