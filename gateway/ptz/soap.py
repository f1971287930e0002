"""The server side of ONVIF's SOAP: parse a request, check its WS-Security UsernameToken,
render a reply or a fault. Sans-I/O: bytes and ``now`` in, values and bytes out.

The messages are the WSDLs ``onvif-zeep-async`` bundles, read by zeep itself: a request is
deserialized and a reply serialized through the binding's own operation, so the feedgate
facade and the camera fake speak exactly what the ONVIF client expects, with no hand-written
XML per message. Requests are bounded (:data:`MAX_SOAP_BYTES`) and parsed without DTDs,
entities or network access before zeep sees them.

WS-Security UsernameToken digest: ``PasswordDigest = Base64(SHA1(nonce + created +
password))``; ``Created`` must be within :data:`MAX_SKEW_S` of our clock and a nonce is
accepted once (:class:`NonceCache`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lxml import etree

MAX_SOAP_BYTES = 64 * 1024
MAX_SKEW_S = 300.0
MAX_NONCES = 10_000

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DIGEST_TYPE = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordDigest"
)
TER = "http://www.onvif.org/ver10/error"
PAN_TILT_SPACE = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace"
ZOOM_SPACE = "http://www.onvif.org/ver10/tptz/ZoomSpaces/PositionGenericSpace"

# service name -> (WSDL file, binding QName)
SERVICES: dict[str, tuple[str, str]] = {
    "device": ("devicemgmt.wsdl", "{http://www.onvif.org/ver10/device/wsdl}DeviceBinding"),
    "media": ("media.wsdl", "{http://www.onvif.org/ver10/media/wsdl}MediaBinding"),
    "ptz": ("ptz.wsdl", "{http://www.onvif.org/ver20/ptz/wsdl}PTZBinding"),
}
NAMESPACES = {
    "device": "http://www.onvif.org/ver10/device/wsdl",
    "media": "http://www.onvif.org/ver10/media/wsdl",
    "ptz": "http://www.onvif.org/ver20/ptz/wsdl",
}

_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False, remove_comments=True
)


class SoapFault(Exception):
    """Answer with a SOAP 1.2 fault: ``sender`` faults are the client's (HTTP 400), others
    ours or the device's (HTTP 500). ``subcodes`` are ONVIF's ``ter:`` codes."""

    def __init__(self, reason: str, *subcodes: str, sender: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.subcodes = subcodes
        self.sender = sender

    @property
    def http_status(self) -> int:
        return 400 if self.sender else 500


def not_authorized(reason: str = "Sender not authorized") -> SoapFault:
    return SoapFault(reason, "ter:NotAuthorized")


def invalid_arg(reason: str, sub: str = "ter:InvalidArgVal") -> SoapFault:
    return SoapFault(reason, "ter:InvalidArgVal", *(() if sub == "ter:InvalidArgVal" else (sub,)))


@dataclass(frozen=True)
class UsernameToken:
    username: str
    digest: bytes | None  # None: a password type other than digest
    nonce: bytes
    created: str


@dataclass(frozen=True)
class SoapCall:
    service: str
    operation: str
    params: dict[str, Any]
    token: UsernameToken | None


class NonceCache:
    """Nonces seen within the skew window, bounded; a replayed request is refused."""

    def __init__(self, limit: int = MAX_NONCES) -> None:
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._limit = limit

    def fresh(self, nonce: bytes, now: float) -> bool:
        while self._seen and (
            len(self._seen) >= self._limit or next(iter(self._seen.values())) < now - MAX_SKEW_S
        ):
            self._seen.popitem(last=False)
        if nonce in self._seen:
            return False
        self._seen[nonce] = now
        return True


def password_digest(nonce: bytes, created: str, password: str) -> bytes:
    return hashlib.sha1(nonce + created.encode() + password.encode()).digest()


def check_fresh(token: UsernameToken | None, now: float) -> UsernameToken:
    """A digest token whose ``Created`` is within :data:`MAX_SKEW_S` of ``now``."""
    if token is None:
        raise not_authorized("WS-Security UsernameToken required")
    if token.digest is None:
        raise not_authorized("only PasswordDigest is accepted")
    try:
        created = datetime.fromisoformat(token.created.replace("Z", "+00:00"))
    except ValueError:
        raise not_authorized("bad Created timestamp") from None
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    if abs(created.timestamp() - now) > MAX_SKEW_S:
        raise not_authorized("Created is too far from the device's clock")
    return token


def digest_ok(token: UsernameToken, password: str) -> bool:
    expected = password_digest(token.nonce, token.created, password)
    return token.digest is not None and hmac.compare_digest(expected, token.digest)


def verify_token(
    token: UsernameToken | None,
    password_for: Callable[[str], str | None],
    now: float,
    nonces: NonceCache,
) -> str:
    """The username if the digest proves the password; else a :class:`SoapFault`
    (NotAuthorized). ``password_for`` answers None for an unknown user."""
    tok = check_fresh(token, now)
    password = password_for(tok.username)
    if password is None or not digest_ok(tok, password):
        raise not_authorized()
    if not nonces.fresh(tok.nonce, now):
        raise not_authorized("nonce replayed")
    return tok.username


def import_onvif() -> None:
    """Import ``onvif.client``, which calls ``logging.basicConfig()`` at import time: with no
    root handler yet it would configure the application's logging (INFO, to stderr) behind its
    back. A placeholder handler makes that call a no-op."""
    import logging
    import sys

    if "onvif.client" in sys.modules:
        return
    root = logging.getLogger()
    guard = None if root.handlers else logging.NullHandler()
    if guard is not None:
        root.addHandler(guard)
    try:
        import onvif.client  # noqa: F401
    finally:
        if guard is not None:
            root.removeHandler(guard)


class SoapCodec:
    """The ONVIF device, media and PTZ bindings, loaded once (blocking: call :meth:`load` in a
    thread at start)."""

    def __init__(self, bindings: Mapping[str, Any]) -> None:
        self._bindings = dict(bindings)
        self._by_body: dict[tuple[str, str], tuple[str, Any]] = {}
        for service, binding in self._bindings.items():
            for name, op in binding._operations.items():
                qname = op.input.body.qname
                self._by_body[(service, qname.text)] = (name, op)

    @classmethod
    def load(cls, wsdl_dir: str | None = None) -> SoapCodec:
        import_onvif()
        from onvif.client import _WSDL_PATH  # the WSDLs the client bundles
        from onvif.settings import DEFAULT_SETTINGS
        from onvif.transport import ASYNC_TRANSPORT
        from zeep.wsdl import Document

        base = Path(wsdl_dir or _WSDL_PATH)
        bindings = {}
        for service, (wsdl, binding) in SERVICES.items():
            doc = Document(str(base / wsdl), ASYNC_TRANSPORT, settings=DEFAULT_SETTINGS)
            bindings[service] = doc.bindings[binding]
        return cls(bindings)

    def operations(self, service: str) -> list[str]:
        return list(self._bindings[service]._operations)

    def parse(self, service: str, body: bytes) -> SoapCall:
        """One request to ``service``; a :class:`SoapFault` for anything malformed."""
        if len(body) > MAX_SOAP_BYTES:
            raise SoapFault(f"request larger than {MAX_SOAP_BYTES} bytes", "ter:InvalidArgs")
        if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
            raise SoapFault("DTDs are not accepted", "ter:InvalidArgs")
        try:
            envelope = etree.fromstring(body, _PARSER)
        except etree.XMLSyntaxError as exc:
            raise SoapFault(f"malformed XML: {exc.msg}", "ter:InvalidArgs") from None
        if envelope.tag != f"{{{SOAP12}}}Envelope":
            raise SoapFault("not a SOAP 1.2 envelope", "ter:InvalidArgs")
        body_el = envelope.find(f"{{{SOAP12}}}Body")
        if body_el is None or len(body_el) != 1:
            raise SoapFault("the Body must hold exactly one request", "ter:InvalidArgs")
        entry = self._by_body.get((service, body_el[0].tag))
        if entry is None:
            raise SoapFault(
                f"{etree.QName(body_el[0]).localname} is not an operation of this service",
                "ter:ActionNotSupported",
            )
        name, op = entry
        try:
            # The request element itself (ONVIF's document/literal bindings are not body
            # wrapped), never unwrapped: zeep's deserialize() returns a message with a single
            # field as that field's bare value.
            value = op.input._deserialize_body(body_el)["body"]
        except Exception as exc:  # zeep raises assorted types for bad values
            raise invalid_arg(f"{name}: {exc}") from None
        from zeep.helpers import serialize_object

        params = serialize_object(value, dict) if value is not None else {}  # type: ignore[no-untyped-call]
        if not isinstance(params, dict):
            params = {}
        return SoapCall(service, name, params, _username_token(envelope))

    def reply(self, service: str, operation: str, values: Mapping[str, Any] | None = None) -> bytes:
        op = self._bindings[service]._operations[operation]
        message = op.output.serialize(**dict(values or {}))
        return bytes(etree.tostring(message.content, xml_declaration=True, encoding="utf-8"))

    def request(self, service: str, operation: str, values: Mapping[str, Any]) -> bytes:
        """A request envelope (for tests and benchmarks that speak SOAP by hand)."""
        op = self._bindings[service]._operations[operation]
        message = op.input.serialize(**dict(values))
        return bytes(etree.tostring(message.content, xml_declaration=True, encoding="utf-8"))


def profile(token: str, name: str, width: int, height: int, *, ptz: bool = True) -> dict[str, Any]:
    """A media profile with video source, H.264 encoder and PTZ configurations."""
    return {
        "token": token,
        "fixed": True,
        "Name": name,
        "VideoSourceConfiguration": {
            "token": "video_source_config",
            "Name": "video source",
            "UseCount": 1,
            "SourceToken": "video_source",
            "Bounds": {"x": 0, "y": 0, "width": width, "height": height},
        },
        "VideoEncoderConfiguration": {
            "token": "video_encoder_config",
            "Name": "H.264",
            "UseCount": 1,
            "Encoding": "H264",
            "Resolution": {"Width": width, "Height": height},
            "Quality": 5,
            "RateControl": {"FrameRateLimit": 10, "EncodingInterval": 1, "BitrateLimit": 500},
            "H264": {"GovLength": 10, "H264Profile": "Main"},
            "Multicast": {
                "Address": {"Type": "IPv4", "IPv4Address": "0.0.0.0"},
                "Port": 0,
                "TTL": 0,
                "AutoStart": False,
            },
            "SessionTimeout": timedelta(seconds=60),
        },
        "PTZConfiguration": None
        if not ptz
        else {
            "token": "ptz_config",
            "Name": "PTZ",
            "UseCount": 1,
            "NodeToken": "ptz_node",
            "DefaultContinuousPanTiltVelocitySpace": (
                "http://www.onvif.org/ver10/tptz/PanTiltSpaces/VelocityGenericSpace"
            ),
            "DefaultPTZTimeout": timedelta(seconds=1),
            "PanTiltLimits": {
                "Range": {
                    "URI": PAN_TILT_SPACE,
                    "XRange": {"Min": -1.0, "Max": 1.0},
                    "YRange": {"Min": -1.0, "Max": 1.0},
                }
            },
            "ZoomLimits": {"Range": {"URI": ZOOM_SPACE, "XRange": {"Min": 0.0, "Max": 1.0}}},
        },
    }


def date_and_time(now: float) -> dict[str, Any]:
    """GetSystemDateAndTime's answer for the clock reading ``now``."""
    t = datetime.fromtimestamp(now, UTC)
    return {
        "SystemDateAndTime": {
            "DateTimeType": "NTP",
            "DaylightSavings": False,
            "UTCDateTime": {
                "Date": {"Year": t.year, "Month": t.month, "Day": t.day},
                "Time": {"Hour": t.hour, "Minute": t.minute, "Second": t.second},
            },
        }
    }


