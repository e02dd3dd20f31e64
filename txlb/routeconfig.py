"""
The C{[[routes]]} of the configuration file, read and checked: each
problem is one line naming its route, and all are given at once, so that
a start or a reload fails with everything to fix; the warnings name the
routes that can never match and the pools no request reaches.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Collection, Sequence
from typing import Any

from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from txlb.headers import HOP_BY_HOP, Fields
from txlb.http1 import isToken
from txlb.importing import importName, oneLine
from txlb.interfaces import IRouter
from txlb.keytables import MAX_ROUTE_LIMITS
from txlb.paths import ENCODED_SLASH, normalizeEscapes, normalizePath, percentEncoded
from txlb.ratelimit import parseRate, parseRateKey
from txlb.routes import (
    Client,
    Condition,
    ExactPath,
    Header,
    Methods,
    PathPrefix,
    PathRegex,
    QueryParameter,
    Response,
    Route,
    Template,
)

#: The keys a route may have, in the order the reference lists them.
KEYS = (
    "name",
    "host",
    "path-prefix",
    "path",
    "path-regex",
    "method",
    "header",
    "query",
    "client",
    "pool",
    "split",
    "split-key",
    "respond",
    "body",
    "content-type",
    "redirect",
    "redirect-status",
    "router",
    "mirror",
    "mirror-percent",
    "strip-prefix",
    "set-host",
    "request-headers",
    "response-headers",
    "rate-limit",
    "rate-limit-burst",
    "rate-limit-key",
)
#: The actions, one per route.
ACTIONS = ("pool", "split", "respond", "redirect", "router")
#: The actions that forward the request to a pool.
FORWARDING = ("pool", "split", "router")
#: The keys that only make sense on a forwarding route.
FORWARD_ONLY = (
    "mirror",
    "strip-prefix",
    "set-host",
    "request-headers",
    "response-headers",
)
#: The statuses a redirect may have.
REDIRECTS = (301, 302, 303, 307, 308)
#: The placeholders of a redirect template.
PLACEHOLDERS = ("host", "uri")
#: Methods RFC 9110 and RFC 5789 define: a lower-case one is a typo.
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
#: A route's name.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")
_HOST = re.compile(rb"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_SET_HOST = re.compile(rb"([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")
_SCHEME_OR_PATH = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:|/")
#: A field value: printable ASCII, spaces and tabs inside.
_FIELD_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?|")
#: Fields txlb writes itself, so a route may neither add nor remove them.
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


class RoutesError(ValueError):
    """
    The routes cannot be used.

    @ivar problems: One line per problem, each naming its route.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def parseRoutes(
    entries: object, pools: Collection[str], fallback: str | None = None
) -> tuple[list[Route], list[str]]:
    """
    Check the C{[[routes]]} of a configuration file.

    @param entries: The C{routes} value, as C{tomllib} gives it.
    @param pools: The names of the pools there are.
    @param fallback: The pool that takes requests no route matches
        (C{"default"} if there is one), or C{None} (they get 404).
    @return: The routes, and one warning per line: a route that can never
        match, a pool no request can reach.
    @raise RoutesError: With one line per problem.
    """
    if not isinstance(entries, list):
        raise RoutesError([f"routes: expected a list of tables ([[routes]]), not {entries!r}"])
    problems: list[str] = []
    routes: list[Route] = []
    named: dict[str, int] = {}
    for index, entry in enumerate(entries, 1):
        reader = _RouteReader(index, entry, frozenset(pools))
        route = reader.read()
        problems += reader.problems
        if route is None:
            continue
        if route.name is not None:
            if route.name in named:
                problems.append(
                    f"{reader.where}: name {route.name!r} is route {named[route.name]}'s already"
                )
            named.setdefault(route.name, index)
        routes.append(route)
    limited = [route.label for route in routes if route.rateLimit is not None]
    if len(limited) > MAX_ROUTE_LIMITS:
        problems.append(
            f"routes: {len(limited)} routes have a rate-limit; at most {MAX_ROUTE_LIMITS} may"
        )
    if problems:
        raise RoutesError(problems)
    return routes, _warnings(routes, pools, fallback)


