"""
A client of etcd's v3 JSON gateway over HTTP(S), with treq.

Every call is a C{POST} to C{/v3/...} on one of the cluster's endpoints.
They are tried in turn: a refused or lost connection, a failed TLS
handshake or a 503 (no leader, shutting down) moves on to the next, and the
one that answered is asked first next time.  Each try has a deadline
(connection, answer and body together), so an etcd that accepts the
connection and says nothing fails the call with L{EtcdTimeoutError}; the next
call then starts at the next endpoint (the timed-out request may have been
applied, so it is not sent again).

With a user, the client authenticates once, sends the token etcd gave as
the raw C{Authorization} value (no C{Bearer}: etcd refuses it), and when
etcd no longer knows it (401: it expired, or another member issued it)
authenticates again and repeats the call once.

Every method is a coroutine: C{await} it, or wrap it in
C{Deferred.fromCoroutine}; cancelling that Deferred closes the connection.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Union, cast
from urllib.parse import urlsplit

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import (
    ConnectError,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    TCPTimedOutError,
    TimeoutError,
)
from twisted.internet.interfaces import IConsumer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import trustRootFromCertificates
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS
from zope.interface import implementer

from txlb.etcd import gateway
from txlb.etcd.errors import (
    EtcdAuthError,
    EtcdError,
    EtcdProtocolError,
    EtcdRequestError,
    EtcdTimeoutError,
    EtcdUnavailableError,
    MessageTooLongError,
    WatchCanceledError,
    WatchCompactedError,
    WatchEndedError,
)
from txlb.etcd.gateway import Lease, RangeResult, TxnResult, WatchResult
from txlb.etcd.lines import LineBuffer
from txlb.health import quietPool
from txlb.tls import (
    BackendTLS,
    failureReason,
    loadCertificates,
    loadClientCertificate,
)

#: Seconds each try of a call may take, connection included.
DEFAULT_TIMEOUT = 5.0

#: The longest answer, or line of a watch, accepted: etcd takes requests of
#: up to 1.5 MiB (C{--max-request-bytes}), a third more in base64, and a
#: watch catching up may send many revisions in one line.
MAX_MESSAGE = 32 * 1024 * 1024

#: etcd's client port.
DEFAULT_PORT = 2379


class Put(NamedTuple):
    """
    Set C{key} to C{value} in a transaction (under C{lease}, if not 0).
    """

    key: bytes
    value: bytes
    lease: int = 0


class Delete(NamedTuple):
    """
    Delete C{key} (every key starting with it, if C{prefix}) in a
    transaction.
    """

    key: bytes
    prefix: bool = False


Change = Union[Put, Delete]


def parseEndpoint(text: str) -> str:
    """
    Check one C{--etcd} URL: C{http://HOST[:PORT]} or C{https://...}, port
    2379 by default, and nothing after the address.

    @return: The URL with its port, without a final C{/}.
    @raise ValueError: With a one-line reason.
    """
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{text!r}: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{text!r}: expected http://HOST:PORT or https://HOST:PORT")
    if not parts.hostname:
        raise ValueError(f"{text!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{text!r}: expected only SCHEME://HOST:PORT, with no path")
    if port == 0:
        raise ValueError(f"{text!r}: port 0 is not a port etcd listens on")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{DEFAULT_PORT if port is None else port}"


def tlsSettings(ca: str | None, cert: str | None, key: str | None) -> BackendTLS:
    """
    The TLS settings the C{--etcd-ca}, C{--etcd-cert} and C{--etcd-key}
    options describe: the CAs trusted (the system's if none) and the client
    certificate sent (if any).

    @raise ValueError: With one line saying what is wrong.
    """
    if (cert is None) != (key is None):
        raise ValueError("--etcd-cert and --etcd-key go together: give both")
    trustRoot = None
    if ca is not None:
        trustRoot = trustRootFromCertificates(loadCertificates("--etcd-ca", ca))
    clientCertificate = None
    if cert is not None and key is not None:
        clientCertificate = loadClientCertificate(cert, key, "--etcd-cert", "--etcd-key")
    return BackendTLS(trustRoot, clientCertificate)


def readPassword(path: str) -> str:
    """
    The password in the file C{--etcd-password-file} names: its first line,
    without the line's end (so that C{echo secret > file} works).

    @raise ValueError: With one line, if it cannot be read or is empty.
    """
    try:
        with open(path, "rb") as file:
            text = file.read()
    except OSError as e:
        raise ValueError(f"--etcd-password-file: {path}: {e.strerror or e}") from None
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise ValueError(f"--etcd-password-file: {path}: no password on its first line")
    try:
        return lines[0].decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"--etcd-password-file: {path}: the password is not UTF-8") from None


#: What etcd says to a request without a token when authentication is on.
_NO_USER = "user name is empty"


class _UnreachableError(Exception):
    """
    One endpoint could not be asked (the request was not processed), so the
    next one may be.
    """


@implementer(IBodyProducer)
class _Body:
    """
    A request body written at once (treq's
    L{FileBodyProducer<twisted.web.client.FileBodyProducer>} would wait
    on the global cooperator): the default client's C{data_to_body_producer}.
    """

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _BodyReader(Protocol):
    """
    Read a whole answer of at most C{limit} bytes; cancelling C{done}
    closes the connection.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self.done: Deferred[bytes] = Deferred(lambda _: self._close())

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._chunks = []
            self._close()
            self.done.errback(MessageTooLongError(f"an answer of more than {self._limit} bytes"))
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.errback(
                EtcdUnavailableError(f"connection lost during the answer: {_why(reason)}")
            )

    def _close(self) -> None:
        if self.transport is not None:
            # Agent's body transport: a producer that closes the connection.
            cast(Any, self.transport).stopProducing()


class WatchStream(Protocol):
    """
    One open watch: the body of a C{/v3/watch} answer, read line by line as
    it arrives.

    Each message after the creation goes to C{onResult}.  The stream ends
    with C{done}: it fires C{None} when L{stop} ended it, and fails with the
    reason otherwise: L{WatchCompactedError} (the start revision was compacted
    away), L{WatchCanceledError}, L{WatchEndedError} (an error line after the 200,
    end of stream, lost connection), L{EtcdProtocolError} (a line that is
    not a watch message, or L{MessageTooLongError}), or whatever C{onResult}
    raised.  Cancelling C{done} closes the connection.

    @ivar endpoint: The etcd URL it is open on.
    """

    def __init__(
        self, endpoint: str, onResult: Callable[[WatchResult], None], maxLength: int
    ) -> None:
        self.endpoint = endpoint
        self.done: Deferred[None] = Deferred(lambda _: self._close())
        self._onResult = onResult
        self._lines = LineBuffer(maxLength)
        self._created: Deferred[WatchResult] = Deferred(lambda _: self._close())
        self._ended = False

    def stop(self, reason: Exception | None = None) -> None:
        """
        Close the stream; C{done} fires with C{None}, or fails with
        C{reason} if one is given.
        """
        self._end(reason)

    def dataReceived(self, data: bytes) -> None:
        try:
            lines = self._lines.feed(data)
        except MessageTooLongError as e:
            self._end(e)
            return
        for line in lines:
            if self._ended:
                return
            self._receive(line)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        rest = self._lines.rest()
        if rest and not self._ended:
            # etcd's error line when it stops has no newline.
            self._receive(rest)
        if reason.check(ResponseDone, PotentialDataLoss, ConnectionDone):
            self._end(WatchEndedError(f"etcd {self.endpoint} ended the watch stream"))
        else:
            self._end(WatchEndedError(f"etcd {self.endpoint}: watch stream lost: {_why(reason)}"))

    def _receive(self, line: bytes) -> None:
        try:
            message = gateway.parseObject(line, f"etcd {self.endpoint} watch")
            problem = gateway.streamError(message)
            if problem is not None:
                raise WatchEndedError(f"etcd {self.endpoint} ended the watch: {problem[0]}")
            if "result" not in message:
                raise EtcdProtocolError(f"etcd {self.endpoint}: a watch message without result")
            result = gateway.watchResult(gateway.field(message, "result", dict, {}))
        except EtcdProtocolError as e:
            self._end(EtcdProtocolError(f"etcd {self.endpoint} watch: {e}"))
            return
        except EtcdError as e:
            self._end(e)
            return
        if not self._created.called:
            self._creation(result)
        elif result.canceled:
            self._end(self._cancellation(result))
        else:
            try:
                self._onResult(result)
            except Exception as e:
                self._end(e)

    def _creation(self, result: WatchResult) -> None:
        if not result.created:
            self._end(EtcdProtocolError(f"etcd {self.endpoint}: the watch began with no creation"))
        elif result.canceled:
            self._end(self._cancellation(result))
        else:
            self._created.callback(result)

    def _cancellation(self, result: WatchResult) -> Exception:
        if result.compactRevision:
            return WatchCompactedError(
                f"etcd {self.endpoint}: the watch's revisions were compacted "
                f"(up to {result.compactRevision})",
                result.compactRevision,
            )
        reason = result.cancelReason
        if "invalid auth token" in reason:
            return EtcdAuthError(
                f"etcd {self.endpoint}: invalid auth token", 401, 16, "invalid auth token"
            )
        why = f": {reason}" if reason else ""
        return WatchCanceledError(f"etcd {self.endpoint} canceled the watch{why}", reason)

    def _end(self, reason: Exception | None) -> None:
        if self._ended:
            return
        self._close()
        if not self._created.called:
            self._created.errback(reason or CancelledError())
        elif reason is None:
            self.done.callback(None)
        else:
            self.done.errback(reason)

    def _close(self) -> None:
        self._ended = True
        if self.transport is not None:
            # Agent's body transport: a producer that closes the connection.
            cast(Any, self.transport).stopProducing()


class EtcdClient:
    """
    Ask etcd, through its JSON gateway, on one of C{endpoints}.

    @ivar endpoints: The cluster's URLs, in the order tried.
    @ivar timeout: Seconds each try may take.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        reactor: Any,
        http: Any = None,
        tls: IPolicyForHTTPS | None = None,
        user: str | None = None,
        password: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        maxMessage: int = MAX_MESSAGE,
    ) -> None:
        """
        @param endpoints: URLs, checked by L{parseEndpoint}.
        @param http: What requests are sent with: a treq C{HTTPClient} (or
            C{treq.testing.StubTreq}); by default one that opens a new
            connection per call (no stale pooled connection after etcd
            restarts) and uses C{tls} for C{https://} endpoints.
        @param tls: See L{tlsSettings}; the system's CAs by default.
        @param user: etcd's user to authenticate as, if any.
        """
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self.endpoints = [parseEndpoint(e) for e in endpoints]
        self.timeout = timeout
        self._reactor = reactor
        if http is None:
            agent = Agent(
                reactor,
                contextFactory=tls or BackendTLS(),
                connectTimeout=timeout,
                pool=quietPool(reactor),
            )
            http = HTTPClient(agent, data_to_body_producer=_Body)
        self._http = http
        self._user = user
        self._password = password
        self._token: str | None = None
        self._next = 0
        self._maxMessage = maxMessage

    @property
    def endpoint(self) -> str:
        """
        The endpoint asked first.
        """
        return self.endpoints[self._next]

    async def range(
        self, key: bytes, *, prefix: bool = False, countOnly: bool = False, endpoint: str = ""
    ) -> RangeResult:
        """
        Read C{key}, or every key starting with it if C{prefix}
        (linearizable: what the cluster's majority holds now).

        @param countOnly: Read only the number of keys (C{count}).
        @param endpoint: Ask only this endpoint (to check the member a watch
            is open on).
        """
        request: dict[str, Any] = {"key": gateway.encode(key)}
        if prefix:
            request["range_end"] = gateway.encode(gateway.prefixEnd(key))
        if countOnly:
            request["count_only"] = True
        return gateway.rangeResult(await self._call("/v3/kv/range", request, endpoint))

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        """
        Set C{key} to C{value}, attached to C{lease} if not 0.

        @return: The revision of the change.
        """
        answer = await self._call("/v3/kv/put", _put(key, value, lease))
        return gateway.headerRevision(answer)

    async def delete(self, key: bytes, *, prefix: bool = False) -> tuple[int, int]:
        """
        Delete C{key}, or every key starting with it if C{prefix}.

        @return: The store's revision after it, and how many keys went.
        """
        answer = await self._call("/v3/kv/deleterange", _delete(key, prefix))
        return gateway.headerRevision(answer), gateway.integer(answer, "deleted")

    async def txn(
        self, changes: Sequence[Change], ifModRevisions: Mapping[bytes, int] | None = None
    ) -> TxnResult:
        """
        Make C{changes} together, in one revision (so that a watch sees
        them in one message), if each key of C{ifModRevisions} was last
        changed at the revision given (0: the key does not exist).

        @return: Whether the condition held and so the changes were made,
            and the store's revision.
        """
        request: dict[str, Any] = {
            "success": [
                {"request_put": _put(c.key, c.value, c.lease)}
                if isinstance(c, Put)
                else {"request_delete_range": _delete(c.key, c.prefix)}
                for c in changes
            ]
        }
        if ifModRevisions:
            request["compare"] = [
                {
                    "key": gateway.encode(key),
                    "target": "MOD",
                    "result": "EQUAL",
                    "mod_revision": str(revision),
                }
                for key, revision in ifModRevisions.items()
            ]
        return gateway.txnResult(await self._call("/v3/kv/txn", request))

    async def grant(self, ttl: int) -> Lease:
        """
        Grant a lease of C{ttl} seconds (etcd raises it to its minimum).
        """
        answer = await self._call("/v3/lease/grant", {"TTL": str(ttl)})
        problem = gateway.field(answer, "error", str, "")
        if problem:
            raise EtcdRequestError(f"etcd refused a lease: {problem}", reason=problem)
        return Lease(gateway.integer(answer, "ID"), gateway.integer(answer, "TTL"))

    async def keepAlive(self, lease: int) -> int | None:
        """
        Renew C{lease} for its TTL.

        @return: The TTL, or C{None} if the lease is gone (expired or
            revoked): etcd then answers 200 with no TTL.
        """
        answer = await self._call("/v3/lease/keepalive", {"ID": str(lease)})
        result = gateway.field(answer, "result", dict, {})
        return gateway.integer(result, "TTL") or None

    async def revoke(self, lease: int) -> bool:
        """
        Revoke C{lease}: the keys attached to it are deleted.

        @return: C{False} if there was no such lease any more.
        """
        try:
            await self._call("/v3/lease/revoke", {"ID": str(lease)})
        except EtcdRequestError as e:
            if e.code == 5:  # NotFound: "requested lease not found"
                return False
            raise
        return True

    async def watch(
        self,
        key: bytes,
        onResult: Callable[[WatchResult], None],
        *,
        prefix: bool = False,
        startRevision: int = 0,
    ) -> WatchStream:
        """
        Watch C{key} (every key starting with it if C{prefix}) from
        C{startRevision} (inclusive; 0: from now), with one streaming
        C{/v3/watch}.

        @return: The stream, once etcd has created the watch (within the
            timeout, like any call).
        @raise WatchCompactedError: If C{startRevision} has been compacted.
        """
        create: dict[str, Any] = {"key": gateway.encode(key)}
        if prefix:
            create["range_end"] = gateway.encode(gateway.prefixEnd(key))
        if startRevision:
            create["start_revision"] = str(startRevision)
        request = {"create_request": create}

        async def tryWatch(url: str, token: str | None) -> WatchStream:
            response = await self._request(url, "/v3/watch", request, token)
            if response.code != 200:
                answer = await self._read(url, response)
                raise self._failure(url, response.code, answer)
            stream = WatchStream(url, onResult, self._maxMessage)
            response.deliverBody(stream)
            await stream._created
            return stream

        return await self._authenticated(lambda token: self._onEndpoints(tryWatch, token))

    async def _call(self, path: str, request: dict[str, Any], endpoint: str = "") -> dict[str, Any]:
        """
        Send C{request} to C{path} and read the JSON object answered.
        """

        async def tryCall(url: str, token: str | None) -> dict[str, Any]:
            response = await self._request(url, path, request, token)
            answer = await self._read(url, response)
            if response.code != 200:
                raise self._failure(url, response.code, answer)
            message = gateway.parseObject(answer, f"etcd {url}{path}")
            problem = gateway.streamError(message)
            if problem is not None:
                reason, status = problem
                if status == 503:
                    raise _UnreachableError(reason)
                raise EtcdRequestError(f"etcd {url}{path}: {reason}", 200, 0, reason)
            return message

        return await self._authenticated(lambda token: self._onEndpoints(tryCall, token, endpoint))

    async def _authenticated(self, send: Callable[[str | None], Any]) -> Any:
        """
        C{send(token)}, again with a new token if etcd did not know the one
        sent, or wanted one after all (authentication was turned on).
        """
        token = await self._currentToken()
        try:
            return await send(token)
        except EtcdAuthError as e:
            if self._user is None or not (e.status == 401 or _NO_USER in e.reason):
                raise
            if self._token == token:
                self._token = None
            return await send(await self._currentToken())

    async def _currentToken(self) -> str | None:
        """
        The token to send: none without a user, an empty one while etcd's
        authentication is off (as etcd's own client, which goes on without
        one), or the one etcd gave.
        """
        if self._user is None or self._token is not None:
            return self._token
        request = {"name": self._user, "password": self._password}

        async def tryAuthenticate(url: str, token: None) -> str:
            response = await self._request(url, "/v3/auth/authenticate", request, None)
            answer = await self._read(url, response)
            if response.code != 200:
                reason, code = gateway.errorAnswer(answer)
                if response.code == 400 and code == 3:  # InvalidArgument
                    raise EtcdAuthError(
                        f"etcd {url}: cannot authenticate as {self._user!r}: {reason}",
                        response.code,
                        code,
                        reason,
                    )
                if code == 9 and "authentication is not enabled" in reason:
                    return ""
                raise self._failure(url, response.code, answer)
            message = gateway.parseObject(answer, f"etcd {url} authentication")
            return gateway.field(message, "token", str, "")

        self._token = await self._onEndpoints(tryAuthenticate, None)
        return self._token

    async def _onEndpoints(
        self, attempt: Callable[[str, Any], Any], token: str | None, only: str = ""
    ) -> Any:
        """
        C{attempt(url, token)} on each endpoint in turn (only on C{only} if
        given) until one can be asked, each try within the timeout.
        """
        reasons = []
        for url in [only] if only else self._rotation():
            tried = Deferred.fromCoroutine(attempt(url, token))
            expired: list[bool] = []

            def expire(tried: Deferred[Any] = tried, expired: list[bool] = expired) -> None:
                expired.append(True)
                tried.cancel()

            timer = self._reactor.callLater(self.timeout, expire)
            try:
                result = await tried
            except Exception as e:
                if expired:
                    # Cancelled by the timer: CancelledError, or
                    # ConnectingCancelledError while connecting.
                    self._moveOn(url)
                    raise EtcdTimeoutError(
                        f"etcd {url} did not answer within {self.timeout:g} s"
                    ) from None
                if not isinstance(e, _UnreachableError):
                    raise
                self._moveOn(url)
                reasons.append(f"{url}: {e}")
                continue
            finally:
                if timer.active():
                    timer.cancel()
            self._next = self.endpoints.index(url) if url in self.endpoints else self._next
            return result
        raise EtcdUnavailableError("etcd unreachable: " + "; ".join(reasons))

    def _rotation(self) -> Iterator[str]:
        """
        Each endpoint once, the one that last answered first.
        """
        start = self._next
        for i in range(len(self.endpoints)):
            yield self.endpoints[(start + i) % len(self.endpoints)]

    def _moveOn(self, url: str) -> None:
        """
        Ask the endpoint after C{url} first from now on, if C{url} was first.
        """
        if self.endpoint == url:
            self._next = (self._next + 1) % len(self.endpoints)

    async def _request(
        self, url: str, path: str, request: dict[str, Any], token: str | None
    ) -> Any:
        headers = {"Content-Type": ["application/json"]}
        if token:
            headers["Authorization"] = [token]
        body = json.dumps(request, separators=(",", ":")).encode("utf-8")
        try:
            return await self._http.request(
                "POST",
                url + path,
                data=body,
                headers=headers,
                allow_redirects=False,
                unbuffered=True,
            )
        except (
            ConnectError,
            DNSLookupError,
            RequestTransmissionFailed,
            ResponseNeverReceived,
        ):
            raise _UnreachableError(_why(Failure())) from None

    async def _read(self, url: str, response: Any) -> bytes:
        reader = _BodyReader(self._maxMessage)
        response.deliverBody(reader)
        try:
            return await reader.done
        except MessageTooLongError as e:
            raise MessageTooLongError(f"etcd {url}: {e}") from None
        except EtcdUnavailableError as e:
            raise EtcdUnavailableError(f"etcd {url}: {e}") from None

    def _failure(self, url: str, status: int, body: bytes) -> Exception:
        """
        The error for an answer of C{status} other than 200.
        """
        reason, code = gateway.errorAnswer(body)
        if status == 503:
            return _UnreachableError(f"{reason} (HTTP 503)")
        message = f"etcd {url}: {reason} (HTTP {status})"
        if status == 401 or _NO_USER in reason:
            if status != 401:
                message += ": etcd wants a user and password"
            return EtcdAuthError(message, status, code, reason)
        return EtcdRequestError(message, status, code, reason)


def _put(key: bytes, value: bytes, lease: int) -> dict[str, Any]:
    request = {"key": gateway.encode(key), "value": gateway.encode(value)}
    if lease:
        request["lease"] = str(lease)
    return request


def _delete(key: bytes, prefix: bool) -> dict[str, Any]:
    request = {"key": gateway.encode(key)}
    if prefix:
        request["range_end"] = gateway.encode(gateway.prefixEnd(key))
    return request


def _why(failure: Failure) -> str:
    """
    A one-line reason for a failed connection: the first reason inside
    Twisted's wrapped errors, and what a TLS failure means.
    """
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        failure = reasons[0]
    tlsReason = failureReason(failure)
    if tlsReason is not None:
        return tlsReason
    for kind, text in _REASONS:
        if failure.check(kind):
            return text
    return f"{type(failure.value).__name__}: {failure.getErrorMessage()}".rstrip(": .")


#: How the usual connection failures read, most specific first.
_REASONS = (
    (ConnectionRefusedError, "connection refused"),
    (TCPTimedOutError, "connection timed out"),
    (TimeoutError, "connection timed out"),
    (DNSLookupError, "no such host"),
    (ConnectionDone, "connection closed before any answer"),
    (ConnectionLost, "connection lost"),
)
