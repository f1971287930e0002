"""The demo's camera simulator: a second, internal gateway standing in for the borough's IP
cameras. Like a real camera it listens on loopback only and asks for Digest credentials, from
its viewers (the gateway's pulls) and its encoders alike, so nobody else on the machine can
pull the unmasked originals past the gateway."""

from __future__ import annotations

import time

from gateway.config import CameraConfig, Config, HttpConfig, LogLevel, RtspConfig
from gateway.protocols.rtsp import RtspError
from gateway.protocols.rtsp_auth import DigestChallenger, DigestCredentials, parse_authorization
from gateway.rtsp.hooks import AccessCheck, Authorizer
from gateway.rtsp.reply import RtspReply

SIMULATOR_HOST = "127.0.0.1"
SIMULATOR_PORT = 8654
SIMULATOR_RTP_PORT = 8100
REALM = "feedgate camera simulator"


def digest_guard(username: str, password: str) -> Authorizer:
    """Allow a request only with Digest credentials for ``username``/``password``, as an IP
    camera does; nonces are bound to their connection."""
    challenger = DigestChallenger()

    async def authorize(check: AccessCheck) -> RtspReply | None:
        now = time.time()
        value = check.request.headers.get("Authorization")
        if value is not None:
            try:
                creds = parse_authorization(value)
            except RtspError:
                creds = None
            if (
                isinstance(creds, DigestCredentials)
                and creds.username == username
                and challenger.verify_digest(
                    creds, check.request.method, password, now, bind=check.connection
                )
            ):
                return None
        headers = challenger.www_authenticate_headers(
            REALM, now, basic=False, bind=check.connection
        )
        return RtspReply(401, "camera credentials needed", headers)

    return authorize


def simulator_config(paths: list[str], log_level: LogLevel) -> Config:
    return Config(
        rtsp=RtspConfig(host=SIMULATOR_HOST, port=SIMULATOR_PORT, rtp_port=SIMULATOR_RTP_PORT),
        http=HttpConfig(host=SIMULATOR_HOST, port=0),
        cameras=tuple(CameraConfig(id=p, name=f"simulated {p}") for p in paths),
        log_level=log_level,
    )


def simulator_credentials(config: Config) -> tuple[str, str] | None:
    """The credentials the config's pulled demo cameras use for the simulator (all the same)."""
    for cam in config.cameras:
        if not cam.is_push and f":{SIMULATOR_PORT}/" in cam.source and cam.username:
            return cam.username, cam.password or ""
    return None
