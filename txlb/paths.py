"""
Request-targets and hosts as the router reads them: pure functions over
bytes.

txlb forwards the target the client sent, byte for byte.  Routes are
matched against a I{normalized copy} of its path, so that one resource
spelt several ways (C{/admin}, C{/%61dmin}, C{//admin}, C{/x/../admin})
meets the same route, and a route that answers 403 for C{/admin} cannot be
walked around.  What the copy is, in order (L{normalizePath}):

  1. the path ends at the first C{?} or C{#}: a fragment is never part of
     the path (RFC 9112 forbids it in a request-target; a C{#} that arrives
     anyway is read both ways, see below);
  2. percent-encoded unreserved characters (RFC 3986 section 2.3: letters,
     digits, C{-._~}) are decoded, in either hex case (C{%61} and C{%2e} are
     C{a} and C{.}); every other escape stays encoded, in upper case
     (C{%2f} reads C{%2F}), so an encoded C{/} or C{\\} stays inside its
     segment;
  3. runs of C{/} are merged (C{//admin} is C{/admin}), before
  4. dot segments are removed (RFC 3986 section 5.2.4: C{/x/../admin} and
     C{/./admin} are C{/admin}; C{..} above the root stays at the root).
     Merging first is what nginx and POSIX path functions do: C{/a//../b}
     is C{/b}, not RFC 3986's C{/a/b}, so a backend that merges cannot be
     sent somewhere the router did not see.

Paths stay case-sensitive (RFC 3986 section 6.2.2.1; POSIX file systems,
nginx, HAProxy, Envoy and Kubernetes compare them so), and C{;} is an
ordinary segment byte (RFC 3986 section 3.3; no surveyed proxy strips path
parameters by default).

Some servers read a path otherwise (L{otherReadings}): Tomcat and Jetty
strip C{;parameters} from each segment (so C{/v1/..;/admin} is C{/admin}),
many decode C{%2F} and C{%5C} into separators, Windows servers take C{\\}
for C{/}, and some keep a C{#} as data.  The router reads a path that
holds any of these both ways; L{txlb.routes} refuses the request when the
readings would take different routes, so no backend can act on a path the
router did not route.

Hosts (L{normalizeHost}) are compared in lower case, without the port,
userinfo or trailing dots, IPv6 literals in their compressed form.
"""

from __future__ import annotations

import ipaddress
import re
from itertools import product
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

#: The unreserved characters of RFC 3986 section 2.3.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
#: An encoded C{/} or C{\\}.
ENCODED_SLASH = re.compile(rb"%(?:2[Ff]|5[Cc])")
_SCHEME = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://")
_PATH_END = re.compile(rb"[?#]")


class Target(NamedTuple):
    """
    A request-target's parts (RFC 9112 section 3.2), raw.

    @ivar authority: The C{host[:port]} of an absolute-form or
        authority-form target, else C{None}.
    @ivar path: The path: from the start (origin-form) or the end of the
        authority (absolute-form) to the first C{?} or C{#}; C{b""} for an
        absolute-form target without one; C{b"*"} for the asterisk form;
        C{None} for the authority form (C{CONNECT host:port}).
    @ivar query: What is between the C{?} and the first C{#} after it, or
        C{None} if there is no C{?}.
    @ivar start: Where the path starts in the target.
    @ivar end: Where it ends.
    """

    authority: bytes | None
    path: bytes | None
    query: bytes | None
    start: int
    end: int


def splitTarget(target: bytes) -> Target:
    """
    Split a request-target in any of its four forms: origin
    (C{/p?q}), absolute (C{http://host:port/p?q}), authority
    (C{host:port}, for CONNECT) and asterisk (C{*}).
    """
    authority = None
    if target[:1] == b"/":
        start = 0
    elif target == b"*":
        return Target(None, b"*", None, 0, 1)
    else:
        scheme = _SCHEME.match(target)
        if scheme is None:
            return Target(target, None, None, len(target), len(target))
        begin = scheme.end()
        start = _firstOf(target, begin, b"/")
        authority = target[begin:start]
    end = _firstOf(target, start)
    query = None
    if end < len(target) and target[end] == 0x3F:  # "?"
        hashAt = target.find(b"#", end + 1)
        query = target[end + 1 : len(target) if hashAt < 0 else hashAt]
    return Target(authority, target[start:end], query, start, end)


