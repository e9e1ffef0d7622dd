"""What every request passes before the studio reads it: the Host it names, the token, the page it comes from,
and its size.  A plain ASGI middleware, so a refused request is answered before any of its body is read.

- **Host** (with ``allowed_hosts``, which ``danqing studio`` gives on loopback): the Host header must name one of
  them, port included (``127.0.0.1:7860``, ``localhost:7860``, ``[::1]:7860``), else 400.  A web page whose own
  name was rebound to 127.0.0.1 (DNS rebinding) names its own host, so it never reaches the API.
- **Token** (with ``token``: ``danqing studio --token``): every ``/api/`` request carries it, as
  ``Authorization: Bearer T``, ``X-Danqing-Token: T`` or the cookie that opening ``/?token=T`` sets; else 401.
  The page, its scripts and the API docs are served without it (they hold nothing of the user's).
- **Origin**, on state-changing methods: browsers name the page that sent a request in ``Origin`` (or, when they
  leave it out, ``Referer``).  A request naming another origin is refused with 403 unless it carries, in a
  header, the page token (injected into the studio's own page) or the studio's token: a foreign page knows
  neither, and could not send a custom header anyway (that needs a CORS preflight, which the studio never
  grants).  A request naming no page at all comes from a script (curl, A1111-style clients), never from a
  browser, so it passes; so cross-site forgery is closed and scripts keep working.
- **Size**: a body over ``max_body`` (multipart uploads) or ``max_json`` (anything else) is 413, by its
  Content-Length before reading, or as soon as a streamed body passes the limit.

Every answer also gets ``X-Content-Type-Options: nosniff``.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from urllib.parse import parse_qs, urlsplit

from fastapi import HTTPException           # the kind FastAPI passes on when reading a body fails with it

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_BODY = 16 * 1024 * 1024            # multipart: one upload (10 MB) and its part headers, with room to spare
MAX_JSON = 1024 * 1024                 # any other body: the largest job (a 64-cell grid of prompts) is ~70 KB
TOKEN_HEADER = "x-danqing-token"
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
SHOWN = 120                            # at most this much of a client's header is quoted back


def split_host(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` as (host in lower case, IPv6 in brackets; port or None); None when it is not one."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        host, rest = value[:end + 1], value[end + 1:]
        if end < 0 or not _is_ip(host[1:-1]):
            return None
    elif value.count(":") > 1:                      # a bare IPv6 address (as given to --host) has no port
        return (f"[{value}]", None) if _is_ip(value) else None
    else:
        host, colon, port = value.partition(":")
        rest = colon + port
    if not host or (rest and not re.fullmatch(r":[0-9]{1,5}", rest)):
        return None
    port = int(rest[1:]) if rest else None
    return (host, port) if port is None or port < 65536 else None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _same_place(a: tuple[str, int | None], a_scheme: str, b: tuple[str, int | None], b_scheme: str) -> bool:
    """Host and port equal, a scheme's default port counting as none (a proxy may end TLS in front of us)."""
    def norm(hp, scheme):
        return hp[0], None if hp[1] == DEFAULT_PORTS.get(scheme) else hp[1]
    return norm(a, a_scheme) == norm(b, b_scheme)


def cookie_name(token: str) -> str:
    """Per token, so two studios on one machine (cookies ignore the port) do not overwrite each other's."""
    return "danqing_" + hashlib.sha256(b"name:" + token.encode()).hexdigest()[:12]


def cookie_value(token: str) -> str:
    """What the cookie holds: derived from the token, never the token itself."""
    return hmac.new(token.encode(), b"danqing studio session", hashlib.sha256).hexdigest()


def _equal(given: str | None, want: str | None) -> bool:
    return given is not None and want is not None and hmac.compare_digest(given.encode("utf-8", "replace"),
                                                                          want.encode("utf-8", "replace"))