def vector(pan: float, tilt: float, zoom: float) -> dict[str, Any]:
    """A tt:PTZVector in the generic position spaces."""
    return {
        "PanTilt": {"x": pan, "y": tilt, "space": PAN_TILT_SPACE},
        "Zoom": {"x": zoom, "space": ZOOM_SPACE},
    }


def fault(f: SoapFault) -> bytes:
    env = etree.Element(f"{{{SOAP12}}}Envelope", nsmap={"env": SOAP12, "ter": TER})
    body = etree.SubElement(env, f"{{{SOAP12}}}Body")
    fl = etree.SubElement(body, f"{{{SOAP12}}}Fault")
    code = etree.SubElement(fl, f"{{{SOAP12}}}Code")
    etree.SubElement(code, f"{{{SOAP12}}}Value").text = "env:Sender" if f.sender else "env:Receiver"
    parent = code
    for sub in f.subcodes:
        parent = etree.SubElement(parent, f"{{{SOAP12}}}Subcode")
        etree.SubElement(parent, f"{{{SOAP12}}}Value").text = sub
    reason = etree.SubElement(fl, f"{{{SOAP12}}}Reason")
    text = etree.SubElement(reason, f"{{{SOAP12}}}Text")
    text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    text.text = f.reason[:512]
    return bytes(etree.tostring(env, xml_declaration=True, encoding="utf-8"))