def _firstOf(target: bytes, start: int, also: bytes = b"") -> int:
    """
    The position of the first C{?} or C{#} (or C{also}) at or after
    C{start}, or the length of C{target}.
    """
    found = _PATH_END.search(target, start)
    end = len(target) if found is None else found.start()
    if also:
        other = target.find(also, start, end)
        if other >= 0:
            return other
    return end


def normalizePath(path: bytes) -> bytes:
    """
    The copy of C{path} that routes are matched against (see the module's
    docstring).  An empty path is C{/}; the asterisk form's C{*} is itself.
    """
    if not path:
        return b"/"
    if path[0] != 0x2F:  # "/"
        return path
    path = normalizeEscapes(path)
    if b"//" not in path and b"/." not in path:
        return path
    segments = path.split(b"/")
    kept: list[bytes] = []
    for segment in segments:
        if segment == b"..":
            if kept:
                kept.pop()
        elif segment and segment != b".":
            kept.append(segment)
    if kept and segments[-1] in (b"", b".", b".."):
        kept.append(b"")
    return b"/" + b"/".join(kept)


def normalizeEscapes(data: bytes) -> bytes:
    """
    C{data} with its percent-encoded unreserved characters decoded and its
    other escapes in upper case: step 2 of L{normalizePath}.
    """
    if b"%" in data:
        return _ESCAPE.sub(_decodeUnreserved, data)
    return data


def _decodeUnreserved(escape: re.Match[bytes]) -> bytes:
    byte = int(escape.group(1), 16)
    if byte in _UNRESERVED:
        return bytes((byte,))
    return escape.group(0).upper()


def otherReadings(target: bytes, parts: Target) -> list[bytes]:
    """
    The normalized paths that servers which read C{target}'s path otherwise
    may see, besides L{normalizePath}'s: a C{#} kept as data, C{\\} as a
    separator (Windows), C{;parameters} stripped from each segment (Tomcat,
    Jetty), C{%2F} and C{%5C} decoded into separators, the path cut at a
    NUL (C{%00}, as a C string ends), and every combination of these that
    the path gives occasion for.  Most paths give none, and the answer is
    empty at the cost of a few byte searches.

    Not covered: servers that decode twice (C{%2561} as C{a}), fold case,
    or read overlong UTF-8 (C{%C0%AE} as C{.}).

    @param parts: C{splitTarget(target)}.
    """
    if parts.path is None or parts.path[:1] != b"/":
        return []
    questionAt = target.find(b"?", parts.start)
    whole = target[parts.start : len(target) if questionAt < 0 else questionAt]
    flags = (
        b"#" in whole,
        b"\\" in whole,
        b";" in whole,
        b"%" in whole and ENCODED_SLASH.search(whole) is not None,
        b"\0" in whole or b"%00" in whole,
    )
    if not any(flags):
        return []
    canonical = normalizePath(parts.path)
    readings: dict[bytes, None] = {}
    for chosen in product(*[(False, True) if flag else (False,) for flag in flags]):
        if any(chosen):
            readings[_reading(whole, *chosen)] = None
    readings.pop(canonical, None)
    return list(readings)


def _reading(
    whole: bytes, fragment: bool, backslash: bool, parameters: bool, slashes: bool, nul: bool
) -> bytes:
    """
    The path C{whole} (up to the query, with any C{#}) as a server that
    reads it in the chosen ways sees it, normalized.
    """
    path = whole if fragment else whole.partition(b"#")[0]
    if backslash:
        path = path.replace(b"\\", b"/")
    if parameters:
        path = b"/".join(segment.partition(b";")[0] for segment in path.split(b"/"))
    if slashes:
        path = ENCODED_SLASH.sub(b"/", path)
    if nul:
        path = path.partition(b"\0")[0].partition(b"%00")[0]
    return normalizePath(path)