class Guard:
    """The checks above, in order: Host (400), token (401), origin (403), size (413)."""

    def __init__(self, app, *, page_token: str, token: str | None = None, allowed_hosts: list[str] | None = None,
                 max_body: int = MAX_BODY, max_json: int = MAX_JSON):
        self.app, self.page_token, self.token = app, page_token, token
        self.hosts = None
        if allowed_hosts:
            self.hosts = [h for h in map(split_host, allowed_hosts) if h is not None]
            self.shown = ", ".join(h if p is None else f"{h}:{p}" for h, p in self.hosts)
        self.max_body, self.max_json = max_body, max_json
        self.cookie = (cookie_name(token), cookie_value(token)) if token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._host(scope, headers)
        if refusal is None and self.token and scope["path"] == "/" and scope["method"] in ("GET", "HEAD") \
                and b"token=" in scope.get("query_string", b""):
            return await self._sign_in(scope, send)
        refusal = refusal or self._auth(scope, headers) or self._origin(scope, headers)
        if refusal is not None:
            return await reply(send, *refusal)
        multipart = headers.get("content-type", "").lower().startswith("multipart/form-data")
        limit = self.max_body if multipart else self.max_json
        too_big = (413, f"the request body is larger than {_mb(limit)}")
        length = headers.get("content-length")
        if length is not None:
            if not re.fullmatch(r"[0-9]{1,18}", length.strip()):
                return await reply(send, 400, "the Content-Length header is not a number")
            if int(length) > limit:
                return await reply(send, *too_big)
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(*too_big)
            return message

        async def watched(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not any(k.lower() == b"x-content-type-options" for k, _ in message.get("headers", ())):
                    message = {**message, "headers": [*message.get("headers", ()), (b"x-content-type-options",
                                                                                     b"nosniff")]}
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except HTTPException as e:                 # the limit, hit while reading outside a route's own handlers
            if started or e.status_code != 413:
                raise
            await reply(send, *too_big)

    def _host(self, scope, headers) -> tuple | None:
        if self.hosts is None:
            return None
        given = headers.get("host", "")
        found = split_host(given)
        if found is not None:
            port = found[1] if found[1] is not None else DEFAULT_PORTS.get(scope.get("scheme", "http"))
            if any(h == found[0] and p in (None, port) for h, p in self.hosts):
                return None
        return 400, (f"this studio answers to {self.shown}, not to the host {given[:SHOWN]!r}: open it by one of "
                     "those addresses (other names are refused against DNS rebinding)")

    def _auth(self, scope, headers) -> tuple | None:
        path = scope["path"]
        if not self.token or not (path == "/api" or path.startswith("/api/")):
            return None
        bearer = headers.get("authorization", "")
        if bearer[:7].lower() == "bearer " and _equal(bearer[7:].strip(), self.token):
            return None
        if _equal(headers.get(TOKEN_HEADER), self.token):
            return None
        if self.cookie and _equal(_cookies(headers.get("cookie", "")).get(self.cookie[0]), self.cookie[1]):
            return None
        return 401, ("this studio needs its token (danqing studio --token): open the studio once as "
                     "/?token=TOKEN, or send the header `Authorization: Bearer TOKEN`"), \
            [(b"www-authenticate", b'Bearer realm="danqing studio"')]

    def _origin(self, scope, headers) -> tuple | None:
        if scope["method"] not in UNSAFE:
            return None
        if any(_equal(headers.get(TOKEN_HEADER), t) for t in (self.page_token, self.token)):
            return None
        bearer = headers.get("authorization", "")
        if self.token and bearer[:7].lower() == "bearer " and _equal(bearer[7:].strip(), self.token):
            return None
        named = headers.get("origin")
        source = named if named is not None else headers.get("referer")
        if source is None:                           # no page named it: a script; but a browser may say "cross-site"
            if headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none"):
                return None
            source = f"a {headers['sec-fetch-site']} page"
        else:
            parts = urlsplit(source.strip())
            try:
                theirs = (parts.hostname or "", parts.port)
            except ValueError:
                theirs = ("", None)
            if parts.hostname and ":" in parts.hostname:
                theirs = (f"[{parts.hostname}]", theirs[1])
            ours = split_host(headers.get("host", ""))
            if theirs[0] and ours is not None and _same_place(theirs, parts.scheme, ours, scope.get("scheme", "http")):
                return None
        return 403, (f"refused: this request comes from another web page ({source[:SHOWN]}), not from the "
                     "studio's own page. Use the studio's page; a script sends no Origin header, or sends "
                     "`X-Danqing-Token` with the studio's token")

    async def _sign_in(self, scope, send):
        """``/?token=T``: the right token becomes a cookie (HttpOnly, this site only) and the address loses it."""
        given = parse_qs(scope["query_string"].decode("latin-1")).get("token", [""])[0]
        headers = [(b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer")]
        if _equal(given, self.token) and self.cookie:
            secure = "; Secure" if scope.get("scheme") == "https" else ""
            headers.append((b"set-cookie", f"{self.cookie[0]}={self.cookie[1]}; Path=/; HttpOnly; "
                                           f"SameSite=Strict{secure}".encode()))
            headers.append((b"location", b"/"))
        else:
            headers.append((b"location", b"/#token-refused"))
        await send({"type": "http.response.start", "status": 303, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def _cookies(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(";"):
        name, eq, value = part.strip().partition("=")
        if eq:
            out.setdefault(name, value)
    return out


def _mb(n: int) -> str:
    return f"{n / 1024 ** 2:g} MB" if n >= 1024 ** 2 else f"{n / 1024:g} KB"


async def reply(send, status: int, detail: str, extra: list[tuple[bytes, bytes]] = ()) -> None:
    """A JSON ``{"detail": ...}`` answer, as the API's other errors."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"), *extra]})
    await send({"type": "http.response.body", "body": body})
