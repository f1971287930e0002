"""Playback's two tracks on one timeline (issue #13 scope 2, playaudio): an ONVIF replay client
sets up the pictures and the sound of a recording made by the gateway from a real ffmpeg camera
(H.264 and AAC). Every packet of both tracks carries ONVIF's extension with its capture time,
and each track's RTCP sender reports map its RTP time to that same capture time (what players
line the tracks up by); the first picture and the first sound of a PLAY are within 100 ms of
each other, after a PAUSE and a PLAY with a new Range (a seek) too; fast forward (Scale 2) and
key frames only (Frames: intra) send no sound."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from conftest import wait_for
from rtsp_probe import Probe
from test_playback_audio import first_sound, recorded

from gateway.protocols.onvif_rtp import datetime_from_ntp, read_replay_extension
from gateway.protocols.rtsp import InterleavedFrame, Response
from gateway.protocols.rtsp_headers import parse_rtp_info
from gateway.protocols.rtsp_replay import format_clock
from gateway.recording.index import RecordingIndex

ONVIF = (("Require", "onvif-replay"),)
RATES = {0: 90000, 2: 44100}  # RTP clock rate by interleaved channel: pictures, sound
SYNC = timedelta(milliseconds=100)


@dataclass
class Packet:
    channel: int
    seq: int
    ts: int
    captured: datetime  # its ONVIF extension's NTP time
    clean: bool
    cseq: int
    reported: datetime  # its RTP time through its track's last sender report


@dataclass
class TwoTrackProbe(Probe):
    """An ONVIF replay client of both tracks: each RTP packet's extension, and its RTP time
    mapped through the last sender report of its track."""

    packets: list[Packet] = field(default_factory=list)
    reports: dict[int, tuple[int, int]] = field(default_factory=dict)  # channel -> (NTP, RTP)
    unreported: int = 0  # packets that came before any report of their track

    async def _read(self) -> None:
        while data := await self.reader.read(65536):
            for event in self.parser.feed(data):
                if isinstance(event, Response):
                    self.responses.put_nowait(event)
                elif isinstance(event, InterleavedFrame):
                    self._frame(event.channel, event.payload)

    def _frame(self, channel: int, payload: bytes) -> None:
        if channel % 2:
            if payload[1] == 200:  # a sender report
                ntp = int.from_bytes(payload[8:16], "big")
                self.reports[channel - 1] = (ntp, int.from_bytes(payload[16:20], "big"))
            return
        ext = read_replay_extension(payload)
        assert ext is not None, "a replayed packet without ONVIF's extension"
        ts = int.from_bytes(payload[4:8], "big")
        report = self.reports.get(channel)
        if report is None:
            self.unreported += 1
            return
        sr_ntp, sr_ts = report
        delta = (ts - sr_ts + (1 << 31)) % (1 << 32) - (1 << 31)
        reported = datetime_from_ntp(sr_ntp) + timedelta(seconds=delta / RATES[channel])
        seq = int.from_bytes(payload[2:4], "big")
        self.packets.append(
            Packet(channel, seq, ts, ext.captured, ext.clean_point, ext.cseq, reported)
        )

    def of(self, cseq: int, channel: int) -> list[Packet]:
        return [p for p in self.packets if p.cseq == cseq and p.channel == channel]


def keyframe_at_or_before(index: RecordingIndex, t: datetime) -> datetime:
    return index.fragments_from("cam1", t, limit=1)[0].start


async def test_both_tracks_play_on_one_timeline_and_a_seek_keeps_them_together(
    tmp_path: Path, procs: Any
) -> None:
    async with recorded(tmp_path, procs, segments=4) as rec:
        gw = rec.gw
        probe = await TwoTrackProbe.connect("127.0.0.1", gw.port)
        try:
            base = f"rtsp://127.0.0.1:{gw.port}/cam1"
            # From a key frame inside a segment (GOP 1 s, segments 2 s), then from a segment's
            # first key frame.
            asked = rec.closed[1].start + timedelta(seconds=1.3)
            r = await probe.request("DESCRIBE", f"{base}?start={format_start(asked)}", ONVIF)
            assert r.status == 200, r
            assert b"m=audio 0 RTP/AVP 97" in r.body and b"MPEG4-GENERIC/44100/1" in r.body
            for track, channels in ((0, "0-1"), (1, "2-3")):
                r = await probe.request(
                    "SETUP",
                    f"{base}/trackID={track}",
                    (*ONVIF, ("Transport", f"RTP/AVP/TCP;unicast;interleaved={channels}")),
                )
                assert r.status == 200, (track, r)
            r = await probe.request("PLAY", base, (*ONVIF, ("Rate-Control", "no")))
            assert r.status == 200
            first_cseq = probe.cseq
            await wait_for(lambda: len(probe.of(first_cseq, 2)) > 100, 20, what="sound")
            check_together(probe, first_cseq, rec.index, keyframe_at_or_before(rec.index, asked), r)

            # PAUSE, then PLAY a new Range: the seek's pictures and sound start together again.
            assert (await probe.request("PAUSE", base, ONVIF)).status == 200
            again = rec.closed[3].start + timedelta(seconds=0.3)
            r = await probe.request(
                "PLAY", base, (*ONVIF, ("Range", f"clock={format_clock(again)}-"))
            )
            assert r.status == 200
            seek_cseq = probe.cseq
            await wait_for(lambda: len(probe.of(seek_cseq, 2)) > 100, 20, what="the seek's sound")
            key = keyframe_at_or_before(rec.index, again)
            assert r.headers.get("Range") == f"clock={format_clock(key)}-"
            check_together(probe, seek_cseq, rec.index, key, r)
            # Each track's RTP time runs on across the seek (a pause to the player).
            for channel in (0, 2):
                before = probe.of(first_cseq, channel)[-1].ts
                after = probe.of(seek_cseq, channel)[0].ts
                assert 0 < (after - before) % (1 << 32) < 1 << 31, channel

            # Fast forward and key frames only: pictures, no sound (ONVIF replay).
            for headers in ((("Scale", "2"),), (("Frames", "intra"),)):
                r = await probe.request(
                    "PLAY",
                    base,
                    (*ONVIF, ("Range", f"clock={format_clock(asked)}-"), *headers),
                )
                assert r.status == 200, headers
                cseq = probe.cseq
                await wait_for(lambda c=cseq: len(probe.of(c, 0)) > 30, 20, what="pictures")
                assert probe.of(cseq, 2) == [], headers
            assert probe.unreported == 0
        finally:
            await probe.close()


def format_start(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def check_together(
    probe: TwoTrackProbe, cseq: int, index: RecordingIndex, key: datetime, play: Response
) -> None:
    """The PLAY's packets: each one's RTP time reported at its capture time (within 1 ms), the
    first picture the key frame at or before the instant asked, the first sound the first one
    recorded from there, within 100 ms of it; the PLAY's RTP-Info names each track's first
    packet and its RTP time at the key frame's instant."""
    pictures, sound = probe.of(cseq & 0xFF, 0), probe.of(cseq & 0xFF, 2)
    assert pictures and sound
    for p in pictures + sound:
        assert abs(p.reported - p.captured) < timedelta(milliseconds=1), p
    assert pictures[0].captured == key and pictures[0].clean
    assert all(p.clean for p in sound)
    info = {e.url.rsplit("=", 1)[1]: e for e in parse_rtp_info(play.headers.get("RTP-Info", ""))}
    for track, first in (("0", pictures[0]), ("1", sound[0])):
        at_key = first.ts - round((first.captured - key).total_seconds() * RATES[first.channel])
        assert (info[track].seq, info[track].rtptime) == (first.seq, at_key % (1 << 32)), track
    recorded = first_sound(index, key)
    assert abs(sound[0].captured - recorded) < timedelta(milliseconds=1), (sound[0], recorded)
    print(f"first sound - first picture: {(sound[0].captured - key).total_seconds() * 1000:.1f} ms")
    assert abs(sound[0].captured - pictures[0].captured) < SYNC, (sound[0], pictures[0])
    # And they stay together: the sound keeps up with the pictures for the whole play.
    span = pictures[-1].captured - pictures[0].captured
    assert span > timedelta(seconds=1)
    heard = [p for p in sound if p.captured <= pictures[-1].captured]
    assert abs((heard[-1].captured - sound[0].captured) - span) < 2 * SYNC


