"""
The client side over HTTP/1.x: txlb's own server channel, which reads each
request strictly into a Twisted request (L{TransparentRequest}, a
L{twisted.web.server.Request}) and hands it to the site's resource, with
limits and deadlines, every refusal seen, streaming request bodies,
pipelining, upgrades, the switch to HTTP/2 and a graceful stop.

Twisted's channel (L{twisted.web.http.HTTPChannel}) read a head line by line
through L{twisted.protocols.basic.LineReceiver}, built its request field by
field, refused a malformed request with a bare 400 and no word of why,
waited for a CRLF that a line ended by a bare LF never sends, and took most
of txlb's time per request.  L{ProxyChannel} reads a head at once when it
has come whole and is plain (printable ASCII, CRLF line ends, at most one
framing field), as nearly every head is; any other head, and one still
arriving, is read line by line as its lines come, with the rules of
L{txlb.refusals}, which say what is wrong.  Either way the request is the
same, as the tests check (a head cut anywhere is read as the head whole).

Bodies are read as Twisted read them (a C{Content-Length}, or chunks, strict,
decoded by L{txlb.http1.ChunkedDecoder} and followed by a trailer section
read as a head), but streamed to the resource as they come.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IPushProducer,
    ISSLTransport,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http import NO_BODY_CODES
from zope.interface import implementer

from txlb import headers, refusals, tunnel
from txlb.clientlimits import ClientLimits
from txlb.http1 import BadResponseError, ChunkedDecoder, isToken
from txlb.http2 import PREFACE, HTTP2Channel
from txlb.refusals import FIELD_BYTES, Refusal
from txlb.request import ClientRequest, Refused
from txlb.routing import RoutingResource
from txlb.upload import StreamingBody
from txlb.writes import WriteBatcher

#: The longest line of a head (request line, header or trailer line),
#: without its CRLF: Twisted's limit, kept.
MAX_LINE = 16384
#: The most bytes of lines in a head, without their CRLFs: Twisted's.
MAX_HEAD = 16384
#: The most header fields in a head, and trailer fields after a body:
#: Twisted's.
MAX_FIELDS = 500
#: Bytes of later requests held back while one is answered (pipelining),
#: past which reading from the client pauses: Twisted's.
HOLD_BACK = 16 * 1024
#: Seconds a connection timed out gets to close before it is cut.
ABORT_TIMEOUT = 15

#: The bytes a plain head is made of: printable ASCII, SP, HTAB, CR, LF.
_HEAD_BYTES = FIELD_BYTES + b"\r\n"

#: The states of a L{ProxyChannel}.
#: Waiting for a request head, or reading one.
HEAD = "head"
#: Reading a request's body.
BODY = "body"
#: Reading the trailer section after a chunked body.
TRAILERS = "trailers"
#: The request is in and being answered; later bytes are held back.
ANSWERING = "answering"
#: Nothing more is read: a refusal was answered, the last request's answer
#: given, or the connection lost.
CLOSED = "closed"
#: The connection speaks another protocol now (an upgrade, HTTP/2).
SPLICED = "spliced"


class TransparentRequest(ClientRequest):
    """
    An HTTP/1.x request that adds nothing to the response the backend sent.

    Twisted's L{server.Request} sets C{Server} and C{Date}, adds
    C{Content-Type: text/html}, and answers C{*} targets itself.  This one
    hands every request straight to the site's resource instead; the proxy
    adds C{Date} only when the backend sent none (RFC 9110 section 6.6.1).
    It also refuses a body over the size limit as soon as that shows.

    A request with a body is forwarded as soon as its head is in, and its
    body streams to the backend as it arrives (see L{StreamingBody}).
    """

    _finishWhenReceived = False

    def __init__(self, channel: ProxyChannel, method: bytes, target: bytes, version: bytes) -> None:
        super().__init__(channel)
        self.method, self.uri, self.clientproto = method, target, version

    @property
    def path(self) -> bytes:  # type: ignore[override]
        """
        The target without its query, as Twisted's request has it.
        """
        return self.uri.split(b"?", 1)[0]

    def begin(self, length: int | None, framed: bool) -> None:
        """
        The head is in: forward the request now if a body follows, so that
        the body streams as it comes.

        @param length: The body's length, or C{None} if it is chunked.
        @param framed: Whether the head has a C{Content-Length} (even of 0)
            or a C{Transfer-Encoding}.
        """
        if not framed or tunnel.wantsUpgrade(self):
            # Nothing to stream: forwarded once the channel says it is all
            # in.  (An upgrade has no body: see tunnel.wantsUpgrade.)
            return
        self.stream = StreamingBody(length, self.channel.transport)
        self.process()

    def handleContentChunk(self, data: bytes) -> None:
        self.bodyBytes += len(data)
        if self._tooLarge(self.bodyBytes):
            return
        if self.stream is not None:
            self.stream.received(data)

    def allReceived(self) -> None:
        """
        The whole request is in: forward it, or, if it was forwarded when its
        head came, end its body.
        """
        stream = self.stream
        if stream is None or not stream.started:
            self.process()
            return
        stream.finished()
        if self._finishWhenReceived:
            self._finishWhenReceived = False
            super().finish()

    def process(self) -> None:
        """
        Hand the request to the resource.
        """
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
        set on the request (C{Connection: close}), then C{fields} in their
        order, then C{Content-Length: length}, or C{Transfer-Encoding:
        chunked} when the body has no length and the client speaks
        HTTP/1.1.

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
                head += (name, b": ", value, b"\r\n")
        for name, value in fields:
            head += (name, b": ", value, b"\r\n")
        # NO_BODY_CODES imported, not read from http for every response:
        # twisted.web.http is a deprecation proxy, whose attributes cost a
        # microsecond each to read on CPython.
        bodyless = self.method == b"HEAD" or code in NO_BODY_CODES
        if length is not None:
            head.append(b"Content-Length: %d\r\n\r\n" % length)
        elif not bodyless and self.clientproto == b"HTTP/1.1":
            head.append(b"Transfer-Encoding: chunked\r\n\r\n")
            self.chunked = 1
        else:
            head.append(b"\r\n")
        if bodyless:
            # As Twisted: the body is not written.
            self.write = lambda data: None  # type: ignore[method-assign]
        self.channel.write(b"".join(head))

    def writeInterim(self, code: int, phrase: bytes, fields: headers.Fields) -> None:
        """
        Write an interim (1xx) response head, its fields in their order and
        spelling, as L{writeHead} writes them.
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
        if channel.refused:  # type: ignore[attr-defined]
            return True
        limit = self.bodyLimit
        if limit is None or size <= limit:
            return False
        channel.refuse(refusals.bodyTooLarge(limit))  # type: ignore[attr-defined]
        return True


