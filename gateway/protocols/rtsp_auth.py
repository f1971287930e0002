"""RTSP authentication (RFC 2326 §D / RFC 2617 Basic and Digest), sans-I/O.

Server side issues Digest challenges whose nonces carry their own timestamp and
an HMAC over it and over what they are bound to (the client's connection), so a
nonce needs no memory until it is used; a qop=auth answer's nc must then rise
(replays are refused). Client side mirrors what ffmpeg sends, since ffmpeg and
VLC (live555) are the peers that matter.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gateway.protocols.rtsp import RtspError

__all__ = [
    "BasicCredentials",
    "Challenge",
    "DigestChallenger",
    "DigestCredentials",
    "NonceStatus",
    "authorization_header",
    "parse_authorization",
    "parse_www_authenticate",
]


@dataclass
class BasicCredentials:
    username: str
    password: str


@dataclass
class DigestCredentials:
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None


@dataclass
class Challenge:
    scheme: str  # lower-cased: "basic", "digest", ...
    params: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- tokenizer

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_OWS = re.compile(r"[ \t]*")
_SCHEME = re.compile(_TOKEN)
# name = token | quoted-string; the lookahead keeps "Basic realm=..." after a
# comma from being read as a parameter of the previous challenge.
_PARAM = re.compile(rf"({_TOKEN})[ \t]*=[ \t]*(?:({_TOKEN})|\"((?:[^\"\\]|\\.)*)\")", re.DOTALL)
_PARAM_START = re.compile(rf"{_TOKEN}[ \t]*=")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)


def _bad(what: str) -> RtspError:
    return RtspError(400, what)


def _skip(value: str, pos: int) -> int:
    m = _OWS.match(value, pos)
    return m.end() if m else pos


def _parse_params(value: str, pos: int) -> tuple[dict[str, str], int]:
    """Parse ``a=b, c="d"`` from ``pos``; stop before a token that starts a new challenge."""
    params: dict[str, str] = {}
    while True:
        pos = _skip(value, pos)
        while pos < len(value) and value[pos] == ",":
            pos = _skip(value, pos + 1)
        if pos >= len(value) or not _PARAM_START.match(value, pos):
            return params, pos
        m = _PARAM.match(value, pos)
        if m is None:
            raise _bad("malformed auth parameter")
        name = m.group(1).lower()
        if name in params:
            raise _bad(f"duplicate auth parameter {name!r}")
        params[name] = m.group(2) if m.group(2) is not None else _UNESCAPE.sub(r"\1", m.group(3))
        pos = _skip(value, m.end())
        if pos < len(value) and value[pos] != ",":
            raise _bad("junk after auth parameter")


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


# --------------------------------------------------------------------------- server side


def parse_authorization(value: str) -> BasicCredentials | DigestCredentials:
    """Parse an Authorization header.

    Junk is RtspError(400); a well-formed but unsupported scheme (Bearer, ...)
    is RtspError(401) so the server re-challenges instead of failing hard.
    """
    value = value.strip()
    m = _SCHEME.match(value)
    if m is None:
        raise _bad("malformed Authorization header")
    scheme = m.group(0).lower()
    rest = value[m.end() :]
    if rest and rest[0] not in " \t":
        raise _bad("malformed Authorization header")
    rest = rest.strip()
    if scheme == "basic":
        if not _TOKEN68.fullmatch(rest):
            raise _bad("malformed Basic credentials")
        try:
            raw = base64.b64decode(rest, validate=True)
        except (binascii.Error, ValueError):
            raise _bad("invalid base64 in Basic credentials") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")  # pre-RFC 7617 clients send ISO-8859-1
        username, colon, password = text.partition(":")
        if not colon:
            raise _bad("Basic credentials without ':'")
        return BasicCredentials(username, password)
    if scheme == "digest":
        params, pos = _parse_params(rest, 0)
        if pos != len(rest):
            raise _bad("junk in Digest credentials")
        missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in params]
        if missing:
            raise _bad(f"Digest credentials missing {', '.join(missing)}")
        qop = params.get("qop")
        if qop is not None and ("nc" not in params or "cnonce" not in params):
            raise _bad("Digest qop without nc/cnonce")
        return DigestCredentials(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=params["response"],
            algorithm=params.get("algorithm", "MD5"),
            opaque=params.get("opaque"),
            qop=qop,
            nc=params.get("nc"),
            cnonce=params.get("cnonce"),
        )
    raise RtspError(401, f"unsupported authorization scheme {m.group(0)!r}")


def _md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _digest_response(
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
    *,
    ha1: str | None = None,
) -> str:
    # Servers keep HA1 = MD5(user:realm:password), never the password itself.
    if ha1 is None:
        ha1 = _md5_hex(f"{username}:{realm}:{password}")
    ha2 = _md5_hex(f"{method}:{uri}")
    if qop is None:
        return _md5_hex(f"{ha1}:{nonce}:{ha2}")  # RFC 2069 compatibility, what live555 sends
    return _md5_hex(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


_NONCE = re.compile(r"([0-9a-f]{1,16})\.([0-9a-f]{16})\.([0-9a-f]{32})")
_NC = re.compile(r"[0-9A-Fa-f]{8}")

# A nonce is good for this long: long enough for DESCRIBE, SETUP and PLAY (and a reconnect),
# short enough that a captured one soon stops working. Clients told stale=TRUE re-answer.
NONCE_MAX_AGE = 60.0
# How many nonces' request counters are remembered at once (oldest forgotten first).
MAX_TRACKED_NONCES = 100_000


class NonceStatus(enum.Enum):
    FRESH = "fresh"
    STALE = "stale"  # ours and for this binding, but too old (or from the future)
    FOREIGN = "foreign"  # not ours, tampered with, or issued for another binding


class DigestChallenger:
    """Issues and verifies Digest nonces, and refuses replayed Digest answers.

    nonce = hex(ms timestamp) "." random "." HMAC-SHA256(secret, both and the binding)[:128
    bits]. The binding is whatever the caller ties a nonce to (the RTSP server: the client's
    connection), so a nonce is worthless on any other. Nonces themselves are stateless; what is
    remembered, per nonce and only once an answer with it was right, is the highest ``nc`` of
    a ``qop=auth`` answer: an answer whose ``nc`` does not increase is a replay. Clients that
    ignore qop (RFC 2069: live555, GStreamer) are held by the binding and the nonce's short
    life instead.

    ``now`` is whatever clock the caller uses consistently (time.time() or time.monotonic());
    a restart with a fresh secret merely makes old nonces foreign, which clients handle by
    answering the new challenge.
    """

    def __init__(
        self,
        secret: bytes | None = None,
        *,
        max_age: float = NONCE_MAX_AGE,
        max_tracked: int = MAX_TRACKED_NONCES,
    ) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self.max_age = max_age
        self._max_tracked = max_tracked
        self._counts: OrderedDict[str, int] = OrderedDict()  # nonce -> highest nc accepted

    def _sign(self, stamp: str, salt: str, bind: str) -> str:
        msg = f"{stamp}.{salt}.{bind}".encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[:32]

    def make_nonce(self, now: float, bind: str = "") -> str:
        stamp = f"{max(int(now * 1000), 0):x}"
        salt = secrets.token_hex(8)
        return f"{stamp}.{salt}.{self._sign(stamp, salt, bind)}"

    def nonce_status(
        self, nonce: str, now: float, max_age: float | None = None, bind: str = ""
    ) -> NonceStatus:
        m = _NONCE.fullmatch(nonce)
        if m is None:
            return NonceStatus.FOREIGN
        stamp, salt, mac = m.groups()
        if not hmac.compare_digest(mac, self._sign(stamp, salt, bind)):
            return NonceStatus.FOREIGN
        age = now - int(stamp, 16) / 1000.0
        # A little negative age is tolerated for callers using a wall clock that stepped.
        fresh = -5.0 <= age <= (self.max_age if max_age is None else max_age)
        return NonceStatus.FRESH if fresh else NonceStatus.STALE

    def check_nonce(
        self, nonce: str, now: float, max_age: float | None = None, bind: str = ""
    ) -> bool:
        return self.nonce_status(nonce, now, max_age, bind) is NonceStatus.FRESH

    def replayed(self, creds: DigestCredentials) -> bool:
        """A qop answer whose ``nc`` is not above the highest accepted with its nonce."""
        if creds.qop is None or creds.nc is None or not _NC.fullmatch(creds.nc):
            return False
        last = self._counts.get(creds.nonce)
        return last is not None and int(creds.nc, 16) <= last

    def _accepted(self, creds: DigestCredentials, now: float) -> None:
        if creds.qop is None or creds.nc is None:
            return
        counts = self._counts
        counts[creds.nonce] = int(creds.nc, 16)
        counts.move_to_end(creds.nonce, last=True)
        # Forget nonces too old to be accepted again, and the oldest past the bound.
        while counts:
            oldest = next(iter(counts))
            stamp = int(oldest.split(".", 1)[0], 16) / 1000.0  # a nonce we accepted: ours
            if len(counts) <= self._max_tracked and now - stamp <= self.max_age:
                break
            counts.popitem(last=False)

    def www_authenticate_headers(
        self,
        realm: str,
        now: float,
        stale: bool = False,
        basic: bool = True,
        *,
        bind: str = "",
        qop: bool = True,
    ) -> list[tuple[str, str]]:
        # qop="auth" is offered so clients that can (ffmpeg) count their requests and a
        # replay shows; live555/VLC and GStreamer ignore it and send the RFC 2069 form.
        digest = f"Digest realm={_quote(realm)}, nonce={_quote(self.make_nonce(now, bind))}"
        if qop:
            digest += ', qop="auth"'
        if stale:
            digest += ", stale=TRUE"
        headers = [("WWW-Authenticate", digest)]
        if basic:
            headers.append(("WWW-Authenticate", f"Basic realm={_quote(realm)}"))
        return headers

    def verify_digest(
        self,
        creds: DigestCredentials,
        method: str,
        password: str,
        now: float,
        *,
        realm: str | None = None,
        max_age: float | None = None,
        ha1: str | None = None,
        bind: str = "",
    ) -> bool:
        """True iff the response is right, the nonce is ours, fresh and for ``bind``, and (with
        qop) its ``nc`` is above any accepted before with this nonce.

        Does not compare ``creds.uri`` with the Request-URI: clients disagree
        about which URI they hash (ffmpeg the request's, some the base URL);
        the response still proves knowledge of the password for this nonce.
        """
        if creds.algorithm.upper() != "MD5":
            return False
        if realm is not None and creds.realm != realm:
            return False
        if not self.check_nonce(creds.nonce, now, max_age, bind):
            return False
        qop = creds.qop
        if qop is not None:
            if qop.lower() != "auth" or creds.nc is None or not _NC.fullmatch(creds.nc):
                return False
            if not creds.cnonce or self.replayed(creds):
                return False
        expected = _digest_response(
            creds.username,
            creds.realm,
            password,
            method,
            creds.uri,
            creds.nonce,
            qop,
            creds.nc,
            creds.cnonce,
            ha1=ha1.lower() if ha1 is not None else None,
        )
        try:
            given = creds.response.lower().encode("ascii")
        except UnicodeEncodeError:
            return False
        if not hmac.compare_digest(expected.encode("ascii"), given):
            return False
        self._accepted(creds, now)
        return True


# --------------------------------------------------------------------------- client side


def parse_www_authenticate(values: list[str]) -> list[Challenge]:
    """Parse WWW-Authenticate header values (each may hold several challenges)."""
    challenges: list[Challenge] = []
    for value in values:
        pos = 0
        while True:
            pos = _skip(value, pos)
            while pos < len(value) and value[pos] == ",":
                pos = _skip(value, pos + 1)
            if pos >= len(value):
                break
            m = _SCHEME.match(value, pos)
            if m is None:
                raise _bad("malformed WWW-Authenticate")
            challenge = Challenge(m.group(0).lower())
            pos = m.end()
            if pos < len(value) and value[pos] not in " \t,":
                raise _bad("malformed WWW-Authenticate")
            pos = _skip(value, pos)
            t68 = _TOKEN68.match(value, pos)
            after = _skip(value, t68.end()) if t68 is not None else -1
            if t68 is not None and (after == len(value) or value[after] == ","):
                # token68 form (e.g. "Negotiate abc=="); kept so nothing is lost.
                challenge.params[""] = t68.group(0)
                pos = after
            else:
                challenge.params, pos = _parse_params(value, pos)
            challenges.append(challenge)
    return challenges


def _pick_qop(offered: str | None) -> str | None:
    if offered is None:
        return None
    options = [q.strip().lower() for q in offered.split(",")]
    return "auth" if "auth" in options else None


def authorization_header(
    challenges: Iterable[Challenge],
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce_factory: Callable[[], str] = lambda: secrets.token_hex(8),
    nc: int = 1,
) -> str:
    """Answer the strongest challenge we support: Digest (MD5) if offered, else Basic.

    Output follows ffmpeg's format byte for byte (quoted algorithm/qop
    included), since servers in the wild are tested against it.
    """
    chosen: Challenge | None = None
    basic: Challenge | None = None
    for ch in challenges:
        if ch.scheme == "digest" and "nonce" in ch.params:
            alg = ch.params.get("algorithm", "MD5").upper()
            if alg == "MD5" and chosen is None:
                chosen = ch
        elif ch.scheme == "basic" and basic is None:
            basic = ch
    if chosen is not None:
        p = chosen.params
        realm = p.get("realm", "")
        nonce = p["nonce"]
        qop = _pick_qop(p.get("qop"))
        cnonce = cnonce_factory() if qop else None
        nc_text = f"{nc:08x}" if qop else None
        response = _digest_response(
            username, realm, password, method, uri, nonce, qop, nc_text, cnonce
        )
        parts = [
            f"username={_quote(username)}",
            f"realm={_quote(realm)}",
            f"nonce={_quote(nonce)}",
            f"uri={_quote(uri)}",
            f"response={_quote(response)}",
        ]
        if "algorithm" in p:
            parts.append(f"algorithm={_quote(p['algorithm'])}")
        if "opaque" in p:
            parts.append(f"opaque={_quote(p['opaque'])}")
        if qop and cnonce is not None and nc_text is not None:
            parts += [f"qop={_quote(qop)}", f"cnonce={_quote(cnonce)}", f"nc={nc_text}"]
        return "Digest " + ", ".join(parts)
    if basic is not None:
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        return f"Basic {token}"
    raise ValueError("no supported authentication challenge (need Digest MD5 or Basic)")
