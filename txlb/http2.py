"""
HTTP/2 toward clients (RFC 9113): over TLS when ALPN picks C{h2}, and in
cleartext with prior knowledge (h2c) when C{--h2c} is given.

Each stream is one L{HTTP2Request}, handed to the same resource as an
HTTP/1.1 request and forwarded to the HTTP/1.1 backend the same way.  The
frames are hyper-h2's (C{h2.connection.H2Connection}); the connection is
txlb's own rather than Twisted's L{twisted.web._http2.H2Connection}, which
reads a request's whole body before rendering it, pauses a response only
when the client's flow-control window is shut (not when TCP is), and cannot
stop gracefully.  Here:

  - a request is forwarded as soon as its head is in, and its body streams
    to the backend as it arrives: the stream's window is reopened only as
    far as the backend takes the body, so a slow backend holds back its own
    client's stream and no other;
  - a response is sent as far as the stream's window, the connection's
    window and the socket allow; past L{STREAM_HIGH_WATER} bytes waiting on
    a stream, the exchange relaying it is paused, and its own queue pauses
    the backend at as many bytes: a slow client holds about twice that per
    stream, so with L{MAX_STREAMS} streams about what 25 slow HTTP/1.1
    connections hold (L{txlb.flow.HIGH_WATER} each);
  - a stream reset by the client cancels its request and no other; a
    client that resets streams faster than L{RESETS_PER_SECOND} (HTTP/2
    Rapid Reset, CVE-2023-44487) is sent GOAWAY;
  - a stream whose request body or response makes no progress for the
    client timeout is reset;
  - a graceful stop sends GOAWAY naming the last stream taken, lets those
    streams finish, and closes.

Streams are served in the order their data comes, with no priorities (RFC
9113 deprecated its priority scheme).

hyper-h2 applies every frame of a read before txlb handles the first
event, so a stream txlb is about to answer may be closed in hyper-h2
already (the client reset it, in frames whose events are yet to come):
every send for a stream goes through L{HTTP2Channel._onStream}.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error, ProtocolError
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http_headers import Headers, InvalidHeaderName
from twisted.web.iweb import UNKNOWN_LENGTH
from zope.interface import implementer

from txlb import headers, refusals
from txlb.flow import Valve
from txlb.outcome import CLIENT_PROTOCOL_ERROR
from txlb.refusals import FIELD_BYTES
from txlb.request import ClientRequest, Refused
from txlb.upload import StreamingBody

#: What a client speaking HTTP/2 with prior knowledge sends first.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

#: Streams a client may have open at once (nginx: 128, h2o: 100).
MAX_STREAMS = 100

#: The connection's receive window: every stream's initial window, so a
#: stream whose backend is slow to take its body cannot starve the others.
CONNECTION_WINDOW = MAX_STREAMS * 65535

#: Response bytes waiting on one stream above which its exchange pauses.
STREAM_HIGH_WATER = 64 * 1024

#: Control frames (settings, pings, heads) written while the socket is
#: full, above which the client is taken for one that does not read.
CONTROL_LIMIT = 256 * 1024

#: Streams a client may reset per second, on average, and at once.
RESETS_PER_SECOND = 100
RESET_BURST = 1000

#: Seconds a closing connection gets to take what was written to it.
CLOSE_TIMEOUT = 15

#: Fields that are not sent in HTTP/2 (RFC 9113 section 8.2.2).
CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


class HTTP2Request(ClientRequest):
    """
    One stream's request.  Its channel is its L{HTTP2Stream}.
    """

    clientproto = b"HTTP/2"
    highWater = STREAM_HIGH_WATER

    def writeHead(
        self, code: int, phrase: bytes, fields: headers.Fields, length: int | None
    ) -> None:
        """
        Send the response head: C{:status}, then C{fields} in their order
        with lower-case names (HTTP/2 has no reason phrase), then
        C{content-length} if the length is known.
        """
        self.code, self.code_message = code, phrase
        self.startedWriting = 1
        if self.method == b"HEAD" or code in http.NO_BODY_CODES:
            self.write = lambda data: None  # type: ignore[method-assign]
        self.channel.sendHead(code, fields, length)  # type: ignore[attr-defined]

    def writeInterim(self, code: int, phrase: bytes, fields: headers.Fields) -> None:
        """
        Send an interim (1xx) response head.
        """
        self.channel.sendHead(code, fields, None)  # type: ignore[attr-defined]

    def abort(self) -> None:
        self.channel.reset(ErrorCodes.INTERNAL_ERROR)  # type: ignore[attr-defined]


@implementer(IPushProducer)
class HTTP2Stream:
    """
    One stream of an L{HTTP2Channel}: what its request writes to, as an
    HTTP/1.1 request writes to its channel, and what reads its body.

    It is the L{StreamingBody}'s client: pausing it stops reopening the
    stream's receive window.
    """

    def __init__(self, connection: HTTP2Channel, streamID: int) -> None:
        self.connection = connection
        self.streamID = streamID
        # For Twisted's Request (its site's settings) and the log of a
        # refusal.
        self.site = connection.site
        self.transport = connection.transport
        self.request: HTTP2Request | None = None
        #: Response bytes waiting for the window or the socket.
        self.waiting: deque[bytes | memoryview] = deque()
        #: Pauses the exchange relaying the response while too much waits.
        self.valve = Valve(STREAM_HIGH_WATER)
        #: Whether the response is complete (sent once nothing waits), and
        #: whether its end was sent.
        self.ending = False
        self.ended = False
        #: Whether the client has sent the whole request.
        self.requestEnded = False
        self.uploadPaused = False
        self.unacknowledged = 0
        #: Whether the request has been told its stream is gone.
        self.lost = False
        #: The timer of a client owing data (see HTTP2Channel._stalled).
        self.timer: Any = None

    # What Twisted's http.Request asks of its channel.

    def getPeer(self) -> Any:
        return self.connection.peer

    def getHost(self) -> Any:
        return self.connection.host

    def isSecure(self) -> bool:
        return self.connection.secure

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, fields: Headers) -> None:
        """
        The head of a response of txlb's own (an error it answers).
        """
        flat = [(name, value) for name, values in fields.getAllRawHeaders() for value in values]
        self.sendHead(int(code), flat, None)

    def sendHead(self, code: int, fields: headers.Fields, length: int | None) -> None:
        head = [(b":status", b"%d" % code)]
        for name, value in fields:
            name = name.lower()
            if name not in CONNECTION_SPECIFIC:
                head.append((name, value))
        if length is not None:
            head.append((b"content-length", b"%d" % length))
        self.connection.sendHeaders(self, head)

    def write(self, data: bytes) -> None:
        if not data or self.ending:
            return
        self.waiting.append(data)
        self.valve.fill(len(data))
        self.connection.sendData(self)
        self.valve.pauseIfFull()

    def writeSequence(self, data: list[bytes]) -> None:
        for chunk in data:
            self.write(chunk)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.valve.producer = producer
        self.valve.paused = False

    def unregisterProducer(self) -> None:
        self.valve.producer = None

    def requestDone(self, request: HTTP2Request) -> None:
        """
        The response is complete: end the stream once all of it is sent.
        """
        self.ending = True
        self.connection.sendData(self)

    def reset(self, code: int) -> None:
        """
        End the stream at once with RST_STREAM C{code}.
        """
        self.connection.reset(self, code)

    # The request body, for the StreamingBody.

    def received(self, data: bytes, flowControlled: int) -> None:
        request = self.request
        assert request is not None
        if request.stream is None or self.ending:
            # The request was answered, or refused, before its body ended:
            # the rest goes.
            self.connection.acknowledge(self, flowControlled)
            return
        if self.uploadPaused:
            self.unacknowledged += flowControlled
        else:
            self.connection.acknowledge(self, flowControlled)
        request.bodyBytes += len(data)
        limit = request.bodyLimit
        if limit is not None and request.bodyBytes > limit:
            self.connection.refuse(self, refusals.bodyTooLarge(limit))
            return
        request.stream.received(data)

    def pauseProducing(self) -> None:
        self.uploadPaused = True

    def resumeProducing(self) -> None:
        self.uploadPaused = False
        if self.unacknowledged:
            acknowledged, self.unacknowledged = self.unacknowledged, 0
            self.connection.acknowledge(self, acknowledged)
            self.connection.flush()

    def stopProducing(self) -> None:
        self.reset(ErrorCodes.CANCEL)


class HTTP2Channel(Protocol):
    """
    An HTTP/2 connection from a client: its streams, their flow control,
    its timeouts and its graceful stop.

    @ivar streams: The streams in progress, by ID.
    @ivar secure: Whether the connection is over TLS.
    """

    _log = Logger()
    _idleTimer: Any = None
    _closeTimer: Any = None
    #: Whether GOAWAY was sent: no new stream is taken.
    closing = False
    #: Whether hyper-h2 has ended the connection (a GOAWAY either way): it
    #: sends nothing more.
    terminated = False
    #: Whether the socket's buffer is full.
    socketFull = False
    _controlWhileFull = 0

    def __init__(self, site: Any) -> None:
        self.site = site
        self.resource = site.resource
        self._reactor = site.reactor
        self.conn = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.streams: dict[int, HTTP2Stream] = {}
        #: Streams with data waiting for the socket, in the order to send it.
        self._blocked: dict[HTTP2Stream, None] = {}
        self._resetTokens = float(RESET_BURST)
        self._resetCounted = self._reactor.seconds()
        self._handlers: dict[type, Callable[[Any], None]] = {
            RequestReceived: self._requestReceived,
            DataReceived: self._dataReceived,
            TrailersReceived: self._trailersReceived,
            StreamEnded: self._streamEnded,
            StreamReset: self._streamReset,
            WindowUpdated: self._windowUpdated,
            RemoteSettingsChanged: self._settingsChanged,
            ConnectionTerminated: self._terminated,
        }

    def busy(self) -> bool:
        """
        Whether a request is in progress (what the site asks).
        """
        return bool(self.streams)

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None
        self.peer, self.host = transport.getPeer(), transport.getHost()
        self.secure = ISSLTransport.providedBy(transport)
        self.site.channels.add(self)
        transport.registerProducer(self, True)  # type: ignore[attr-defined]
        conn = self.conn
        conn.initiate_connection()
        conn.update_settings(
            {
                SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                SettingCodes.MAX_HEADER_LIST_SIZE: http.HTTPChannel.totalHeadersSize,
            }
        )
        conn.increment_flow_control_window(CONNECTION_WINDOW - conn.inbound_flow_control_window)
        self.flush()
        self._idle()

    def dataReceived(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except H2Error as e:
            # hyper-h2 has made a GOAWAY saying why.
            self._refuseConnection(describeError(e))
            return
        handlers = self._handlers
        for event in events:
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event)
                if self.terminated:
                    return
        self.flush()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.site.channels.discard(self)
        self._stopIdleTimer()
        if self._closeTimer is not None and self._closeTimer.active():
            self._closeTimer.cancel()
        self._loseAll(reason)

    def _loseAll(self, reason: Failure) -> None:
        streams, self.streams = self.streams, {}
        self._blocked.clear()
        for stream in streams.values():
            self._lose(stream, reason)

    # Events from the client.

    def _requestReceived(self, event: RequestReceived) -> None:
        streamID = event.stream_id
        if self.closing:
            # After GOAWAY: the client may send it again on a new connection.
            self._onStream(self.conn.reset_stream, streamID, ErrorCodes.REFUSED_STREAM)
            return
        self._stopIdleTimer()
        stream = self.streams[streamID] = HTTP2Stream(self, streamID)
        request = stream.request = HTTP2Request(stream)
        stream.requestEnded = event.stream_ended is not None
        authority = None
        path = b""
        fields = []
        for name, value in event.headers:
            if name[:1] != b":":
                fields.append((name, value))
            elif name == b":method":
                request.method = value
            elif name == b":path":
                request.uri = path = value
            elif name == b":authority":
                authority = value
        received = request.requestHeaders
        refusal = _toHTTP11(request.method, path, authority, fields, received)
        length = None if stream.requestEnded or refusal else _contentLength(received)
        if refusal is None and not stream.requestEnded:
            # The limit of the pool the request is routed to.
            limit = request.bodyLimit = self.resource.bodyLimit(request)
            if limit is not None and (length or 0) > limit:
                refusal = refusals.bodyTooLarge(limit)
        if refusal is not None:
            self._answerRefusal(stream, refusal)
            return
        if not stream.requestEnded:
            if b"100-continue" in headers.tokens(received, b"expect"):
                # As Twisted's HTTP/1.1 server does.
                self.sendHeaders(stream, [(b":status", b"100")])
            request.stream = StreamingBody(length, stream)
            request.stream.started = True
        stream.timer = self._reactor.callLater(
            self.resource.settings.clientTimeout, self._stalled, stream
        )
        request.site = self.site
        request.prepath, request.postpath = [], []
        try:
            request.render(self.resource)
        except BaseException:
            request.processingFailed(Failure())

    def _dataReceived(self, event: DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:
            # A stream answered and ended already: its bytes go.
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            return
        if stream.timer is not None:
            stream.timer.reset(self.resource.settings.clientTimeout)
        stream.received(event.data, event.flow_controlled_length)

    def _trailersReceived(self, event: TrailersReceived) -> None:
        """
        Trailer fields after a request body: checked as an HTTP/1.1
        request's are (L{refusals.trailerLine}; hyper-h2 has checked what
        HTTP/2 itself forbids), and sent to the backend after the body when
        it goes chunked, for the request stated no length.  A body sent
        with a C{Content-Length} cannot carry them: they are dropped, as
        RFC 9110 section 6.5 allows.
        """
        stream = self.streams.get(event.stream_id)
        if stream is None or stream.ending:
            return
        request = stream.request
        if request is None or request.stream is None:
            return
        trailers = []
        for name, value in event.headers:
            refusal = refusals.trailerLine(name + b": " + value)
            if refusal is not None:
                self.refuse(stream, refusal)
                return
            trailers.append((name, value))
        if request.stream.length is UNKNOWN_LENGTH:
            request.stream.trailers = headers.trailersToBackend(request.requestHeaders, trailers)

    def _streamEnded(self, event: StreamEnded) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return
        stream.requestEnded = True
        request = stream.request
        if request is not None and request.stream is not None and not stream.ending:
            request.stream.finished()
        self._ended(stream)

    def _streamReset(self, event: StreamReset) -> None:
        stream = self.streams.pop(event.stream_id, None)
        if stream is not None:
            self._blocked.pop(stream, None)
            self._lose(stream, Failure(ConnectionLost("stream reset by the client")))
            self._idle()
        now = self._reactor.seconds()
        tokens = self._resetTokens + (now - self._resetCounted) * RESETS_PER_SECOND
        self._resetTokens, self._resetCounted = min(tokens, RESET_BURST) - 1, now
        if self._resetTokens < 0 and not self.terminated:
            self.conn.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
            self._refuseConnection(f"more than {RESETS_PER_SECOND} stream resets a second")

    def _windowUpdated(self, event: WindowUpdated) -> None:
        if event.stream_id:
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                self.sendData(stream)
        else:
            self._sendAll()

    def _settingsChanged(self, event: RemoteSettingsChanged) -> None:
        if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
            self._sendAll()

    def _terminated(self, event: ConnectionTerminated) -> None:
        """
        The client sent GOAWAY: hyper-h2 sends nothing more after it, so
        the connection ends, and with it the streams in progress.
        """
        self.terminated = True
        self._loseAll(Failure(ConnectionLost("the client sent GOAWAY")))
        self._close()

    # Writing.

    def sendHeaders(
        self, stream: HTTP2Stream, head: list[tuple[bytes, bytes]], end: bool = False
    ) -> None:
        if stream.streamID in self.streams:
            self._onStream(self.conn.send_headers, stream.streamID, head, end)
            self.flush()

    def _onStream(self, send: Callable[..., None], streamID: int, *args: Any) -> None:
        """
        Call hyper-h2's C{send} for a stream, unless hyper-h2 has it or the
        connection closed already (see the module's docstring).
        """
        if self.terminated:
            return
        try:
            send(streamID, *args)
        except ProtocolError:
            pass

    def sendData(self, stream: HTTP2Stream) -> int:
        """
        Send what waits on C{stream} as far as its window, the connection's
        window and the socket allow, ending the stream with its last frame
        once the response is complete.

        @return: How many bytes of data were sent.
        """
        streamID = stream.streamID
        if streamID not in self.streams:
            stream.waiting.clear()
            stream.valve.waiting = 0
            return 0
        if self.socketFull:
            if stream.waiting or stream.ending:
                self._blocked[stream] = None
            return 0
        conn = self.conn
        waiting = stream.waiting
        sent = 0
        while waiting:
            window = conn.local_flow_control_window(streamID)
            if window <= 0:
                break
            size = min(window, conn.max_outbound_frame_size)
            data = waiting.popleft()
            if len(data) > size:
                view = memoryview(data)
                waiting.appendleft(view[size:])
                data = view[:size]
            sent += len(data)
            last = stream.ending and not waiting
            self._onStream(conn.send_data, streamID, data, last)
            stream.ended = last
        if stream.ending and not waiting:
            if not stream.ended:
                stream.ended = True
                self._onStream(conn.end_stream, streamID)
            self._ended(stream)
        self.flush()
        if sent:
            if stream.timer is not None:
                stream.timer.reset(self.resource.settings.clientTimeout)
            # Let the exchange go on if little waits now.
            stream.valve.drain(sent)
        return sent

    def _sendAll(self) -> None:
        """
        Send what waits on every stream, in turn: a stream that sent data
        goes to the end of the line, so one stream cannot take all of the
        connection's window every time it reopens.  (The streams that sent
        nothing keep their place: were they moved too, those still waiting
        would stay behind the one served.)
        """
        streams = self.streams
        for stream in list(streams.values()):
            if (stream.waiting or stream.ending) and self.sendData(stream):
                if stream.streamID in streams:
                    streams[stream.streamID] = streams.pop(stream.streamID)

    def flush(self) -> None:
        """
        Write the frames hyper-h2 has made.
        """
        data = self.conn.data_to_send()
        if not data:
            return
        if self.socketFull:
            self._controlWhileFull += len(data)
            if self._controlWhileFull > CONTROL_LIMIT:
                self._log.warn(
                    "HTTP/2 client {client} does not read: {size} bytes of control frames"
                    " wait; closing its connection",
                    client=self.peer,
                    size=self._controlWhileFull,
                )
                assert self.transport is not None
                self.transport.abortConnection()  # type: ignore[attr-defined]
                return
        assert self.transport is not None
        self.transport.write(data)

    def acknowledge(self, stream: HTTP2Stream, size: int) -> None:
        """
        Reopen C{stream}'s window by C{size} bytes it has passed on, and the
        connection's, even if the stream is gone.
        """
        if not self.terminated:
            self.conn.acknowledge_received_data(size, stream.streamID)

    def reset(self, stream: HTTP2Stream, code: int) -> None:
        """
        End C{stream} at once with RST_STREAM C{code}, dropping what waits.
        Its request learns of it on the next turn, as it would of a lost
        TCP connection.
        """
        if self.streams.pop(stream.streamID, None) is None:
            return
        self._blocked.pop(stream, None)
        self._onStream(self.conn.reset_stream, stream.streamID, code)
        self.flush()
        lost = Failure(ConnectionLost("stream reset by txlb"))
        self._reactor.callLater(0, self._lose, stream, lost)
        self._idle()

    def _ended(self, stream: HTTP2Stream) -> None:
        """
        Forget C{stream} once both its request and its response are over.
        A response complete before its request body ends asks the client to
        stop sending (RFC 9113 section 8.1).
        """
        if not stream.ended:
            return
        streamID = stream.streamID
        if not stream.requestEnded:
            self._onStream(self.conn.reset_stream, streamID, ErrorCodes.NO_ERROR)
            request = stream.request
            if request is not None and request.stream is not None:
                request.stream.discard()
        if self.streams.pop(streamID, None) is not None:
            self._stopTimer(stream)
            self._idle()

    def _lose(self, stream: HTTP2Stream, reason: Failure) -> None:
        """
        Tell the request of C{stream} that it is gone, if it is still being
        answered.
        """
        self._stopTimer(stream)
        if stream.unacknowledged:
            # Held back from a paused upload: the connection's share of the
            # window must reopen.
            self.acknowledge(stream, stream.unacknowledged)
            stream.unacknowledged = 0
            self.flush()
        request = stream.request
        if request is None or request.finished or stream.lost:
            return
        stream.lost = True
        if request.stream is not None:
            request.stream.discard()
        request.connectionLost(reason)

    # Refusals.

    def _answerRefusal(self, stream: HTTP2Stream, refusal: refusals.Refusal) -> None:
        """
        Answer C{refusal} on C{stream} before the request is forwarded: an
        empty response, logged and counted as an HTTP/1.1 refusal is.
        """
        self.resource.metrics.countRefusal(refusal.reason)
        self.resource.refused(stream, stream.request, refusal.code, refusal.error, refusal.flag)
        stream.ending = True
        self.sendHeaders(stream, _emptyHead(refusal.code))
        self.sendData(stream)

    def refuse(self, stream: HTTP2Stream, refusal: refusals.Refusal) -> None:
        """
        Refuse the rest of a request being forwarded (its body is over the
        limit): answer the refusal's status if no response has started,
        then reset the stream; the exchange logs it when it sees the stream
        gone.
        """
        request = stream.request
        assert request is not None
        self.resource.metrics.countRefusal(refusal.reason)
        request.refused = Refused(refusal.code, refusal.error, refusal.flag)
        if not request.startedWriting:
            self.sendHeaders(stream, _emptyHead(refusal.code), end=True)
        self.reset(stream, ErrorCodes.CANCEL if request.startedWriting else ErrorCodes.NO_ERROR)

    def _refuseConnection(self, why: str) -> None:
        """
        The client broke HTTP/2: send the GOAWAY hyper-h2 made, log and
        count it, and close; the streams in progress are lost.
        """
        self.resource.metrics.countRefusal(refusals.HTTP2)
        why = f"HTTP/2 protocol error: {why}"
        self.resource.refused(self, None, 400, why, CLIENT_PROTOCOL_ERROR)
        self.flush()
        self.terminated = True
        self._loseAll(Failure(ConnectionLost(why)))
        self._close()

    # Timeouts and the graceful stop.

    def _stalled(self, stream: HTTP2Stream) -> None:
        """
        The client timeout passed without progress on C{stream}: reset it
        if its request body is not all in (whether the client stopped
        sending or the backend stopped taking it, as an HTTP/1.1 client
        connection silent that long is closed), or if its response waits on
        the client's window; wait on if only the backend's answer is due.
        """
        stream.timer = None
        if stream.requestEnded and not stream.waiting:
            stream.timer = self._reactor.callLater(
                self.resource.settings.clientTimeout, self._stalled, stream
            )
            return
        self._log.info(
            "No progress on stream {stream} of HTTP/2 client {client} for {seconds} s;"
            " resetting it",
            client=self.peer,
            stream=stream.streamID,
            seconds=self.resource.settings.clientTimeout,
        )
        self.reset(stream, ErrorCodes.CANCEL)

    def _stopTimer(self, stream: HTTP2Stream) -> None:
        if stream.timer is not None:
            if stream.timer.active():
                stream.timer.cancel()
            stream.timer = None

    def _idle(self) -> None:
        """
        With no stream in progress: close after the client timeout, or at
        once if stopping.
        """
        if self.streams:
            return
        if self.closing:
            self._close()
            return
        if self._idleTimer is None:
            timeout = self.resource.settings.clientTimeout
            self._idleTimer = self._reactor.callLater(timeout, self.closeWhenIdle)

    def _stopIdleTimer(self) -> None:
        if self._idleTimer is not None:
            if self._idleTimer.active():
                self._idleTimer.cancel()
            self._idleTimer = None

    def _close(self) -> None:
        """
        Close once what was written is sent, or after L{CLOSE_TIMEOUT}
        seconds if the client does not take it.
        """
        if self._closeTimer is not None:
            return
        self.flush()
        assert self.transport is not None
        # TLS sends its close alert only once no producer is registered.
        self.transport.unregisterProducer()  # type: ignore[attr-defined]
        self.transport.loseConnection()
        self._closeTimer = self._reactor.callLater(
            CLOSE_TIMEOUT,
            self.transport.abortConnection,  # type: ignore[attr-defined]
        )

    def closeWhenIdle(self) -> None:
        """
        Send GOAWAY naming the last stream taken, finish the streams in
        progress, and close.

        The frame is written here: hyper-h2 sends nothing more on a
        connection once it has sent GOAWAY, not even the rest of the
        responses in progress.
        """
        self._stopIdleTimer()
        if self.closing or self.terminated:
            return
        self.closing = True
        self.flush()
        goaway = GoAwayFrame(stream_id=0)
        goaway.last_stream_id = self.conn.highest_inbound_stream_id
        goaway.error_code = ErrorCodes.NO_ERROR
        assert self.transport is not None
        self.transport.write(goaway.serialize())
        self._idle()

    # IPushProducer, for the socket.

    def pauseProducing(self) -> None:
        self.socketFull = True

    def resumeProducing(self) -> None:
        self.socketFull = False
        self._controlWhileFull = 0
        blocked, self._blocked = self._blocked, {}
        for stream in blocked:
            self.sendData(stream)

    def stopProducing(self) -> None:
        pass


def _toHTTP11(
    method: bytes, path: bytes, authority: bytes | None, fields: headers.Fields, received: Headers
) -> refusals.Refusal | None:
    """
    Put in C{received} the header C{fields} of an HTTP/2 request as an
    HTTP/1.1 backend expects them (RFC 9113 section 8.3.1): C{:authority}
    becomes C{Host}, first, where an HTTP/1.1 client puts it.  hyper-h2 has
    checked the pseudo-header fields, that a C{host} field is the same as
    C{:authority}, and joined the cookies.

    What hyper-h2 lets through and an HTTP/1.1 request may not hold is
    refused, as on HTTP/1.1: a C{:method} or C{:path} that cannot make a
    request line (L{refusals.http2RequestLine}); a control character in a
    value (hyper-h2 refuses NUL, CR and LF only; it refuses every one in a
    name); a name that is not a token (HTTP/2 allows C{"}, C{(} and others,
    which Twisted's L{Headers} refuses to hold); a C{content-length} that
    is not 1 to 19 digits up to 2^63 - 1 (L{refusals.contentLength}).

    @return: Why the request cannot be forwarded, or C{None}.
    """
    if method == b"CONNECT":
        return refusals.Refusal(501, "CONNECT over HTTP/2", refusals.REQUEST_LINE)
    refusal = refusals.http2RequestLine(method, path)
    if refusal is not None:
        return refusal
    if authority is not None:
        if authority.translate(None, FIELD_BYTES):
            refusal = refusals.fieldControl(b":authority: " + authority)
            if refusal is not None:
                return refusal
        received.addRawHeader(b"host", authority)
    try:
        for name, value in fields:
            if value.translate(None, FIELD_BYTES):
                # A control character, or obs-text, which a value may hold.
                refusal = refusals.fieldControl(name + b": " + value)
                if refusal is not None:
                    return refusal
            if authority is None or name != b"host":
                received.addRawHeader(name, value)
    except InvalidHeaderName:
        return refusals.Refusal(400, "a header name that is not a token", refusals.HEADER)
    lengths = received.getRawHeaders(b"content-length")
    return None if lengths is None else refusals.contentLength(lengths[0])


def _emptyHead(code: int) -> list[tuple[bytes, bytes]]:
    """
    The head of an empty response of txlb's own with status C{code}.
    """
    return [(b":status", b"%d" % code), (b"content-length", b"0")]


def describeError(error: H2Error) -> str:
    """
    hyper-h2's error, for the access log's C{error="..."}: it may quote what
    the client sent (as a C{bytes} repr), so it is cut short, in ASCII, with
    no double quote.
    """
    text = str(error) or type(error).__name__
    text = text.encode("ascii", "backslashreplace").decode("ascii").replace('"', "'")
    return text if len(text) <= 200 else text[:200] + "..."


def _contentLength(received: Headers) -> int | None:
    """
    The body's length the client stated, if it did (hyper-h2 checks the
    body against it, and L{_toHTTP11} that it is a number).
    """
    values = received.getRawHeaders(b"content-length")
    return int(values[0]) if values else None