@implementer(IPushProducer)
class ProxyChannel(Protocol):
    """
    One HTTP/1.x connection from a client: it reads each request (see the
    module's docstring), hands it to the site's resource, writes what the
    request writes, and closes when it must.

    Lines end at LF, so a line ended by a bare LF is refused as soon as it
    is in (see L{refusals.lineEnding}), rather than waited on until the
    head deadline.  Every refusal is answered, logged and counted in one
    place, L{refuse}.  It has a deadline for request heads, an idle timeout
    that a request being answered does not run down, and a way to close for
    a graceful stop.

    It is the transport's producer: when the client does not take what is
    written to it, the request's producer (the exchange) pauses, and so
    does reading from the client between requests.

    @ivar state: One of L{HEAD}, L{BODY}, L{TRAILERS}, L{ANSWERING},
        L{CLOSED}, L{SPLICED}.
    @ivar request: The request being read or answered, or C{None}.
    @ivar persistent: Whether another request may follow this one.
    @ivar refused: Whether a refusal was answered.
    """

    _log = Logger()
    state = HEAD
    request: TransparentRequest | None = None
    persistent = True
    refused = False
    # The head being read line by line: whether its request line is in (and
    # its method, target and version), the bytes of its lines so far
    # (counted without CRLF, as Twisted counted them), the empty lines
    # before it, its fields, and which framing fields they hold.
    _inHead = False
    _headSize = 0
    _emptyLines = 0
    _lengthSeen = False
    _chunkedSeen = False
    _pendingField: bytes | None = None
    # The body being read: the bytes still due, or the chunks' decoder.
    _remaining = 0
    _chunks: ChunkedDecoder | None = None
    # The trailer fields of a chunked body while its section is read.
    _trailers: list[tuple[bytes, bytes]] | None = None
    _producer: Any = None
    # Whether the transport asked to stop producing (the client is slow).
    _waitingForTransport = False
    _headDeadline: Any = None
    _headTimeout = 0.0
    _idleTimer: Any = None
    _abortCall: Any = None
    _host: Any = None
    #: The transport, while this channel is its producer.
    _network: Any = None
    # The client limits that counted this connection, and what they gave
    # for it.
    _clientLimits: ClientLimits | None = None
    _clientToken = 0

    def __init__(self, site: LoadBalancerSite) -> None:
        self.site = self.factory = site
        self._reactor = site.reactor
        #: The idle timeout: the client timeout.
        self.timeOut: float = site.timeOut  # type: ignore[assignment]
        #: Unparsed bytes: of a head or trailer section, or held back.
        self._buffer = b""
        self._fields: list[tuple[bytes, bytes]] = []
        self._requestParts = (b"", b"", b"")
        self._lastRead = 0.0

    # The connection.

    def connectionMade(self) -> None:
        transport: Any = self.transport
        if ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)
        self.peer = transport.getPeer()
        site = self.site
        limits = site.resource.clientLimits
        if limits is not None and limits.maxConnections:
            token = limits.opened(getattr(self.peer, "host", ""))
            if token == -1:
                # Over --max-client-conns: closed at once, as nginx's
                # limit_conn does; anything the client sends is ignored.
                self.refused = True
                self.state = CLOSED
                transport.abortConnection()
                return
            if token is not None:
                self._clientLimits, self._clientToken = limits, token
        site.channels.add(self)
        site.writes.adopt(transport)
        if IPushProducer.providedBy(transport):
            # (Twisted's TLS wrapper provides what its socket provides.)
            self._network = transport
            self._network.registerProducer(self, True)
        self._lastRead = self._reactor.seconds()
        self._idleTimer = self._reactor.callLater(self.timeOut, self._idleTimedOut)
        secure = ISSLTransport.providedBy(transport)
        if site.http2 if secure else site.h2c:
            # An instance attribute: the first bytes choose the protocol.
            self._firstBytes = b""
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
        if not http2:
            self.dataReceived(data)
            return
        self.site.channels.discard(self)
        channel = HTTP2Channel(self.site)
        self.spliceTo(channel)
        channel.dataReceived(data)

    def getPeer(self) -> Any:
        return self.peer

    def getHost(self) -> Any:
        """
        The address the client connected to, asked of the socket once per
        connection rather than once per request, as Twisted's channel does.
        """
        host = self._host
        if host is None:
            host = self._host = self.transport.getHost()  # type: ignore[union-attr]
        return host

    def isSecure(self) -> bool:
        return ISSLTransport.providedBy(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self.state == ANSWERING:
            self._holdBack(data)
            return
        if self.state == CLOSED:
            return
        self._lastRead = self._reactor.seconds()
        if self._buffer:
            data, self._buffer = self._buffer + data, b""
        self._read(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.state = CLOSED
        self.site.channels.discard(self)
        if self._clientLimits is not None:
            self._clientLimits.closed(self._clientToken)
            self._clientLimits = None
        self._cancelHeadDeadline()
        for call in (self._idleTimer, self._abortCall):
            if call is not None and call.active():
                call.cancel()
        self._idleTimer = self._abortCall = None
        if self.request is not None:
            self.request.connectionLost(reason)

    # Reading requests.

    def _read(self, data: bytes) -> None:
        """
        Read C{data} as far as the state allows: heads, bodies, trailer
        sections, one request after another.  What a request's answer must
        wait for is held back.
        """
        while data:
            state = self.state
            if state == HEAD:
                data = self._readHead(data)
            elif state == BODY:
                data = self._readBody(data)
            elif state == TRAILERS:
                data = self._readLines(data)
            elif state == ANSWERING:
                self._holdBack(data)
                return
            else:
                return
        if self.state == HEAD and self._headDeadline is None and (self._inHead or self._buffer):
            # A head is under way but not in: a client dribbling its head
            # (slowloris) keeps the idle timer going, but not this.  A head
            # that comes whole, as most do, needs no deadline, and gets none.
            self._headTimeout = self.site.resource.settings.clientTimeout
            self._headDeadline = self._reactor.callLater(self._headTimeout, self._headTooSlow)

    def _readHead(self, data: bytes) -> bytes:
        """
        Read a head from C{data}: at once if it is all there and plain, else
        line by line.

        @return: What follows the lines read.
        """
        if not self._inHead and not self._emptyLines and data[:1] not in (b"\r", b"\n"):
            end = data.find(b"\r\n\r\n")
            if 0 < end <= MAX_HEAD and self._plainHead(data[:end]):
                return data[end + 4 :]
        return self._readLines(data)

    def _plainHead(self, head: bytes) -> bool:
        """
        Take C{head} (without its last CRLF CRLF) in one go if it is plain:
        only printable ASCII, SP and HTAB on lines ended by CRLF, a valid
        request line, fields of token names, and at most one framing field,
        valid; the checks L{_readLines} makes, made on the whole head.

        @return: Whether it was taken; if not, it is read line by line.
        """
        if head.translate(None, _HEAD_BYTES):
            return False
        lines = head.count(b"\n")
        if lines >= MAX_FIELDS or head.count(b"\r") != lines or head.count(b"\r\n") != lines:
            return False
        split = head.split(b"\r\n")
        line = split[0]
        if refusals.requestLine(line) is not None:
            return False
        length = None
        chunked = False
        fields = []
        for line in split[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not isToken(name):
                return False
            value = value.strip(b" \t")
            fields.append((name, value))
            size = len(name)
            if size == 14 or size == 17:
                # Only the framing fields matter here.
                lower = name.lower()
                if lower == b"content-length":
                    if length is not None or chunked or refusals.contentLength(value):
                        return False
                    length = int(value)
                elif lower == b"transfer-encoding":
                    if length is not None or chunked or value.lower() != b"chunked":
                        return False
                    chunked = True
        method, target, version = split[0].split(b" ")
        self._headReceived(
            TransparentRequest(self, method, target, version),
            fields,
            None if chunked else length or 0,
            chunked or length is not None,
        )
        return True

    def _readLines(self, data: bytes) -> bytes:
        """
        Read C{data} line by line, in a head or a trailer section, as far as
        the lines go in that state.

        @return: What follows the lines read, once the state changed; the
            rest of a line not yet ended waits.
        """
        state = self.state
        position = 0
        while self.state == state:
            end = data.find(b"\n", position)
            if end < 0:
                rest = data[position:]
                if len(rest) > MAX_LINE + 1:
                    # A line (with its CR) over the limit, not yet ended.
                    self._lineTooLong()
                else:
                    self._buffer = rest
                return b""
            line = data[position:end]
            position = end + 1
            if len(line) > MAX_LINE + 1:
                self._lineTooLong()
                return b""
            if state == HEAD:
                self._headLine(line)
            else:
                self._trailerLine(line)
        return data[position:]

    def _lineTooLong(self) -> None:
        """
        Answer an over-long request line with 414 and an over-long header
        or trailer line with 431.
        """
        if self.state == TRAILERS:
            kind = "trailer"
        else:
            kind = "header" if self._inHead else "request"
        self.refuse(refusals.lineTooLong(kind, MAX_LINE))

    def _headLine(self, line: bytes) -> None:
        """
        Check a line of a head (ended by LF, which is gone): its ending, its
        bytes, the head's size, then the request line or the header field.
        The empty line ends the head.
        """
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
        if self._headSize > MAX_HEAD:
            refusal = refusals.headTooLarge(MAX_HEAD)
        elif not self._inHead:
            refusal = self._requestLine(line)
        elif line[:1] == b" " or line[:1] == b"\t":
            refusal = refusals.FOLDED
        else:
            # The field before is checked now, after this line, as Twisted
            # checked it: a folded line after it is refused as that.
            refusal = self._field()
            if refusal is None:
                if not line:
                    self._fieldsReceived()
                    return
                self._pendingField = line
        if refusal is not None:
            self.refuse(refusal)

    def _field(self) -> Refusal | None:
        """
        Check the header field read last, if any, and keep it.
        """
        line = self._pendingField
        if line is None:
            return None
        self._pendingField = None
        refusal = refusals.headerField(
            line, self._lengthSeen, self._chunkedSeen, len(self._fields), MAX_FIELDS
        )
        if refusal is not None:
            return refusal
        name, _, value = line.partition(b":")
        value = value.strip(b" \t")
        lower = name.lower()
        if lower == b"content-length":
            self._lengthSeen = True
        elif lower == b"transfer-encoding" and value.lower() == b"chunked":
            self._chunkedSeen = True
        self._fields.append((name, value))
        return None

    def _requestLine(self, line: bytes) -> Refusal | None:
        """
        Check what should be a request line, after at most one empty line.
        """
        if not line:
            self._emptyLines += 1
            return refusals.EMPTY_LINES if self._emptyLines > 1 else None
        refusal = refusals.requestLine(line)
        if refusal is None:
            self._inHead = True
            method, target, version = line.split(b" ")
            self._requestParts = (method, target, version)
        return refusal

    def _fieldsReceived(self) -> None:
        """
        The empty line ended a head read line by line: check its framing
        fields together, then take it.
        """
        method, target, version = self._requestParts
        request = TransparentRequest(self, method, target, version)
        fields, self._fields = self._fields, []
        received = request.requestHeaders
        for name, value in fields:
            received.addRawHeader(name, value)
        refusal = refusals.framing(received)
        if refusal is not None:
            self.request = request
            self.refuse(refusal)
            return
        lengths = received.getRawHeaders(b"content-length")
        length = int(lengths[0]) if lengths else 0
        chunked = self._chunkedSeen
        self._headReceived(
            request, None, None if chunked else length, chunked or lengths is not None
        )

    def _headReceived(
        self,
        request: TransparentRequest,
        fields: list[tuple[bytes, bytes]] | None,
        length: int | None,
        framed: bool,
    ) -> None:
        """
        A whole head is in, and valid: start the request, then read its
        body, if any.

        @param fields: The fields to give the request, if it has none yet.
        @param length: The body's length, or C{None} if it is chunked.
        @param framed: Whether the head has a framing field.
        """
        self._cancelHeadDeadline()
        self._inHead = self._lengthSeen = self._chunkedSeen = False
        self._headSize = self._emptyLines = 0
        self.request = request
        received = request.requestHeaders
        if fields is not None:
            for name, value in fields:
                received.addRawHeader(name, value)
        request.parseCookies()
        self.persistent = self.persistent and self._persists(request)
        # The limit of the pool the request is routed to.
        request.bodyLimit = self.site.resource.bodyLimit(request)
        if request._tooLarge(length or 0):
            return
        if length is None:
            self.state = BODY
            self._chunks = ChunkedDecoder(request.handleContentChunk, readTrailers=False)
        elif length:
            self.state = BODY
            self._remaining = length
        expect = received.getRawHeaders(b"expect")
        if expect and expect[0].lower() == b"100-continue" and request.clientproto == b"HTTP/1.1":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]
        request.begin(length, framed)
        if self.state == HEAD:
            self._allReceived()

    def _persists(self, request: TransparentRequest) -> bool:
        """
        Whether the connection may carry a request after C{request}: for
        HTTP/1.1 unless the client asked to close (any C{close} among the
        C{Connection} tokens, which Twisted missed in C{close, Foo}), when
        the answer says C{Connection: close} too.
        """
        if request.clientproto != b"HTTP/1.1":
            return False
        received = request.requestHeaders
        if received.hasHeader(b"connection") and b"close" in headers.tokens(
            received, b"connection"
        ):
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
            return False
        return True

    def _readBody(self, data: bytes) -> bytes:
        """
        Read the body's bytes in C{data}.

        @return: What follows the body.
        """
        request = self.request
        assert request is not None
        chunks = self._chunks
        if chunks is None:
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                request.handleContentChunk(data)
                return b""
            self._remaining = 0
            request.handleContentChunk(data[:remaining])
            if self.state == BODY:
                self._allReceived()
            return data[remaining:]
        try:
            rest = chunks.feed(data)
        except BadResponseError:
            # The decoder's words quote the client's bytes: the log says less.
            self.refuse(refusals.MALFORMED_CHUNKS)
            return b""
        if chunks.done and self.state == BODY:
            self._chunks = None
            self.state = TRAILERS
            self._trailers = []
            return rest
        return b""

    def _trailerLine(self, line: bytes) -> None:
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
            if self._headSize > MAX_HEAD:
                refusal = refusals.trailersTooLarge(MAX_HEAD)
            elif not line:
                self._trailersReceived(trailers)
                return
            elif len(trailers) >= MAX_FIELDS:
                refusal = refusals.tooManyTrailers(MAX_FIELDS)
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
        request = self.request
        assert request is not None
        if trailers and request.stream is not None:
            request.stream.trailers = headers.trailersToBackend(request.requestHeaders, trailers)
        self._allReceived()

    def _allReceived(self) -> None:
        """
        The whole request is in: answer it; later bytes wait until it is
        answered.
        """
        self.state = ANSWERING
        request = self.request
        assert request is not None
        request.allReceived()

    def _holdBack(self, data: bytes) -> None:
        """
        Keep C{data} of a later request until this one is answered, and stop
        reading once too much waits.
        """
        self._buffer += data
        if len(self._buffer) > HOLD_BACK:
            # Whether or not the client reads its answer: one that does not
            # and keeps sending would otherwise fill this buffer without end.
            # Reading resumes once the request is answered and the
            # transport takes more (requestDone, resumeProducing).
            self._pauseReading()

    def requestDone(self, request: TransparentRequest) -> None:
        """
        C{request} was answered: read the next one, or close.
        """
        if self.state != ANSWERING:
            # Refused: the connection is closing.
            return
        self.site.writes.send(self.transport)
        self.request = None
        if not self._waitingForTransport:
            self._resumeReading()
        if not self.persistent:
            self.state = CLOSED
            self.loseConnection()
            return
        self.state = HEAD
        # The idle time starts again with the answer given.
        self._lastRead = self._reactor.seconds()
        held, self._buffer = self._buffer, b""
        self._read(held)

    # Timeouts.

    def _idleTimedOut(self) -> None:
        """
        The idle timer is due: a client that sent something since is looked
        at again a timeout after that; one whose request is being answered
        is not idle, and is looked at again a timeout later; one in the
        middle of a request head gets the head deadline's 408, which may be
        due at the same moment; any other is closed, as Twisted does.
        """
        self._idleTimer = None
        now = self._reactor.seconds()
        left = self._lastRead + self.timeOut - now
        if self.state == ANSWERING:
            left = self.timeOut
        if left > 0:
            self._idleTimer = self._reactor.callLater(left, self._idleTimedOut)
            return
        if self._headDeadline is not None:
            self._headTooSlow()
            return
        self._log.info("Timing out client: {peer}", peer=str(self.peer))
        self._abortCall = self._reactor.callLater(ABORT_TIMEOUT, self._forceAbort)
        self.loseConnection()

    def _headTooSlow(self) -> None:
        """
        The head deadline has passed: refuse the request with 408.
        """
        self.refuse(refusals.tooSlow(self._headTimeout))

    def _forceAbort(self) -> None:
        """
        A timed-out connection is still open after L{ABORT_TIMEOUT}: cut it.
        """
        self._log.info("Forcibly timing out client: {peer}", peer=str(self.peer))
        self._abortCall = None
        self.transport.abortConnection()  # type: ignore[union-attr]

    def _stopIdleTimer(self) -> None:
        if self._idleTimer is not None and self._idleTimer.active():
            self._idleTimer.cancel()
        self._idleTimer = None

    def _cancelHeadDeadline(self) -> None:
        if self._headDeadline is not None:
            if self._headDeadline.active():
                self._headDeadline.cancel()
            self._headDeadline = None

    # Refusals.

    def refuse(self, refusal: Refusal) -> None:
        """
        Answer C{refusal}'s status with an empty body and close the
        connection, reading nothing more from it; log the request's line
        (from the proxy, if it is forwarding the request) with the
        refusal's error and flag, and count it by its reason.

        Every refusal on a client connection comes here: the head checks,
        the head deadline, the body limit, the chunked body's decoder and
        the trailer checks.

        A request refused while it is forwarded (its body over the limit or
        malformed, its trailers) ends its exchange at once, as one whose
        client left: the backend's answer, should it come before the
        connection is gone, goes nowhere.  If that answer has started going
        out already (the backend answered before the body was in), the
        refusal cannot follow it (see
        L{TransparentRequest.refusedWhileAnswered}).
        """
        if self.refused:
            return
        self.refused = True
        self.state = CLOSED
        resource = self.site.resource
        resource.metrics.countRefusal(refusal.reason)
        request = self.request
        if request is None and self._inHead:
            # For the log: the request line was read.
            request = TransparentRequest(self, *self._requestParts)
        forwarded = None
        if request is not None and request.stream is not None and request.stream.started:
            forwarded = request
            request.refused = Refused(refusal.code, refusal.error, refusal.flag)
        else:
            resource.refused(self, request, refusal.code, refusal.error, refusal.flag)
        self._cancelHeadDeadline()
        self._stopIdleTimer()
        if request is not None and request.startedWriting:
            request.refusedWhileAnswered()
        else:
            self.transport.write(  # type: ignore[union-attr]
                b"HTTP/1.1 %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % refusal.status
            )
        self.loseConnection()
        if forwarded is not None and forwarded.whenLost is not None:
            forwarded.whenLost(Failure(ConnectionDone("the request was refused")))

    # What a Twisted request asks of its channel.

    def write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def writeSequence(self, data: list[bytes]) -> None:
        self.transport.writeSequence(data)  # type: ignore[union-attr]

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, fields: http.Headers
    ) -> None:
        """
        The head of an answer of txlb's own (an error it answers).
        """
        head = [b"%s %s %s\r\n" % (version, code, reason)]
        for name, values in fields.getAllRawHeaders():
            for value in values:
                head.append(b"%s: %s\r\n" % (name, value))
        head.append(b"\r\n")
        self.transport.write(b"".join(head))  # type: ignore[union-attr]

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Relay the transport's flow control to C{producer} (an exchange),
        which must be a push producer.
        """
        if self._producer is not None:
            raise RuntimeError(f"Cannot register {producer}: {self._producer} is registered")
        if not streaming:
            raise TypeError("txlb's requests take push producers only")
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    def loseConnection(self) -> None:
        """
        Close once what was written has been sent.
        """
        self._unregister()
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _unregister(self) -> None:
        """
        Stop being the transport's producer.
        """
        if self._network is not None:
            self._network.unregisterProducer()
            self._network = None

    # IPushProducer, for the transport.

    def pauseProducing(self) -> None:
        """
        The client does not take what is written to it: pause the request's
        producer, and reading from the client unless a request is being
        answered (which holds back what follows it).
        """
        self._waitingForTransport = True
        if self._producer is not None:
            self._producer.pauseProducing()
        if self.state != ANSWERING:
            self._pauseReading()

    def resumeProducing(self) -> None:
        self._waitingForTransport = False
        if self._producer is not None:
            self._producer.resumeProducing()
        if self.state != ANSWERING:
            self._resumeReading()

    def stopProducing(self) -> None:
        if self._producer is not None:
            self._producer.stopProducing()

    def _pauseReading(self) -> None:
        if self._network is not None:
            self._network.pauseProducing()

    def _resumeReading(self) -> None:
        if self._network is not None:
            self._network.resumeProducing()

    # The graceful stop, upgrades and HTTP/2.

    def busy(self) -> bool:
        """
        Whether a request is in progress, even one whose head is arriving.
        """
        return self.state in (BODY, TRAILERS, ANSWERING) or (self.state == HEAD and self._inHead)

    def closeWhenIdle(self) -> None:
        """
        For a graceful stop: close now if no request is in progress, else
        after the response to the current one.
        """
        self.persistent = False
        if not self.busy() and self.state == HEAD:
            self.state = CLOSED
            self.loseConnection()

    def spliceTo(self, protocol: IProtocol) -> bytes:
        """
        Stop speaking HTTP on this connection, after a request whose answer
        does not go through Twisted's L{server.Request} (an upgrade), or
        before any (HTTP/2).

        From now on the connection's bytes go to C{protocol}, and its end to
        C{protocol.connectionLost} and then to the channel's own clean-up.
        The channel stops being the transport's producer, and its idle
        timeout stays off (a tunnel may be quiet for long).  The transport is
        left as it is, possibly paused.

        @return: The bytes the client sent after the request head, which the
            channel held back while the request was handled, in order.
        """
        transport: Any = self.transport
        self.state = SPLICED
        self._stopIdleTimer()
        self._unregister()
        channelLost = type(self).connectionLost

        def connectionLost(reason: Failure = connectionDone) -> None:
            protocol.connectionLost(reason)
            channelLost(self, reason)

        self.dataReceived = protocol.dataReceived  # type: ignore[method-assign]
        self.connectionLost = connectionLost  # type: ignore[method-assign]
        early, self._buffer = self._buffer, b""
        protocol.makeConnection(transport)
        return early


class LoadBalancerSite(server.Site):
    """
    The site txlb listens with: L{ProxyChannel}s, no access log of
    Twisted's (the proxy logs each request itself, with its backend and
    outcome), and the client connections it has open, to close them on a
    graceful stop.

    @ivar http2: Whether HTTP/2 is offered in ALPN over TLS.
    @ivar h2c: Whether a cleartext connection may speak HTTP/2 with prior
        knowledge.
    """

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
        self.channels: set[Any] = set()
        self.writes = WriteBatcher(self.reactor)

    def buildProtocol(self, addr: Any) -> ProxyChannel:  # type: ignore[override]
        return ProxyChannel(self)

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
        return any(channel.busy() for channel in self.channels)

    def abortConnections(self) -> None:
        """
        Cut every client connection still open.
        """
        for channel in list(self.channels):
            channel.transport.abortConnection()


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
