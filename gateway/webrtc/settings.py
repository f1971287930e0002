"""The ``[webrtc]`` config section: WHEP viewers' networking and bounds.

Kept apart from :mod:`gateway.config` (which imports it) so WebRTC's knobs live with the code
that reads them."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic.dataclasses import dataclass

from gateway.configtypes import STRICT, Port, Seconds, comma_list


def _ip_addresses(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
    return values


def _ice_urls(values: tuple[str, ...]) -> tuple[str, ...]:
    for url in values:
        scheme, _, rest = url.partition(":")
        host = rest.split("?", 1)[0]
        if scheme not in ("stun", "stuns", "turn", "turns") or not host or host.startswith("/"):
            raise ValueError(f"{url!r} is not a stun:, stuns:, turn: or turns: URL (RFC 7064/5)")
        if any(c in url for c in ' <>"\\,;'):
            raise ValueError(f"{url!r} has characters a Link header cannot carry")
    return values


IpAddresses = Annotated[tuple[str, ...], BeforeValidator(comma_list), AfterValidator(_ip_addresses)]
IceUrls = Annotated[tuple[str, ...], BeforeValidator(comma_list), AfterValidator(_ice_urls)]


@dataclass(frozen=True, config=STRICT)
class WebRtcConfig:
    """WebRTC viewers (WHEP) on the HTTP server: networking for browsers, and the bounds."""

    enabled: bool = True
    # Addresses to gather host candidates on ([] = every non-loopback IPv4 address).
    host_addresses: IpAddresses = ()
    # A 1:1 NAT's public address(es): advertised with each host candidate's port.
    public_addresses: IpAddresses = ()
    # One UDP port per viewer from this range (open it in the firewall); 0 and 0: ephemeral.
    udp_port_min: Port = 20000
    udp_port_max: Port = 20999
    # STUN/TURN servers announced to browsers (Link headers), e.g. "stun:stun.example:3478".
    ice_servers: IceUrls = ()
    turn_username: str = ""
    turn_credential: str = ""
    # coturn's static-auth-secret: each viewer gets its own TURN credentials for turn_ttl.
    turn_secret: str = ""
    turn_ttl: Seconds = 3600.0
    # ICE and DTLS must complete within this, or the session ends and its port is freed.
    handshake_timeout: Seconds = 10.0
    max_sessions: Annotated[int, Field(ge=1)] = 1000
    max_pending: Annotated[int, Field(ge=1)] = 256  # connecting at once, this process
    max_pending_per_tenant: Annotated[int, Field(ge=1)] = 32
    # "shared": each access unit packed once per camera, SRTP per viewer; "aiortc": aiortc's
    # RTCRtpSender packs and sends for each viewer on its own (the benchmark's baseline).
    sender: Literal["shared", "aiortc"] = "shared"