async def test_a_session_set_up_live_then_played_by_clock_gets_the_recorded_sound(
    tmp_path: Path, procs: Any
) -> None:
    """A VMS sets up the live camera (pictures and its AAC), then its first PLAY asks for a
    clock time: the session plays the recording, sound included (the live second track was
    the same AAC as recorded), on one timeline."""
    async with recorded(tmp_path, procs, segments=3) as rec:
        gw = rec.gw
        probe = await TwoTrackProbe.connect("127.0.0.1", gw.port)
        try:
            base = f"rtsp://127.0.0.1:{gw.port}/cam1"
            r = await probe.request("DESCRIBE", base)
            assert r.status == 200 and b"m=audio" in r.body, r
            for track, channels in ((0, "0-1"), (1, "2-3")):
                r = await probe.request(
                    "SETUP",
                    f"{base}/trackID={track}",
                    (("Transport", f"RTP/AVP/TCP;unicast;interleaved={channels}"),),
                )
                assert r.status == 200, (track, r)
            asked = rec.closed[1].start + timedelta(seconds=1.2)
            r = await probe.request(
                "PLAY", base, (*ONVIF, ("Range", f"clock={format_clock(asked)}-"))
            )
            assert r.status == 200, r
            cseq = probe.cseq
            await wait_for(lambda: len(probe.of(cseq, 2)) > 100, 20, what="recorded sound")
            check_together(probe, cseq, rec.index, keyframe_at_or_before(rec.index, asked), r)
            assert probe.unreported == 0
        finally:
            await probe.close()
