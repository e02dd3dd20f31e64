"""
Cookie affinity (C{--sticky-cookie NAME}), as HAProxy's C{cookie NAME
insert indirect}: txlb inserts a cookie naming the backend that answered,
and a request that carries it goes to that backend while it is up and not
draining, whatever the algorithm would pick.

  - insert: the C{Set-Cookie} is added to a response whenever the client
    did not send the cookie naming the backend that answered (no cookie, or
    one naming another backend, one that was down, or none at all);
  - indirect: the cookie is removed from the request before the backend
    sees it (only that cookie: the others stay byte for byte), and a
    response to a client that sent the right one gets no C{Set-Cookie};
  - not C{nocache}: txlb adds no C{Cache-Control}.  Shared caches do not
    store responses that set cookies by default (nginx's C{proxy_cache},
    Varnish), and changing the caching of the backend's answers is not for
    a transparent proxy to do.

The cookie's value is an opaque token: the first 8 bytes of the BLAKE2b
hash of the backend's C{host:port}, keyed by the cookie's name, in hex.  It
does not show the address, and it is the same in every txlb process and
after restarts (so affinity survives them), but it is no secret: whoever
knows the backends' addresses can compute it, and a client may choose any
backend by sending its token, as with HAProxy's plain server names.

Cost, when on: the C{Cookie} fields read up to three times per request
(to route, to strip, to decide on C{Set-Cookie}), and one hash per backend,
once.  When off, the proxy checks one attribute per request and one per
response.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence

from twisted.web.iweb import IRequest

from txlb.backend import Backend


def withoutCookie(value: bytes, name: bytes) -> bytes:
    """
    A C{Cookie} field's value without the cookie C{name} (every one of that
    name), the others byte for byte as they were, with their separators.
    """
    parts = value.split(b";")
    kept = [part for part in parts if part.lstrip().partition(b"=")[0] != name]
    if len(kept) == len(parts):
        return value
    if kept and parts[0] is not kept[0]:
        # The first cookie went: the next one loses the space before it.
        kept[0] = kept[0].lstrip(b" ")
    return b";".join(kept)


def cookieValue(values: Sequence[bytes], name: bytes) -> bytes | None:
    """
    The value of the first cookie C{name} in the C{Cookie} field values
    C{values}, or C{None}.
    """
    for value in values:
        for part in value.split(b";"):
            key, equals, found = part.lstrip().partition(b"=")
            if equals and key == name:
                return found
    return None


class StickyCookie:
    """
    The cookie that ties a client to a backend.

    @ivar name: The cookie's name.
    """

    def __init__(self, name: str, clock: object) -> None:
        self.name = name.encode("ascii")
        self._clock = clock
        self._tokens: dict[tuple[str, int], bytes] = {}

    def token(self, backend: Backend) -> bytes:
        """
        The cookie value that names C{backend}.
        """
        key = backend.key
        token = self._tokens.get(key)
        if token is None:
            address = f"{key[0]}:{key[1]}".encode()
            digest = hashlib.blake2b(address, digest_size=8, key=self.name).hexdigest()
            token = self._tokens[key] = digest.encode("ascii")
        return token

    def sent(self, request: IRequest) -> bytes | None:
        """
        The value of the cookie C{request} carries, if it carries it.
        """
        values = request.requestHeaders.getRawHeaders(b"cookie")
        return None if values is None else cookieValue(values, self.name)

    def pinned(
        self, request: IRequest, backends: Sequence[Backend], tried: Collection[Backend]
    ) -> Backend | None:
        """
        The backend C{request}'s cookie names, if it is up, not draining
        and not yet C{tried} for it; else C{None}, and the algorithm picks.
        """
        token = self.sent(request)
        if token is None:
            return None
        for backend in backends:
            if self.token(backend) == token:
                now = self._clock.seconds()  # type: ignore[attr-defined]
                if backend.available(now) and backend not in tried:
                    return backend
                return None
        return None

    def strip(self, fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """
        The request's fields for the backend, without this cookie; a
        C{Cookie} field left empty goes.
        """
        result = []
        for name, value in fields:
            if len(name) == 6 and name.lower() == b"cookie":
                value = withoutCookie(value, self.name)
                if not value.strip():
                    continue
            result.append((name, value))
        return result

    def setCookie(self, request: IRequest, backend: Backend) -> bytes | None:
        """
        The C{Set-Cookie} value for a response from C{backend}, or C{None}
        if the client sent the cookie that names it already.
        """
        token = self.token(backend)
        if self.sent(request) == token:
            return None
        cookie = b"%s=%s; Path=/; HttpOnly" % (self.name, token)
        if request.isSecure():
            cookie += b"; Secure"
        return cookie
