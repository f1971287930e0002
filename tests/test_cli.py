"""The command line as an operator uses it: `feedgate demo`, `feedgate serve` with workers."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    frames_of,
    free_port,
    free_udp_pair,
    publish_argv,
    read_argv,
    wait_for,
)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return str(resp.read().decode())


async def _http_ok(url: str) -> bool:
    try:
        await asyncio.to_thread(_get, url)
        return True
    except OSError:
        return False


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


# The demo binds the default ports, so no other test that does may run beside it.
@pytest.mark.xdist_group("default-ports")
async def test_demo_serves_an_h264_stream_that_ffprobe_reads(procs):
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        pytest.skip("ffprobe not installed (ops/install.sh installs Debian's ffmpeg)")
    demo = await procs([sys.executable, "-m", "gateway.cli", "demo", "--duration", "60"])
    await wait_for(
        lambda: "feedgate demo borough is running" in demo.text or demo.proc.returncode is not None,
        30,
        what="the demo to start",
    )
    assert demo.proc.returncode is None, demo.text
    # The demo prints each partner's URL with its own token; the council owns this camera.
    match = re.search(r"(rtsp://127\.0\.0\.1:8554/high-street-north\?token=\S+)", demo.text)
    assert match, demo.text
    url = match.group(1)
    probe = None
    for _ in range(20):  # the simulated cameras take a moment to publish their first keyframe
        probe = await asyncio.create_subprocess_exec(
            ffprobe,
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-show_streams",
            "-of",
            "json",
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(probe.communicate(), 30)
        if probe.returncode == 0:
            break
        await asyncio.sleep(0.5)
    assert probe is not None and probe.returncode == 0, err.decode()
    streams = json.loads(out)["streams"]
    assert streams[0]["codec_name"] == "h264"
    assert streams[0]["width"] == 640
    # Without a token the same camera is refused.
    bare = await asyncio.create_subprocess_exec(
        ffprobe,
        "-v",
        "error",
        "-rtsp_transport",
        "tcp",
        url.split("?")[0],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(bare.communicate(), 30)
    assert bare.returncode != 0 and b"401" in err
    # The published figures are public: the link the demo prints works without a token.
    figures = re.search(r"published figures \(public\): (\S+)", demo.text)
    assert figures, demo.text
    page = await asyncio.to_thread(_get, figures.group(1))
    assert "<th>Police</th>" in page and "privacy masks" in page
    await _demo_console(demo.text)
    await _demo_ptz(demo.text)


async def _demo_ptz(text: str) -> None:
    """A newcomer steers one of the demo's PTZ cameras (FAKE ONVIF cameras) with the REST call
    the demo prints, as the police VMS, and the camera reports the position it was sent to."""
    token = re.search(r"Authorization: Bearer (\S+)'", text)
    url = re.search(r"(http://127\.0\.0\.1:8080/v1/cameras/\S+/ptz/move)", text)
    assert token and url, text
    headers = {"Authorization": f"Bearer {token.group(1)}", "Content-Type": "application/json"}

    def call(method: str, where: str, body: bytes | None = None) -> dict[str, Any]:
        req = urllib.request.Request(where, data=body, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=15) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    move = b'{"kind": "absolute", "pan": 0.5, "tilt": 0.2, "zoom": 0.3}'
    moved = await asyncio.to_thread(call, "POST", url.group(1), move)
    assert moved["lock"]["holder"]["tenant_kind"] == "police", moved
    status = await asyncio.to_thread(call, "GET", url.group(1).replace("/move", "/status"))
    assert status["position"] == {"pan": 0.5, "tilt": 0.2, "zoom": 0.3}, status


async def _demo_console(text: str) -> None:
    """The demo's console: one-time sign-in links for a council operator, a police officer and
    a shop's security desk; every still the council operator sees of Market Square has the
    homes on Church Row blacked out (a permanent mask for everyone)."""
    from console_site import Browserish

    links = re.findall(r"(http://127\.0\.0\.1:8080/console/login\?token=\S+)", text)
    assert len(links) == 3, text
    shop = Browserish("http://127.0.0.1:8080")
    cards = await asyncio.to_thread(shop.sign_in_with_link, links[2])
    assert "Westfield" in cards and 'data-camera="market-square"' in cards
    assert 'data-camera="station-forecourt"' not in cards  # not granted to the shop
    council = Browserish("http://127.0.0.1:8080")
    cards = await asyncio.to_thread(council.sign_in_with_link, links[0])
    assert 'data-camera="estate-block-a"' in cards  # granted by the housing association
    status, jpeg = 0, b""
    for _ in range(40):  # the simulated cameras may still be starting
        status, jpeg = await asyncio.to_thread(council.get, "/console/stills/market-square")
        if status == 200:
            break
        await asyncio.sleep(0.5)
    assert status == 200, jpeg[:200]
    import io

    import av

    with av.open(io.BytesIO(jpeg)) as still:
        gray = next(still.decode(video=0)).to_ndarray(format="gray")
    h, w = gray.shape
    homes = gray[int(h * 0.03) : int(h * 0.32), int(w * 0.03) : int(w * 0.42)]
    assert homes.max() < 40, homes.max()
    # The rest of the square is there: the PTZ camera's scene, brighter to the right, with a
    # white grid (which the mask hides at the top left).
    assert gray[int(h * 0.6) :, int(w * 0.5) :].max() > 100


async def test_serve_with_two_workers_relays_and_hands_off_publishers(tmp_path, procs):
    rtsp, http, rtp = free_port(), free_port(), free_udp_pair()
    cfg = tmp_path / "feedgate.toml"
    cfg.write_text(
        f'[rtsp]\nhost = "127.0.0.1"\nport = {rtsp}\nrtp_port = {rtp}\nworkers = 2\n'
        f'[http]\nhost = "127.0.0.1"\nport = {http}\n'
        '[[cameras]]\nid = "cam1"\nsource = "push"\n'
    )
    server = await procs([sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg)])
    metrics_url = f"http://127.0.0.1:{http}/metrics"
    await wait_for(lambda: "worker 1 ready" in server.text, 30, what="both workers")
    assert await _http_ok(metrics_url)
    url = f"rtsp://127.0.0.1:{rtsp}/cam1"
    # SO_REUSEPORT spreads connections by port hash: publish until one lands on the secondary
    # and is handed to the primary. Each new publisher replaces the last.
    for _ in range(12):
        before = server.text.count("publishing cam1")
        pub = await procs(publish_argv(url))
        # This publisher is in (on either worker) before the next one replaces it.
        await wait_for(
            lambda b=before: (
                server.text.count("publishing cam1") > b or "handed to the primary" in server.text
            ),
            20,
            what="publishing",
        )
        if "handed to the primary" in server.text:
            break
        pub.kill()
        await pub.wait(10)
    assert "handed to the primary" in server.text, server.text[-3000:]
    viewers = [await procs(read_argv(url, seconds=3, decode=False)) for _ in range(8)]
    codes = await asyncio.gather(*(v.wait(60) for v in viewers))
    assert codes == [0] * 8, [v.text for v in viewers]
    assert min(frames_of(v.text) for v in viewers) >= 60
    text = await asyncio.to_thread(_get, metrics_url)
    assert _metric(text, "feedgate_workers") == 2
    # Readers on both workers: the secondary relayed the camera from the primary.
    assert "w1 gateway.stream.hub: path cam1: source pull" in server.text


def test_bad_config_names_file_key_and_reason(tmp_path):
    import subprocess

    cfg = tmp_path / "bad.toml"
    cfg.write_text('[rtsp]\nport = "eighty"\n')
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert f"{cfg}: rtsp.port: expected an integer, got 'eighty'" in out.stderr


def test_example_config_lists_every_key_with_its_default():
    """ops/config/example.toml is the reference: every key of every section, at its default."""
    import dataclasses
    import tomllib

    from gateway.config import Config, load_config

    example = Path(__file__).resolve().parents[1] / "ops" / "config" / "example.toml"
    raw = tomllib.loads(example.read_text())
    loaded, defaults = load_config(example, env={}), Config()
    names = [f.name for f in dataclasses.fields(Config) if f.name != "cameras"]
    sections = [n for n in names if dataclasses.is_dataclass(getattr(defaults, n))]
    for key in set(names) - set(sections):
        assert raw[key] == getattr(defaults, key), key
    for section in sections:
        fields = {f.name for f in dataclasses.fields(getattr(defaults, section))}
        assert set(raw[section]) == fields, section
        assert getattr(loaded, section) == getattr(defaults, section), section