def segmentsAfter(path: bytes, depth: int) -> bytes:
    """
    What is left of the raw C{path} once the part that normalizes to its
    first C{depth} segments is taken off, byte for byte: C{strip-prefix}'s
    forwarded path.

    The cut is after the first raw segment at which the normalized path is
    C{depth} segments deep and from which it never climbs back above that
    depth, so that the rest, read on its own, normalizes to the rest of the
    normalized path: for C{/api/v1/../../api/v2} and the prefix C{/api},
    what is left is C{/v2}, not C{/v1/../../api/v2}, which a backend would
    resolve to C{/api/v2}.  Everything after the cut is as the client sent
    it: C{/api/a//b/../c} leaves C{/a//b/../c}, and C{//api//v1} leaves
    C{//v1}.  An empty rest is C{/}.

    @param path: A raw path whose normalized form starts with C{depth}
        segments (L{Target.path}).
    """
    level = 0
    cut = -1
    position = 0
    size = len(path)
    while position < size:
        following = path.find(b"/", position + 1)
        end = size if following < 0 else following
        segment = normalizeEscapes(path[position + 1 : end])
        if segment == b"..":
            if level:
                level -= 1
        elif segment and segment != b".":
            level += 1
        if level < depth:
            cut = -1
        elif level == depth and cut < 0:
            cut = end
        position = end
    return path[max(cut, 0) :] or b"/"


def normalizeHost(host: bytes) -> bytes | None:
    """
    A host as routes compare it: lower case, without userinfo, port or
    trailing dots, an IPv6 literal compressed inside its brackets
    (C{[0:0::1]:8080} is C{[::1]}); C{None} for an empty one.  Letters are
    lower-cased in ASCII only, and nothing is percent-decoded.
    """
    if b"@" in host:
        host = host.rpartition(b"@")[2]
    if host[:1] == b"[":
        close = host.find(b"]")
        if close < 0:
            return host.lower()
        literal = host[1:close]
        try:
            literal = ipaddress.IPv6Address(literal.decode("ascii")).compressed.encode()
        except (ValueError, UnicodeDecodeError):
            literal = literal.lower()
        return b"[" + literal + b"]"
    if b":" in host:
        name, _, port = host.rpartition(b":")
        if b":" not in name and (not port or port.isdigit()):
            host = name
    host = host.lower()
    if host[-1:] == b".":
        host = host.rstrip(b".")
    return host or None


def parseQuery(query: bytes) -> dict[bytes, list[bytes]]:
    """
    The parameters of a query, as application/x-www-form-urlencoded reads
    them (WHATWG URL; what Python's C{parse_qs}, PHP, Rails and Express
    give an application): split on C{&}, C{+} is a space, names and values
    percent-decoded; a parameter without C{=} has the empty value.  Every
    value of a repeated parameter is kept, in order.
    """
    parameters: dict[bytes, list[bytes]] = {}
    for part in query.split(b"&"):
        if part:
            name, _, value = part.partition(b"=")
            parameters.setdefault(_formDecoded(name), []).append(_formDecoded(value))
    return parameters


def _formDecoded(data: bytes) -> bytes:
    if b"+" in data:
        data = data.replace(b"+", b" ")
    if b"%" in data:
        data = unquote_to_bytes(data)
    return data


def percentEncoded(data: bytes) -> bytes:
    """
    C{data} with every byte outside printable ASCII (and C{%} not starting
    an escape) percent-encoded in upper case: what may go in a path
    pattern or a C{Location} field.
    """
    return _UNPRINTABLE.sub(_escape, data)


_UNPRINTABLE = re.compile(rb"[^\x21-\x7e]|%(?![0-9A-Fa-f]{2})")


def _escape(match: re.Match[bytes]) -> bytes:
    return b"%%%02X" % match.group(0)[0]