def _username_token(envelope: Any) -> UsernameToken | None:
    tok = envelope.find(f"{{{SOAP12}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
    if tok is None:
        return None
    username = (tok.findtext(f"{{{WSSE}}}Username") or "").strip()
    pw = tok.find(f"{{{WSSE}}}Password")
    nonce_text = tok.findtext(f"{{{WSSE}}}Nonce") or ""
    created = (tok.findtext(f"{{{WSU}}}Created") or "").strip()
    digest: bytes | None = None
    try:
        nonce = base64.b64decode(nonce_text, validate=True)
        if pw is not None and pw.get("Type") == DIGEST_TYPE:
            digest = base64.b64decode(pw.text or "", validate=True)
    except (binascii.Error, ValueError):
        raise not_authorized("bad Nonce or Password encoding") from None
    if len(username) > 256 or len(nonce) > 256:
        raise not_authorized("UsernameToken field too long")
    return UsernameToken(username, digest, nonce, created)


__all__ = [
    "MAX_SOAP_BYTES",
    "NAMESPACES",
    "PAN_TILT_SPACE",
    "ZOOM_SPACE",
    "NonceCache",
    "SoapCall",
    "SoapCodec",
    "SoapFault",
    "UsernameToken",
    "check_fresh",
    "date_and_time",
    "digest_ok",
    "fault",
    "import_onvif",
    "invalid_arg",
    "not_authorized",
    "password_digest",
    "profile",
    "vector",
    "verify_token",
]
