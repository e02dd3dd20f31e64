"""
The client side: Twisted's HTTP server, made transparent, with limits and
deadlines, every refusal seen, streaming request bodies and a graceful stop.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IProtocol, ISSLTransport
from twisted.internet.protocol import connectionDone
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.web import http, server

from txlb import headers, refusals, tunnel
from txlb.clientlimits import ClientLimits
from txlb.http1 import BadResponseError, ChunkedDecoder
from txlb.http2 import PREFACE, HTTP2Channel
from txlb.refusals import FIELD_BYTES, Refusal
from txlb.request import ClientRequest, Refused
from txlb.routing import RoutingResource
from txlb.upload import StreamingBody
from txlb.writes import WriteBatcher


class TransparentRequest(ClientRequest):
    """
    An HTTP/1.x request that adds nothing to the response the backend sent.

    Twisted's L{server.Request} sets C{Server} and C{Date}, adds
    C{Content-Type: text/html}, and answers C{*} targets itself.  This one
    hands every request straight to the site's resource instead; the proxy
    adds C{Date} only when the backend sent none (RFC 9110 section 6.6.1).
    It also refuses a body over the size limit as soon as that shows.

    A request with a body is forwarded as soon as its head is in, and its
    body streams to the backend as it arrives (see L{StreamingBody}):
    Twisted would otherwise read the whole body before rendering.
    """

    _finishWhenReceived = False

    def gotLength(self, length: int | None) -> None:
        channel = self.channel
        # The channel keeps these until the body is in; the resource needs
        # them now.
        self.method = channel._command
        self.uri = channel._path
        self.clientproto = channel._version
        # The limit of the pool the request is routed to.
        self.bodyLimit = channel.site.resource.bodyLimit(self)  # type: ignore[attr-defined]
        if self._tooLarge(length or 0):
            return
        bodyless = length == 0 and not self.requestHeaders.hasHeader(b"content-length")
        if bodyless or tunnel.wantsUpgrade(self):
            # Nothing to stream: an upgrade has no body (see
            # tunnel.wantsUpgrade).
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

    def writeHead(
        self, code: int, phrase: bytes, fields: headers.Fields, length: int | None
    ) -> None:
        """
        Write the response head in one write: the status line, the fields
        Twisted set (C{Connection: close}), then C{fields} in their order,
        then C{Content-Length: length}, or C{Transfer-Encoding: chunked} when
        the body has no length and the client speaks HTTP/1.1.

        This is what L{http.Request.write} does on its first call, without
        copying every field into a L{Headers<twisted.web.http_headers.Headers>}
        and out again; it also keeps the order of fields of different names as
        the backend sent it, where L{Headers<twisted.web.http_headers.Headers>}
        groups them by name.  The body is then written as Twisted writes it.
        """
        self.code, self.code_message = code, phrase
        self.startedWriting = 1
        head = [b"%s %d %s\r\n" % (self.clientproto, code, phrase)]
        for name, values in self.responseHeaders.getAllRawHeaders():
            for value in values:
                head.append(b"%s: %s\r\n" % (name, value))
        for name, value in fields:
            head.append(b"%s: %s\r\n" % (name, value))
        bodyless = self.method == b"HEAD" or code in http.NO_BODY_CODES
        if length is not None:
            head.append(b"Content-Length: %d\r\n" % length)
        elif not bodyless and self.clientproto == b"HTTP/1.1":
            head.append(b"Transfer-Encoding: chunked\r\n")
            self.chunked = 1
        if bodyless:
            # As Twisted: the body is not written.
            self.write = lambda data: None  # type: ignore[method-assign]
        head.append(b"\r\n")
        self.channel.write(b"".join(head))

    def writeInterim(self, code: int, phrase: bytes, fields: headers.Fields) -> None:
        """
        Write an interim (1xx) response head, its fields in their order and
        spelling, as L{writeHead} writes them (Twisted's
        L{http.HTTPChannel.writeHeaders} would group and respell them).
        """
        head = [b"HTTP/1.1 %d %s\r\n" % (code, phrase)]
        head += [b"%s: %s\r\n" % field for field in fields]
        head.append(b"\r\n")
        self.channel.write(b"".join(head))

    def abort(self) -> None:
        self.channel.transport.abortConnection()  # type: ignore[union-attr]

    def refusedWhileAnswered(self) -> None:
        """
        The rest of the request was refused once its answer had started
        going out, which no refusal can follow: if the whole answer is in,
        held back only until the body ended (see L{finish}), end it now;
        otherwise cut it short, so that it does not pass for a whole one.
        The channel closes the connection after either.
        """
        if self._finishWhenReceived:
            self._finishWhenReceived = False
            super().finish()
        else:
            self.abort()

    def _tooLarge(self, size: int) -> bool:
        """
        Answer 413 and close if C{size} bytes of body are over the limit.
        """
        channel = self.channel
        if channel._refused:  # type: ignore[attr-defined]
            return True
        limit = self.bodyLimit
        if limit is None or size <= limit:
            return False
        channel.refuse(refusals.bodyTooLarge(limit))  # type: ignore[attr-defined]
        return True


class _ChunkedBody:
    """
    A chunked request body, decoded in the place of Twisted's decoder (the
    channel's private C{_transferDecoder}, the same in every version txlb
    supports; C{tests/test_refusals.py} pins it), which takes any line
    after the last chunk for a trailer field: the chunks by
    L{ChunkedDecoder}, as strictly as a response's, then the trailer section
    by the channel, line by line, as a head (L{ProxyChannel.lineReceived}).
    """

    def __init__(self, channel: ProxyChannel, request: TransparentRequest) -> None:
        self._channel = channel
        self._chunks = ChunkedDecoder(request.handleContentChunk, readTrailers=False)

    def dataReceived(self, data: bytes) -> None:
        try:
            rest = self._chunks.feed(data)
        except BadResponseError:
            # The decoder's words quote the client's bytes: the log says less.
            self._channel.refuse(refusals.MALFORMED_CHUNKS)
            return
        if self._chunks.done:
            self._channel._readTrailers(rest)


class ProxyChannel(http.HTTPChannel):
    """
    Twisted's HTTP channel with some of its answers fixed, a deadline for
    request heads, every refusal answered, logged and counted in one place,
    and a way to close it for a graceful stop.

    Lines end at LF here, not at CRLF as in Twisted, so that a line ended
    by a bare LF is refused at once (see L{refusals.lineEnding}) rather than
    waited on until the head deadline; Twisted gets each line without its
    CR, as before.  The trailer section of a chunked body is read the same
    way, by the channel itself (see L{_ChunkedBody}).
    """

    delimiter = b"\n"
    #: Twisted's limit of a line, which counted without CRLF, plus the CR.
    MAX_LENGTH = http.HTTPChannel.MAX_LENGTH + 1

    _headDeadline: Any = None
    _headTimeout = 0.0
    _refused = False
    # The request head being read: whether its request line is in, its size
    # so far (counted as Twisted counts it), the empty lines before it, and
    # the field Twisted is checking (to say why, should Twisted refuse it).
    _inHead = False
    _headSize = 0
    _emptyLines = 0
    _field: bytes | None = None
    # The trailer fields of a chunked body while its trailer section is
    # being read, else None.
    _trailers: list[tuple[bytes, bytes]] | None = None
    _host: Any = None
    # The idle timer, paused while a request is handled (see setTimeout).
    _pausingIdleTimer = False
    _idleTimerPaused = False
    # What came before the protocol could be chosen (see _chooseProtocol).
    _firstBytes = b""
    # The client limits that counted this connection, and what they gave
    # for it.
    _clientLimits: ClientLimits | None = None
    _clientToken = 0

    def connectionMade(self) -> None:
        super().connectionMade()
        site = self.site  # type: ignore[attr-defined]
        limits = site.resource.clientLimits
        if limits is not None and limits.maxConnections:
            token = limits.opened(getattr(self.transport.getPeer(), "host", ""))  # type: ignore[union-attr]
            if token == -1:
                # Over --max-client-conns: closed at once, as nginx's
                # limit_conn does; anything the client sends is ignored.
                self._refused = True
                self.transport.abortConnection()  # type: ignore[union-attr]
                return
            if token is not None:
                self._clientLimits, self._clientToken = limits, token
        site.channels.add(self)
        site.writes.adopt(self.transport)
        secure = ISSLTransport.providedBy(self.transport)
        if site.http2 if secure else site.h2c:
            # An instance attribute: the first bytes choose the protocol.
            self.dataReceived = self._chooseProtocol  # type: ignore[method-assign]

    def _chooseProtocol(self, data: bytes) -> None:
        """
        Speak HTTP/2 if the client asked for it: over TLS, by picking C{h2}
        in ALPN; in cleartext, by sending the HTTP/2 preface (h2c with prior
        knowledge, RFC 9113 section 3.3).  Otherwise, HTTP/1.1 as usual.
        """
        data = self._firstBytes + data
        if ISSLTransport.providedBy(self.transport):
            http2 = getattr(self.transport, "negotiatedProtocol", None) == b"h2"
        elif len(data) < len(PREFACE) and PREFACE.startswith(data):
            self._firstBytes = data
            return
        else:
            http2 = data.startswith(PREFACE)
        del self.dataReceived
        self._firstBytes = b""
        if not http2:
            self.dataReceived(data)
            return
        self.site.channels.discard(self)  # type: ignore[attr-defined]
        channel = HTTP2Channel(self.site)  # type: ignore[attr-defined]
        self.spliceTo(channel)
        channel.dataReceived(data)

    def getHost(self) -> Any:
        """
        The address the client connected to, asked of the socket once per
        connection rather than once per request, as L{http.Request} does.
        """
        host = self._host
        if host is None:
            host = self._host = self.transport.getHost()  # type: ignore[union-attr]
        return host

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.site.channels.discard(self)  # type: ignore[attr-defined]
        if self._clientLimits is not None:
            self._clientLimits.closed(self._clientToken)
            self._clientLimits = None
        self._cancelHeadDeadline()
        super().connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        """
        Start the deadline for a request head when its first bytes leave it
        incomplete: a client dribbling its headers (slowloris) keeps
        resetting the idle timeout, but not this.  A head that comes whole,
        as most do, needs no deadline, and gets none.
        """
        if self._refused:
            return
        super().dataReceived(data)
        # A head is under way once its request line is in, or while part of
        # a request line waits in LineReceiver's buffer (private to Twisted,
        # the same in every version txlb supports; the slowloris tests pin
        # it).
        if (
            self._headDeadline is None
            and not self._refused
            and (self._inHead or (not self.requests and self._buffer))
        ):
            self._headTimeout = self.site.resource.settings.clientTimeout  # type: ignore[attr-defined]
            self._headDeadline = self.callLater(self._headTimeout, self._headTooSlow)

    def _headTooSlow(self) -> None:
        """
        The head deadline has passed: refuse the request with 408.
        """
        self.refuse(refusals.tooSlow(self._headTimeout))

    def lineReceived(self, line: bytes) -> None:
        """
        Check a line of a request head before Twisted parses it: its ending,
        control characters in a header line, the head's size, and the
        request line.  Twisted checks the rest of each header field itself
        (see L{headerReceived}).  A line of a trailer section goes to
        L{_trailerLineReceived}.
        """
        if self._trailers is not None:
            self._trailerLineReceived(line)
            return
        if not self._inHead and not self.persistent:
            # Twisted drops what comes after a request that closes the
            # connection.
            super().lineReceived(line)
            return
        if line.translate(None, FIELD_BYTES) != b"\r":
            # Not printable ASCII, SP and HTAB ended by CRLF: a bare LF or
            # CR, a control character, or obs-text, which a value may hold.
            # One translate per line is the whole cost of these checks for
            # a valid line.  A request line's bytes are checked below.
            refusal = refusals.lineEnding(line)
            if refusal is None and self._inHead:
                refusal = refusals.fieldControl(line[:-1])
            if refusal is not None:
                self.refuse(refusal)
                return
        end = len(line) - 1
        line = line[:end]
        self._headSize += end
        if self._headSize > self.totalHeadersSize:
            refusal = refusals.headTooLarge(self.totalHeadersSize)
        elif not self._inHead:
            refusal = self._checkRequestLine(line)
        elif line[:1] == b" " or line[:1] == b"\t":
            refusal = refusals.FOLDED
        else:
            refusal = None
        if refusal is not None:
            self.refuse(refusal)
            return
        super().lineReceived(line)

    def _readTrailers(self, rest: bytes) -> None:
        """
        The last chunk of a chunked body is in: read its trailer section,
        which begins C{rest}, line by line.
        """
        if self._refused:
            return
        self._trailers = []
        # LineReceiver's documented way back from raw data to lines.
        self.setLineMode(rest)

    def _trailerLineReceived(self, line: bytes) -> None:
        """
        Check a line of a trailer section as a header line is checked (see
        L{refusals.trailerLine}), within the limits of a head: its size in
        all, and as many fields.  The empty line ends the body.
        """
        trailers = self._trailers
        assert trailers is not None
        refusal = refusals.lineEnding(line)
        if refusal is None:
            end = len(line) - 1
            line = line[:end]
            self._headSize += end
            if self._headSize > self.totalHeadersSize:
                refusal = refusals.trailersTooLarge(self.totalHeadersSize)
            elif not line:
                self._trailersReceived(trailers)
                return
            elif len(trailers) >= self.maxHeaders:
                refusal = refusals.tooManyTrailers(self.maxHeaders)
            else:
                refusal = refusals.trailerLine(line)
                if refusal is None:
                    name, _, value = line.partition(b":")
                    trailers.append((name, value.strip(b" \t")))
        if refusal is not None:
            self.refuse(refusal)

    def _trailersReceived(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """
        The trailer section is in, and with it the body: its fields go to
        the backend after the last chunk, but for the hop-by-hop ones.
        """
        self._trailers = None
        self._headSize = 0
        request = self.requests[-1]
        if trailers and request.stream is not None:
            request.stream.trailers = headers.trailersToBackend(request.requestHeaders, trailers)
        self.allContentReceived()

    def _checkRequestLine(self, line: bytes) -> Refusal | None:
        """
        Check what should be a request line, after at most one empty line.
        """
        if not line:
            self._emptyLines += 1
            return refusals.EMPTY_LINES if self._emptyLines > 1 else None
        refusal = refusals.requestLine(line)
        self._inHead = refusal is None
        return refusal

    def headerReceived(self, line: bytes) -> bool:
        """
        Let Twisted check and keep a header field, remembering which one it
        is checking: to say why, should Twisted refuse it.
        """
        self._field = line
        accepted = super().headerReceived(line)
        self._field = None
        return accepted

    def allHeadersReceived(self) -> None:
        """
        The head is in: stop its deadline, and refuse what Twisted lets
        through of a whole head (see L{refusals.framing}) before Twisted
        goes on with it.
        """
        self._cancelHeadDeadline()
        self._inHead, self._headSize, self._emptyLines = False, 0, 0
        request = self.requests[-1]
        refusal = refusals.framing(request.requestHeaders)
        if refusal is not None:
            self.refuse(refusal)
            return
        if self.length is None:
            # Chunked: decoded here, not by Twisted (see _ChunkedBody).
            self._transferDecoder = _ChunkedBody(self, request)
        super().allHeadersReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        if not self._refused:
            self._pausingIdleTimer = True
            try:
                super().allContentReceived()
            finally:
                self._pausingIdleTimer = False

    def setTimeout(self, period: float | None) -> float | None:
        """
        Twisted turns the idle timeout off while it handles a request and on
        again after it, which cancels one timer and schedules another for
        every request.  Pause it instead: the timer stays, and is moved on
        (which costs nothing) when the request is over.  Every other
        C{setTimeout(None)} (a refusal, a tunnel, a lost connection) stops
        it.
        """
        if period is None and self._pausingIdleTimer:
            self._idleTimerPaused = True
            return self.timeOut
        self._idleTimerPaused = False
        return super().setTimeout(period)

    def timeoutConnection(self) -> None:
        """
        A client silent for the idle timeout: one whose request is being
        handled is not idle, and is looked at again a timeout later; one in
        the middle of a request head gets the head deadline's 408, which may
        be due at the same moment; one between requests is closed, as
        Twisted does.
        """
        if self._idleTimerPaused:
            super().setTimeout(self.timeOut)
            return
        if self._headDeadline is not None:
            self._headTooSlow()
            return
        super().timeoutConnection()

    def _cancelHeadDeadline(self) -> None:
        if self._headDeadline is not None:
            if self._headDeadline.active():
                self._headDeadline.cancel()
            self._headDeadline = None

    def _respondToBadRequestAndDisconnect(self) -> None:
        """
        Refuse what Twisted's own parser refuses, through L{refuse}: Twisted
        would write a bare 400 and close, with no log line and no count.

        Twisted (26.4 and 26.10) calls this private method wherever it
        refuses a request; C{tests/test_refusals.py} pins that.  Twisted
        refuses only header fields here, since L{lineReceived} checks the
        rest of a head first, and a chunked body is not Twisted's to decode
        (see L{_ChunkedBody}).
        """
        if self._field is not None:
            previous = self.requests[-1].requestHeaders
            refusal = refusals.fieldRefused(self._field, previous, self.maxHeaders)
        else:
            refusal = refusals.MALFORMED_HEAD
        self.refuse(refusal)

    def refuse(self, refusal: Refusal) -> None:
        """
        Answer C{refusal}'s status with an empty body and close the
        connection, reading nothing more from it; log the request's line
        (from the proxy, if it is forwarding the request) with the
        refusal's error and flag, and count it by its reason.

        Every refusal on a client connection comes here, whoever made it:
        the head checks, the head deadline, the body limit, the chunked
        body's decoder and trailer checks, and Twisted's parser.

        A request refused while it is forwarded (its body over the limit or
        malformed, its trailers) ends its exchange at once, as one whose
        client left: the backend's answer, should it come before the
        connection is gone, goes nowhere.  If that answer has started going
        out already (the backend answered before the body was in), the
        refusal cannot follow it (see
        L{TransparentRequest.refusedWhileAnswered}).
        """
        if self._refused:
            return
        self._refused = True
        resource = self.site.resource  # type: ignore[attr-defined]
        resource.metrics.countRefusal(refusal.reason)
        request = self.requests[-1] if self.requests else None
        forwarded = None
        if request is not None and request.stream is not None and request.stream.started:
            forwarded = request
            request.refused = Refused(refusal.code, refusal.error, refusal.flag)
        else:
            resource.refused(self, request, refusal.code, refusal.error, refusal.flag)
        self._cancelHeadDeadline()
        self.setTimeout(None)
        assert self.transport is not None
        if request is not None and request.startedWriting:
            request.refusedWhileAnswered()
        else:
            self.transport.write(
                b"HTTP/1.1 %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % refusal.status
            )
        self.loseConnection()
        if forwarded is not None and forwarded.whenLost is not None:
            forwarded.whenLost(Failure(ConnectionDone("the request was refused")))

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        Answer an over-long request line with 414 and an over-long header
        or trailer line with 431; Twisted's channel drops the connection
        without a word.
        """
        if self._trailers is not None:
            kind = "trailer"
        else:
            kind = "header" if self._inHead else "request"
        self.refuse(refusals.lineTooLong(kind, http.HTTPChannel.MAX_LENGTH))

    def checkPersistence(self, request: server.Request, version: bytes) -> bool:
        """
        Close after this response if the client asked to; Twisted splits
        C{Connection} on spaces, so it misses C{close} in C{close, Foo}.
        """
        if version != b"HTTP/1.1":
            return False
        received = request.requestHeaders
        if received.hasHeader(b"connection") and b"close" in headers.tokens(
            received, b"connection"
        ):
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
    The site txlb listens with: transparent requests, no form parsing, no
    access log of Twisted's (the proxy logs each request itself, with its
    backend and outcome), and the client connections it has open, to close
    them on a graceful stop.

    @ivar http2: Whether HTTP/2 is offered in ALPN over TLS.
    @ivar h2c: Whether a cleartext connection may speak HTTP/2 with prior
        knowledge.
    """

    requestFactory = TransparentRequest
    protocol = ProxyChannel  # type: ignore[assignment]

    def __init__(
        self,
        resource: RoutingResource,
        reactor: Any = None,
        http2: bool = True,
        h2c: bool = False,
    ) -> None:
        self.http2, self.h2c = http2, h2c
        super().__init__(
            resource,
            parsePOSTFormSubmission=False,
            timeout=resource.settings.clientTimeout,
            reactor=reactor,
        )
        self.channels: set[ProxyChannel] = set()
        self.writes = WriteBatcher(self.reactor)

    def log(self, request: http.Request) -> None:
        pass

    def acceptableProtocols(self) -> list[bytes]:
        return [b"h2", b"http/1.1"] if self.http2 else [b"http/1.1"]

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


#: What a request sent in the clear to a TLS listener gets, in the clear:
#: nginx's words, which users search for.
_PLAIN_HTTP_ANSWER = b"The plain HTTP request was sent to HTTPS port\n"


class _FirstBytes:
    """
    The check of what a client sends first to a TLS listener, below TLS:
    C{dataReceived} of the connection's TLS protocol until it can tell.
    """

    def __init__(self, protocol: TLSMemoryBIOProtocol, site: LoadBalancerSite) -> None:
        self.protocol = protocol
        self.site = site
        self.received = b""
        # An instance attribute: the class's method takes over once the
        # first bytes are told apart.
        protocol.dataReceived = self.dataReceived  # type: ignore[method-assign]

    def dataReceived(self, data: bytes) -> None:
        data = self.received + data
        plain = refusals.plainHTTP(data)
        if plain is None:
            self.received = data
            return
        self.received = b""
        protocol = self.protocol
        if not plain:
            del protocol.dataReceived
            protocol.dataReceived(data)
            return
        # Nothing more is read.
        protocol.dataReceived = lambda data: None  # type: ignore[method-assign]
        refusal = refusals.PLAIN_HTTP_REFUSAL
        resource = self.site.resource
        resource.metrics.countRefusal(refusal.reason)
        # The TLS protocol's transport is the TCP connection, whose peer is
        # the client.
        resource.refused(protocol, None, refusal.code, refusal.error, refusal.flag)
        transport = protocol.transport
        assert transport is not None
        transport.write(
            b"HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (refusal.status, len(_PLAIN_HTTP_ANSWER), _PLAIN_HTTP_ANSWER)
        )
        transport.loseConnection()


class _TLSListenerFactory(TLSMemoryBIOFactory):
    """
    TLS toward clients, as Twisted's C{listenSSL} serves it, with the first
    bytes of each connection looked at below TLS: a client that speaks HTTP
    in the clear gets a 400 it can read, as nginx answers it, and the
    refusal is logged and counted.  TLS alone would close the connection
    without a word (its error comes after the connection is gone).
    """

    wrappedFactory: LoadBalancerSite

    def buildProtocol(self, addr: IAddress | None) -> TLSMemoryBIOProtocol:
        protocol = super().buildProtocol(addr)
        _FirstBytes(protocol, self.wrappedFactory)
        return protocol


class TLSListeningReactor:
    """
    A reactor for the endpoint of a TLS C{--listen} (C{ssl:}): its
    C{listenSSL} serves the site with TLS as Twisted's reactors do (a
    L{TLSMemoryBIOFactory} over TCP), but through L{_TLSListenerFactory};
    everything else is the reactor's.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenSSL(
        self,
        port: int,
        factory: LoadBalancerSite,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> Any:
        tlsFactory = _TLSListenerFactory(contextFactory, False, factory)
        return self._reactor.listenTCP(port, tlsFactory, backlog, interface)
