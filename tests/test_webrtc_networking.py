"""WebRTC networking from the typed config: where host candidates are gathered, the 1:1 NAT's
public address advertised beside them, and the UDP port range viewers are given ports from (one
port per viewer: a full range is a clear 503, and a viewer that leaves frees its port)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from conftest import free_udp_pair
from whep_client import wait_until
from whep_fixtures import playing, whep_bench

from gateway.config import WebRtcConfig

PUBLIC = "203.0.113.7"  # TEST-NET-3: advertised, never reached


def candidates(sdp: str) -> list[dict[str, Any]]:
    out = []
    for line in sdp.splitlines():
        if not line.startswith("a=candidate:"):
            continue
        f = line.split()
        c = {"ip": f[4], "port": int(f[5]), "type": f[7]}
        if "raddr" in f:
            c["raddr"], c["rport"] = f[f.index("raddr") + 1], int(f[f.index("rport") + 1])
        out.append(c)
    return out


def without_public(sdp: str) -> str:
    """What the test's client is given: only loopback candidates (no packet leaves the host)."""
    return "\r\n".join(ln for ln in sdp.split("\r\n") if PUBLIC not in ln)


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_candidates_nat_address_and_port_range_come_from_the_config(
    tmp_path: Path, procs: Any
) -> None:
    low = free_udp_pair()
    config = WebRtcConfig(
        host_addresses=("127.0.0.1",),
        public_addresses=(PUBLIC,),
        udp_port_min=low,
        udp_port_max=low + 1,
        handshake_timeout=5.0,
    )
    async with whep_bench(tmp_path, procs, webrtc=config) as w:
        token = w.token("police", "officer")
        first, second, third = (w.client(token=token) for _ in range(3))
        for viewer in (first, second):
            assert await viewer.connect(w.http, answer_munge=without_public) == 201, viewer.reason
        ports = []
        for viewer in (first, second):
            assert viewer.answer is not None
            host, nat = candidates(viewer.answer)
            # A host candidate where the config says, and the NAT's public address on the
            # same port (a 1:1 NAT maps it one to one), related to that host candidate.
            assert host["type"] == "host" and host["ip"] == "127.0.0.1"
            assert nat == {"ip": PUBLIC, "port": host["port"], "type": "srflx",
                           "raddr": "127.0.0.1", "rport": host["port"]}  # fmt: skip
            ports.append(host["port"])
        assert sorted(ports) == [low, low + 1]  # one port per viewer, from the range
        await playing(first)
        await playing(second)

        # The range is full: the next viewer is told so, and the others play on.
        assert await third.connect(w.http) == 503
        assert f"{low}-{low + 1}" in third.reason
        before = second.received.frames
        await wait_until(lambda: second.received.frames > before + 10, 10, "the second plays on")

        # A viewer that leaves gives its port back to the next one.
        assert await first.delete(w.http, w.base) == 200
        await first.close()
        await wait_until(lambda: port_free(ports[0]), 5, "the first viewer's port to be freed")
        again = w.client(token=token)
        assert await again.connect(w.http, answer_munge=without_public) == 201, again.reason
        assert again.answer is not None
        assert candidates(again.answer)[0]["port"] == ports[0]
        await playing(again)
        for viewer in (second, third, again):
            await viewer.close()


WEBRTC = """
[webrtc]
host_addresses = ["10.0.0.5"]
public_addresses = ["203.0.113.7"]
udp_port_min = 20000
udp_port_max = 20099
ice_servers = ["stun:stun.council.example:3478", "turn:turn.council.example:3478?transport=udp"]
turn_username = "wall"
turn_credential = "static-secret"
"""


def test_the_networking_keys_are_typed_config_and_bad_ones_name_the_key(tmp_path: Path) -> None:
    from gateway.config import ConfigError, load_config
    from gateway.webrtc.ice import IceSettings, link_headers

    good = tmp_path / "good.toml"
    good.write_text(WEBRTC)
    wc = load_config(good, env={}).webrtc
    assert wc.host_addresses == ("10.0.0.5",) and wc.public_addresses == ("203.0.113.7",)
    assert (wc.udp_port_min, wc.udp_port_max) == (20000, 20099)
    # Browsers are told of STUN as it is and of TURN with the static credentials.
    stun, turn = link_headers(IceSettings.from_config(wc).ice_servers("police"))
    assert stun == '<stun:stun.council.example:3478>; rel="ice-server"'
    assert turn == (
        '<turn:turn.council.example:3478?transport=udp>; rel="ice-server"; '
        'username="wall"; credential="static-secret"; credential-type="password"'
    )
    # The environment overrides the file, as for every key.
    env = load_config(good, env={"FEEDGATE_WEBRTC__PUBLIC_ADDRESSES": "198.51.100.9"})
    assert env.webrtc.public_addresses == ("198.51.100.9",)
    for line, key in (
        ('public_addresses = ["gateway.example"]', "webrtc.public_addresses"),
        ('host_addresses = ["300.1.2.3"]', "webrtc.host_addresses"),
        ('ice_servers = ["https://stun.example"]', "webrtc.ice_servers"),
        ("udp_port_max = 19999", "webrtc.udp_port_max"),
        ("udp_port_min = 70000", "webrtc.udp_port_min"),
    ):
        bad = tmp_path / "bad.toml"
        name = line.split(" =")[0]
        bad.write_text("\n".join(ln for ln in WEBRTC.splitlines() if not ln.startswith(name + " "))
                       + "\n" + line + "\n")  # fmt: skip
        with pytest.raises(ConfigError) as err:
            load_config(bad, env={})
        assert str(bad) in str(err.value) and key in str(err.value), (line, str(err.value))