def _suggest(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _RouteReader:
    """
    Reads one C{[[routes]]} entry into a L{Route}, a problem per line.
    """

    def __init__(self, index: int, entry: object, pools: frozenset[str]) -> None:
        self.index = index
        self.entry = entry
        self.pools = pools
        self.problems: list[str] = []
        self.where = f"route {index}"

    def problem(self, text: str) -> None:
        self.problems.append(f"{self.where}: {text}")

    def read(self) -> Route | None:
        entry = self.entry
        if not isinstance(entry, dict):
            self.problem(f"expected a table, not {entry!r}")
            return None
        name = entry.get("name")
        if name is not None:
            if isinstance(name, str) and _NAME.fullmatch(name):
                self.where = f"route {self.index} ({name})"
            else:
                self.problem(
                    f"name: expected up to 64 letters, digits, '.', '_' or '-', starting with a"
                    f" letter, not {name!r}"
                )
                name = None
        for key in entry:
            if key not in KEYS:
                self.problem(f"unknown key {key!r}{_suggest(key, KEYS)}")
        hosts, wildcards = self.hosts(entry)
        route = Route(self.index, entry, hosts, wildcards, self.conditions(entry))
        route.name = name
        self.readAction(route, entry)
        self.readRewrites(route, entry)
        self.readRateLimit(route, entry)
        return route

    # Conditions.

    def hosts(self, entry: dict[str, Any]) -> tuple[frozenset[bytes] | None, frozenset[bytes]]:
        """
        The exact hosts and the wildcards' suffixes of C{host}.
        """
        if "host" not in entry:
            return None, frozenset()
        names: set[bytes] = set()
        wildcards: set[bytes] = set()
        for text in self.strings("host", entry["host"]):
            pattern = self.hostPattern(text)
            if pattern is not None:
                (wildcards if text.startswith("*.") else names).add(pattern)
        return frozenset(names), frozenset(wildcards)

    def conditions(self, entry: dict[str, Any]) -> list[Condition]:
        """
        The conditions besides C{host}.
        """
        conditions: list[Condition] = []
        if "path-prefix" in entry:
            prefix = self.pathPattern("path-prefix", entry["path-prefix"])
            if prefix is not None:
                conditions.append(PathPrefix(prefix))
        if "path" in entry:
            exact = self.pathPattern("path", entry["path"])
            if exact is not None:
                conditions.append(ExactPath(exact))
        if "path-regex" in entry:
            regex = self.regex(entry["path-regex"])
            if regex is not None:
                conditions.append(PathRegex(regex))
        if "method" in entry:
            methods = self.strings("method", entry["method"])
            conditions.append(Methods(frozenset(self.method(text) for text in methods)))
        if "header" in entry:
            pairs = self.pairs("header", entry["header"], self.fieldName)
            conditions += [Header(name, value) for name, value in pairs]
        if "query" in entry:
            pairs = self.pairs("query", entry["query"], _utf8)
            conditions += [QueryParameter(name, value) for name, value in pairs]
        if "client" in entry:
            networks = []
            for text in self.strings("client", entry["client"]):
                try:
                    networks.append(ipaddress.ip_network(text, strict=False))
                except ValueError as e:
                    self.problem(f"client {text!r}: {e}")
            conditions.append(Client(networks))
        return conditions

    def strings(self, key: str, value: object) -> list[str]:
        """
        A string or a non-empty list of strings, as a list.
        """
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
            return value
        self.problem(f"{key}: expected a string or a list of strings, not {value!r}")
        return []

    def hostPattern(self, text: str) -> bytes | None:
        """
        A host pattern, normalized as request hosts are: an exact host, or
        the suffix after C{*.} of a wildcard one.
        """
        wildcard = text.startswith("*.")
        name = text[2:] if wildcard else text
        if "*" in name:
            self.problem(
                f"host {text!r}: a wildcard is one whole leading label, as in '*.example.com'"
                " (leave host out to match every host)"
            )
            return None
        if ":" in name and not wildcard:
            literal = name[1:-1] if name.startswith("[") and name.endswith("]") else name
            try:
                address = ipaddress.IPv6Address(literal)
            except ValueError:
                host, _, port = name.rpartition(":")
                if port.isdigit():
                    self.problem(
                        f"host {text!r}: hosts are compared without a port; write {host!r}"
                    )
                else:
                    self.problem(f"host {text!r}: not a host name")
                return None
            return b"[" + address.compressed.encode("ascii") + b"]"
        try:
            encoded = name.encode("ascii") if name.isascii() else name.encode("idna")
        except UnicodeError as e:
            self.problem(f"host {text!r}: not a host name ({e})")
            return None
        normalized = encoded.lower().rstrip(b".")
        if not _HOST.fullmatch(normalized):
            self.problem(f"host {text!r}: not a host name")
            return None
        return normalized

    def pathPattern(self, key: str, value: object) -> bytes | None:
        if not isinstance(value, str):
            self.problem(f"{key}: expected a string, not {value!r}")
            return None
        if not value.startswith("/"):
            self.problem(f"{key} {value!r}: a path starts with '/'")
            return None
        if "?" in value or "#" in value:
            self.problem(f"{key} {value!r}: the path ends before any '?' or '#' (see query)")
            return None
        encoded = normalizeEscapes(percentEncoded(value.encode("utf-8")))
        if b"\\" in encoded or b";" in encoded or ENCODED_SLASH.search(encoded):
            self.problem(
                f"{key} {value!r}: a path with ';', '\\' or an encoded '/' or '\\' is read"
                " differently by different servers, and refused when that changes its route"
            )
            return None
        if key == "path-prefix" and len(encoded) > 1 and encoded.endswith(b"/"):
            encoded = encoded[:-1]  # element-wise: /static/ is /static
        normalized = normalizePath(encoded)
        if normalized != encoded:
            self.problem(
                f"{key} {value!r}: paths are matched normalized, so this never matches;"
                f" write {normalized.decode('ascii')!r}"
            )
            return None
        return encoded

    def regex(self, value: object) -> re.Pattern[bytes] | None:
        if not isinstance(value, str):
            self.problem(f"path-regex: expected a string, not {value!r}")
            return None
        if not value.isascii():
            self.problem(
                f"path-regex {value!r}: write it in ASCII: the path it matches keeps non-ASCII"
                " bytes percent-encoded ('%C3%A9' for 'é')"
            )
            return None
        try:
            return re.compile(value.encode("ascii"))
        except re.error as e:
            self.problem(f"path-regex {value!r}: {e}")
            return None

    def method(self, text: str) -> bytes:
        if not text.isascii() or not isToken(text.encode("ascii")):
            self.problem(f"method {text!r}: not a method name")
        elif text not in _METHODS and text.upper() in _METHODS:
            self.problem(f"method {text!r}: methods are case-sensitive; write {text.upper()!r}")
        return text.encode("utf-8")

    def fieldName(self, text: str) -> bytes:
        encoded = text.encode("utf-8")
        if not isToken(encoded):
            self.problem(f"header {text!r}: not a field name")
        return encoded.lower()

    def pairs(
        self, key: str, value: object, readName: Callable[[str], bytes]
    ) -> tuple[tuple[bytes, bytes | None], ...]:
        """
        A table of name to exact value, or C{"*"} for any value.
        """
        if not isinstance(value, dict) or not value:
            self.problem(f'{key}: expected a table of names to values (or "*"), not {value!r}')
            return ()
        pairs = []
        for name, wanted in value.items():
            if not isinstance(wanted, str):
                self.problem(f'{key} {name!r}: expected a string (or "*"), not {wanted!r}')
                continue
            if key == "header" and not _FIELD_VALUE.fullmatch(wanted):
                self.problem(
                    f"header {name!r}: a field value is printable ASCII without spaces around it,"
                    f" not {wanted!r}"
                )
                continue
            pairs.append((readName(name), None if wanted == "*" else _utf8(wanted)))
        return tuple(pairs)

    # Actions.

    def readAction(self, route: Route, entry: dict[str, Any]) -> None:
        actions = [key for key in ACTIONS if key in entry]
        if not actions:
            self.problem(f"no action: give one of {', '.join(ACTIONS)}")
            return
        if len(actions) > 1:
            self.problem(f"more than one action ({', '.join(actions)}): choose one")
            return
        action = route.action = actions[0]
        value = entry[action]
        if action == "pool":
            route.pool = self.pool("pool", value)
        elif action == "split":
            route.split = self.split(value)
            route.splitTotal = sum(weight for _, weight in route.split)
        elif action == "respond":
            route.response = self.response(value, entry)
        elif action == "redirect":
            route.redirect = self.template(value)
            status = entry.get("redirect-status", 308)
            if type(status) is not int or status not in REDIRECTS:
                self.problem(
                    f"redirect-status: expected one of {', '.join(map(str, REDIRECTS))},"
                    f" not {status!r}"
                )
            else:
                route.redirectStatus = status
        else:
            route.router = self.router(value)
        for key, needs in (
            ("split-key", "split"),
            ("body", "respond"),
            ("content-type", "respond"),
            ("redirect-status", "redirect"),
        ):
            if key in entry and action != needs:
                self.problem(f"{key} only goes with {needs}")
        if "split-key" in entry and action == "split":
            route.splitKey = self.splitKey(entry["split-key"])
        for key in FORWARD_ONLY:
            if key in entry and action not in FORWARDING:
                self.problem(
                    f"{key} only goes with a route that forwards ({', '.join(FORWARDING)}),"
                    f" not {action}"
                )
        if "mirror" in entry and action in FORWARDING:
            route.mirror = self.pool("mirror", entry["mirror"])
            if route.mirror is not None and route.mirror == route.pool:
                self.problem(
                    f"mirror: {route.mirror!r} is the route's pool:"
                    " every request goes there already"
                )
        if "mirror-percent" in entry:
            percent = entry["mirror-percent"]
            if "mirror" not in entry:
                self.problem("mirror-percent only goes with mirror")
            elif isinstance(percent, bool) or not isinstance(percent, (int, float)):
                self.problem(f"mirror-percent: expected a number, not {percent!r}")
            elif not 0 < percent <= 100:
                self.problem(f"mirror-percent: expected more than 0 and at most 100, not {percent}")
            else:
                route.mirrorPercent = float(percent)

    def readRateLimit(self, route: Route, entry: dict[str, Any]) -> None:
        """
        The route's own rate limit: C{rate-limit}, with C{rate-limit-burst}
        and C{rate-limit-key}, which take what the options of those names
        take.
        """
        if "rate-limit" in entry:
            value = entry["rate-limit"]
            try:
                route.rateLimit = parseRate(value) if isinstance(value, str) else None
            except ValueError as e:
                self.problem(f"rate-limit: {e}")
            else:
                if route.rateLimit is None:
                    self.problem(f'rate-limit: expected a rate like "100/s", not {value!r}')
        for key in ("rate-limit-burst", "rate-limit-key"):
            if key in entry and "rate-limit" not in entry:
                self.problem(f"{key} only goes with rate-limit")
        if "rate-limit-burst" in entry:
            burst = entry["rate-limit-burst"]
            if type(burst) is not int or burst < 1:
                self.problem(f"rate-limit-burst: expected a whole number from 1, not {burst!r}")
            else:
                route.rateLimitBurst = burst
        if "rate-limit-key" in entry:
            key = entry["rate-limit-key"]
            try:
                if not isinstance(key, str):
                    raise ValueError(f"{key!r}: the key is one of ip, header:NAME or cookie:NAME")
                route.rateLimitKey = parseRateKey(key)
            except ValueError as e:
                self.problem(f"rate-limit-key: {e}")

    def pool(self, key: str, value: object) -> str | None:
        if not isinstance(value, str):
            self.problem(f"{key}: expected a pool's name, not {value!r}")
            return None
        if value not in self.pools:
            self.problem(f"{key}: unknown pool {value!r}{self.known(value)}")
            return None
        return value

    def known(self, name: str) -> str:
        suggestion = _suggest(name, self.pools)
        if suggestion:
            return suggestion
        return f" (pools: {', '.join(sorted(self.pools))})" if self.pools else " (no pools)"

    def split(self, value: object) -> tuple[tuple[str, int], ...]:
        if not isinstance(value, dict) or not value:
            self.problem(f"split: expected a table of pools to weights, not {value!r}")
            return ()
        split = []
        for pool, weight in value.items():
            if pool not in self.pools:
                self.problem(f"split: unknown pool {pool!r}{self.known(pool)}")
            elif type(weight) is not int or weight <= 0:
                self.problem(
                    f"split: the weight of {pool!r} must be a positive integer, not {weight!r}"
                )
            else:
                split.append((pool, weight))
        return tuple(split)

    def splitKey(self, value: object) -> tuple[str, bytes] | None:
        if isinstance(value, str):
            kind, _, name = value.partition(":")
            if value == "ip":
                return ("ip", b"")
            if kind in ("cookie", "header") and name and name.isascii():
                encoded = name.encode("ascii")
                if isToken(encoded):
                    return (kind, encoded.lower() if kind == "header" else encoded)
        self.problem(f'split-key: expected "cookie:NAME", "header:NAME" or "ip", not {value!r}')
        return None

    def response(self, status: object, entry: dict[str, Any]) -> Response | None:
        if type(status) is not int or not 200 <= status <= 599:
            self.problem(f"respond: expected a status from 200 to 599, not {status!r}")
            return None
        body = entry.get("body", "")
        if not isinstance(body, str):
            self.problem(f"body: expected a string, not {body!r}")
            return None
        contentType = entry.get("content-type", "text/plain; charset=utf-8")
        if (
            not isinstance(contentType, str)
            or not contentType
            or not _FIELD_VALUE.fullmatch(contentType)
        ):
            self.problem(f"content-type: expected a field value, not {contentType!r}")
            return None
        if body and status in (204, 205, 304):
            self.problem(f"body: a {status} response has no body")
            return None
        if "content-type" in entry and not body:
            self.problem("content-type only goes with a body")
            return None
        return Response(status, body.encode("utf-8"), contentType.encode("ascii") if body else None)

    def template(self, value: object) -> Template | None:
        if not isinstance(value, str):
            self.problem(f"redirect: expected a string, not {value!r}")
            return None
        if not value.isascii() or not value.isprintable() or " " in value:
            self.problem(f"redirect {value!r}: a URL is printable ASCII without spaces")
            return None
        try:
            template = Template(value)
        except ValueError as e:
            self.problem(f"redirect {value!r}: {e}")
            return None
        for _, field in template.parts:
            if field is not None and field not in PLACEHOLDERS:
                self.problem(
                    f"redirect {value!r}: unknown placeholder {{{field}}}"
                    " (known: {host}, {uri})"
                )
                return None
        if not _SCHEME_OR_PATH.match(value):
            self.problem(
                f"redirect {value!r}: start with a scheme ('https://') or a path ('/'), so that"
                " the request cannot choose the site"
            )
            return None
        return template

    def router(self, value: object) -> Any:
        if not isinstance(value, str):
            self.problem(f"router: expected package.module:Name, not {value!r}")
            return None
        try:
            made = importName(value)
        except ValueError as e:
            self.problem(f"router: {e}")
            return None
        try:
            router = made()
        except Exception as e:
            self.problem(f"router {value!r} raised when made: {oneLine(e)}")
            return None
        if not IRouter.providedBy(router):
            self.problem(
                f"router {value!r} does not declare IRouter: give its class @implementer(IRouter)"
            )
            return None
        try:
            verifyObject(IRouter, router)
        except Invalid as e:
            # What is wrong, without zope's "The object <...> has failed to
            # implement interface ...: " before it.
            why = str(e).partition(f"{IRouter.__identifier__}: ")[2] or oneLine(e)
            self.problem(f"router {value!r} is not an IRouter provider: {why}")
            return None
        return router

    # Rewrites.

    def readRewrites(self, route: Route, entry: dict[str, Any]) -> None:
        if route.action not in FORWARDING:
            return
        if "strip-prefix" in entry:
            strip = entry["strip-prefix"]
            if not isinstance(strip, bool):
                self.problem(f"strip-prefix: expected true or false, not {strip!r}")
            elif strip and route.prefix in (None, b"/"):
                self.problem("strip-prefix needs a path-prefix other than '/'")
            else:
                route.stripPrefix = strip
        if "set-host" in entry:
            host = entry["set-host"]
            encoded = host.encode("ascii", "replace") if isinstance(host, str) else b""
            if not isinstance(host, str) or not _SET_HOST.fullmatch(encoded):
                self.problem(f"set-host: expected a host, with a port or not, not {host!r}")
            else:
                route.setHost = encoded
        if "request-headers" in entry:
            route.requestRemove, route.requestAdd = self.rewrite(
                "request-headers", entry["request-headers"], HOP_BY_HOP | _FRAMING | {b"host"}
            )
        if "response-headers" in entry:
            route.responseRemove, route.responseAdd = self.rewrite(
                "response-headers", entry["response-headers"], HOP_BY_HOP | _FRAMING
            )

    def rewrite(
        self, key: str, value: object, forbidden: frozenset[bytes]
    ) -> tuple[frozenset[bytes], Fields]:
        if not isinstance(value, dict):
            self.problem(f"{key}: expected a table with add and remove, not {value!r}")
            return frozenset(), []
        for part in value:
            if part not in ("add", "remove"):
                self.problem(f"{key}: unknown key {part!r}{_suggest(part, ('add', 'remove'))}")
        remove = value.get("remove", [])
        names = []
        if not isinstance(remove, list) or not all(isinstance(name, str) for name in remove):
            self.problem(f"{key}.remove: expected a list of field names, not {remove!r}")
        else:
            names = [self.rewritten(key, "remove", name, forbidden) for name in remove]
        add = value.get("add", {})
        fields: Fields = []
        if not isinstance(add, dict):
            self.problem(f"{key}.add: expected a table of field names to values, not {add!r}")
        else:
            for name, text in add.items():
                if not isinstance(text, str) or not _FIELD_VALUE.fullmatch(text):
                    self.problem(
                        f"{key}.add {name!r}: a field value is printable ASCII without spaces"
                        f" around it, not {text!r}"
                    )
                elif self.rewritten(key, "add", name, forbidden):
                    fields.append((name.encode("ascii"), text.encode("ascii")))
        return frozenset(name for name in names if name), fields

    def rewritten(self, key: str, part: str, name: str, forbidden: frozenset[bytes]) -> bytes:
        """
        A field name to add or remove, lower-cased, or C{b""} if it may not
        be.
        """
        encoded = name.encode("utf-8")
        if not isToken(encoded):
            self.problem(f"{key}.{part} {name!r}: not a field name")
            return b""
        if encoded.lower() in forbidden:
            use = "; use set-host" if encoded.lower() == b"host" else ""
            self.problem(f"{key}.{part}: txlb writes {name} itself{use}")
            return b""
        return encoded.lower()


def _utf8(text: str) -> bytes:
    return text.encode("utf-8")


# Warnings.


def _warnings(routes: Sequence[Route], pools: Collection[str], fallback: str | None) -> list[str]:
    warnings = []
    reachable: list[Route] = []
    for route in routes:
        cover = next((earlier for earlier in reachable if _covers(earlier, route)), None)
        if cover is None:
            reachable.append(route)
        elif cover.catchesAll:
            warnings.append(
                f"route {route.label} can never match: route {cover.label} before it matches"
                " every request"
            )
        else:
            warnings.append(
                f"route {route.label} can never match: route {cover.label} before it matches"
                " every request it would"
            )
    if any(route.router is not None for route in reachable):
        return warnings  # A router may answer any pool.
    used: set[str] = set()
    for route in reachable:
        used |= route.pools()
    catchAll = next((route for route in reachable if route.catchesAll), None)
    for pool in sorted(pools):
        if pool in used:
            continue
        if pool == fallback:
            if catchAll is not None:
                warnings.append(
                    f"pool {pool!r} is never used: route {catchAll.label} matches every request,"
                    " so none falls through to it"
                )
        else:
            warnings.append(f"pool {pool!r} is never used: no route sends requests to it")
    return warnings


def _covers(earlier: Route, later: Route) -> bool:
    """
    Whether C{earlier} matches every request C{later} would: its hosts hold
    for C{later}'s, and each of its conditions covers one of C{later}'s.
    Never when C{earlier} has a router, which may let a request through.
    It errs towards no: a warning it does not give is one missed, never a
    false one.
    """
    if earlier.router is not None:
        return False
    if earlier.hosts is not None and (
        later.hosts is None
        or not all(earlier.hostHolds(host) for host in later.hosts)
        or not later.wildcards <= earlier.wildcards
    ):
        return False
    return all(
        any(condition.covers(other) for other in later.conditions)
        for condition in earlier.conditions
    )
