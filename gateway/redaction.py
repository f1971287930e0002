"""Credentials never reach a log line: the one place they are redacted, for the whole process.

:func:`install` wraps the logging record factory, so every record any module creates (ours,
aiohttp's, grpc's) has its message, its formatted traceback and its stack redacted before any
handler sees it, whatever handlers are attached later (a test's capture included).
:func:`redact` is the same rewrite for text formatted elsewhere (a URL in an error, say).

What is redacted: bearer tokens (JWTs anywhere in the text), ``token=``/``password=``-style
query and form parameters, passwords in URLs (``rtsp://user:secret@host``), Basic/Bearer/Digest
credentials, the values of Authorization and Cookie headers, secrets in protobuf's text format
(``password: "..."``), and the password (digest or text)
and nonce of a WS-Security UsernameToken (ONVIF's SOAP, which zeep logs whole at DEBUG). A
redacted JWT keeps a short SHA-256 fingerprint, so two lines about the same token can still be
matched up.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

__all__ = ["REDACTED", "install", "redact"]

REDACTED = "<redacted>"

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
# scheme://user:password@host -> scheme://user:<redacted>@host
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@'\"]*):[^/\s@'\"]*@")
_SECRET_NAMES = (
    r"token|access_token|id_token|refresh_token|jwt|password|passwd|pass|pwd|secret"
    r"|api_key|apikey|client_secret|feedgate_token|sig|signature|response|cnonce"
)
# name=value in a query string, a form, a cookie or Digest parameters (quoted or not).
_PARAM = re.compile(
    rf"(?i)(?<![A-Za-z0-9_-])({_SECRET_NAMES})=(?!<redacted)(\"[^\"]*\"|[^&\s'\",;#)]*)"
)
# "name": "value" in JSON or a repr'd dict.
_JSON = re.compile(rf"(?i)([\"']({_SECRET_NAMES})[\"']\s*:\s*)([\"'])(?:(?!\3).)*\3")
# name: "value" in protobuf's text format (str() of a gRPC request: SetCameraOnvif's password).
_PROTO = re.compile(rf'(?i)(?<![\w"\'-])((?:\w+_)?(?:{_SECRET_NAMES}))(:\s*)"(?:[^"\\]|\\.)*"')
_HEADER_NAMES = r"(?:proxy-)?authorization|cookie|set-cookie"
# A header as ('Name', 'value') in a repr or "Name": "value" in JSON: the quoted value.
_QUOTED_HEADER = re.compile(rf"(?i)([\"'](?:{_HEADER_NAMES})[\"']\s*[,:]\s*)([\"'])(?:(?!\2).)*\2")
# A header as "Name: value" in a message: the rest of the line.
_HEADER = re.compile(rf"(?i)(?<![\"'\w-])({_HEADER_NAMES})(\s*:\s*)[^\r\n]*")
# <wsse:Password Type="...#PasswordDigest">...</wsse:Password>, <wsse:Nonce ...>...</wsse:Nonce>
_WSSE = re.compile(r"(?i)(<(?:[\w.-]+:)?(?:Password|Nonce)\b[^>]*>)(?!<redacted)[^<]*(?=</)")
_SCHEME_CREDS = re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9._~+/=-]{6,}")


def _jwt(m: re.Match[str]) -> str:
    digest = hashlib.sha256(m.group(0).encode()).hexdigest()[:8]
    return f"<redacted jwt {digest}>"


def redact(text: str) -> str:
    """``text`` with every credential in it replaced (see the module docstring)."""
    if not text:
        return text
    text = _JWT.sub(_jwt, text)
    text = _WSSE.sub(lambda m: m.group(1) + REDACTED, text)
    text = _QUOTED_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}{m.group(2)}", text)
    text = _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _SCHEME_CREDS.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
    text = _JSON.sub(lambda m: f"{m.group(1)}{m.group(3)}{REDACTED}{m.group(3)}", text)
    text = _PROTO.sub(lambda m: f'{m.group(1)}{m.group(2)}"{REDACTED}"', text)
    return _PARAM.sub(lambda m: f"{m.group(1)}={REDACTED}", text)


_formatter = logging.Formatter()


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:
        return  # a broken format string: logging reports that itself, and it holds no value
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        # Formatters reuse exc_text when it is set: the traceback is redacted once, here.
        record.exc_text = redact(_formatter.formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


_installed = False


def install() -> None:
    """Redact every log record this process creates from now on (idempotent)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
