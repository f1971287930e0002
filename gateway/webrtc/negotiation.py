"""SDP offer/answer for WHEP viewers, sans I/O: check a browser's offer, choose the H.264 payload
type that carries the camera's own stream, and write the answer.

The camera's stream is relayed as it is (no re-encoding), so the codec is not negotiable: the
offer must accept H.264 in packetization mode 1 in a profile whose decoder can decode the
camera's. The answer then names the camera's real ``profile-level-id`` when the offer lists that
profile (a Main camera answered as Main, not as baseline), or the offered profile that contains
it (Chromium lists High 4:4:4 Predictive, ``f4001f``, but not High: a High camera is answered on
that payload type, since a High 4:4:4 decoder decodes High). The level is the camera's own
(``level-asymmetry-allowed``).

Parsing and rendering are aiortc's (``aiortc.sdp``); this module bounds what reaches it and
turns every way an offer can be wrong into an ``OfferError`` with an HTTP status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aiortc.rtcdtlstransport import RTCDtlsFingerprint, RTCDtlsParameters
from aiortc.rtcicetransport import RTCIceCandidate, RTCIceParameters
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters
from aiortc.sdp import (
    GroupDescription,
    H264Profile,
    MediaDescription,
    SessionDescription,
    SsrcDescription,
    parse_h264_profile_level_id,
)

MAX_OFFER_BYTES = 64 * 1024
MAX_LINES = 4096
MAX_LINE_BYTES = 4096
MAX_MEDIA = 16
MAX_CANDIDATES = 64

# Which decoders decode a stream of each profile (RFC 6184 §8.1; Constrained Baseline is the
# common subset of Baseline, Main and Constrained High; High 4:4:4 Predictive decodes High).
_DECODED_BY: dict[H264Profile, tuple[H264Profile, ...]] = {
    H264Profile.PROFILE_CONSTRAINED_BASELINE: (
        H264Profile.PROFILE_CONSTRAINED_BASELINE,
        H264Profile.PROFILE_BASELINE,
        H264Profile.PROFILE_MAIN,
        H264Profile.PROFILE_CONSTRAINED_HIGH,
        H264Profile.PROFILE_HIGH,
        H264Profile.PROFILE_PREDICTIVE_HIGH_444,
    ),
    H264Profile.PROFILE_BASELINE: (H264Profile.PROFILE_BASELINE,),
    H264Profile.PROFILE_MAIN: (
        H264Profile.PROFILE_MAIN,
        H264Profile.PROFILE_HIGH,
        H264Profile.PROFILE_PREDICTIVE_HIGH_444,
    ),
    H264Profile.PROFILE_CONSTRAINED_HIGH: (
        H264Profile.PROFILE_CONSTRAINED_HIGH,
        H264Profile.PROFILE_HIGH,
        H264Profile.PROFILE_PREDICTIVE_HIGH_444,
    ),
    H264Profile.PROFILE_HIGH: (H264Profile.PROFILE_HIGH, H264Profile.PROFILE_PREDICTIVE_HIGH_444),
    H264Profile.PROFILE_PREDICTIVE_HIGH_444: (H264Profile.PROFILE_PREDICTIVE_HIGH_444,),
}
# The RTCP feedback we answer: NACK (retransmission from history) and PLI/FIR (the GOP cache).
_FEEDBACK = (("nack", None), ("nack", "pli"), ("ccm", "fir"))
_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")
_PROFILE_LEVEL_ID = re.compile(r"[0-9A-Fa-f]{6}")
_FINGERPRINT = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})+")


class OfferError(ValueError):
    """The offer cannot be answered: ``status`` is the HTTP status to reply with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Offer:
    """A checked offer: the one video section we will answer, and the rest to reject."""

    sdp: SessionDescription
    video: int  # index of the media section we send on
    mid: str
    ice: RTCIceParameters
    dtls: RTCDtlsParameters
    candidates: tuple[RTCIceCandidate, ...]
    candidates_complete: bool
    bundle: bool


@dataclass(frozen=True)
class Choice:
    payload_type: int
    profile_level_id: str
    feedback: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class LocalTransport:
    """What the answer says about our side of the transport."""

    ice: RTCIceParameters
    candidates: tuple[RTCIceCandidate, ...]
    fingerprints: tuple[RTCDtlsFingerprint, ...]
    dtls_role: str  # "client" (we connect: a=setup:active) or "server" (passive)


@dataclass(frozen=True)
class Stream:
    """The sending stream's identity in the answer."""

    ssrc: int
    cname: str
    stream_id: str
    track_id: str
    session_id: int = field(default=0)


# ---- the offer ---------------------------------------------------------------------------------


def parse_offer(body: bytes) -> Offer:
    """Check an offer's size and shape before aiortc parses it, then check what it says."""
    if len(body) > MAX_OFFER_BYTES:
        raise OfferError(413, f"offer larger than {MAX_OFFER_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise OfferError(400, "offer is not UTF-8 text") from None
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        raise OfferError(400, f"offer has more than {MAX_LINES} lines")
    media_lines = 0
    for line in lines:
        if len(line) > MAX_LINE_BYTES:
            raise OfferError(400, f"offer line longer than {MAX_LINE_BYTES} characters")
        if line.startswith("m="):
            media_lines += 1
        elif line and (len(line) < 2 or line[1] != "=" or not line[0].isalpha()):
            raise OfferError(400, f"not an SDP line: {line[:40]!r}")
    if not lines or lines[0].strip() != "v=0":
        raise OfferError(400, "offer does not start with v=0")
    if media_lines == 0:
        raise OfferError(422, "offer has no media sections")
    if media_lines > MAX_MEDIA:
        raise OfferError(400, f"offer has {media_lines} media sections (at most {MAX_MEDIA})")
    try:
        sdp = SessionDescription.parse("\r\n".join(lines) + "\r\n")
    except Exception as exc:  # aiortc's parser asserts and indexes: anything it raises
        raise OfferError(400, f"malformed SDP ({type(exc).__name__})") from None
    return _check(sdp)


def _check(sdp: SessionDescription) -> Offer:
    video = next(
        (
            i
            for i, m in enumerate(sdp.media)
            if m.kind == "video" and m.port != 0 and m.direction in (None, "recvonly", "sendrecv")
        ),
        None,
    )
    if video is None:
        raise OfferError(422, "offer has no video section that receives")
    media = sdp.media[video]
    if "SAVPF" not in media.profile.upper():
        raise OfferError(422, f"video section is {media.profile}, not UDP/TLS/RTP/SAVPF")
    mid = media.rtp.muxId
    if not mid or len(mid) > 32:
        raise OfferError(400, "video section has no a=mid (or one longer than 32)")
    ice = media.ice
    if ice is None or not ice.usernameFragment or not ice.password:
        raise OfferError(400, "offer has no ICE credentials (a=ice-ufrag, a=ice-pwd)")
    if not (4 <= len(ice.usernameFragment) <= 256 and 22 <= len(ice.password) <= 256) or not (
        _ICE_CHARS.fullmatch(ice.usernameFragment) and _ICE_CHARS.fullmatch(ice.password)
    ):
        raise OfferError(400, "ICE credentials are not 4-256 and 22-256 ice-chars")
    dtls = media.dtls
    if dtls is None or not dtls.fingerprints:
        raise OfferError(400, "offer has no DTLS fingerprint")
    if not any(
        f.algorithm.lower() == "sha-256" and _FINGERPRINT.fullmatch(f.value)
        for f in dtls.fingerprints
    ):
        raise OfferError(400, "offer has no well-formed sha-256 fingerprint")
    if len(media.ice_candidates) > MAX_CANDIDATES:
        raise OfferError(400, f"offer has more than {MAX_CANDIDATES} candidates")
    bundle = next((g for g in sdp.group if g.semantic == "BUNDLE"), None)
    if bundle is not None and mid not in [str(x) for x in bundle.items]:
        raise OfferError(400, f"video section {mid!r} is not in the offer's BUNDLE group")
    return Offer(
        sdp=sdp,
        video=video,
        mid=mid,
        ice=ice,
        dtls=dtls,
        candidates=tuple(media.ice_candidates),
        candidates_complete=media.ice_candidates_complete,
        bundle=bundle is not None,
    )


# ---- the codec ---------------------------------------------------------------------------------


def camera_profile(profile_level_id: str) -> tuple[H264Profile, int]:
    """The camera's profile and level_idc from its ``profile-level-id`` (or SPS bytes 1-3)."""
    if not _PROFILE_LEVEL_ID.fullmatch(profile_level_id):
        raise OfferError(422, f"camera profile-level-id {profile_level_id!r} is not 6 hex digits")
    try:
        profile, _level = parse_h264_profile_level_id(profile_level_id)
    except ValueError:
        raise OfferError(
            422,
            f"the camera's H.264 profile {profile_level_id.upper()} is not one WebRTC "
            "browsers decode (use RTSP for this camera)",
        ) from None
    return profile, int(profile_level_id[4:6], 16)


def choose_h264(offer: Offer, profile_level_id: str) -> Choice:
    """The offered payload type that can carry the camera's stream as it is, and the
    ``profile-level-id`` to answer it with."""
    profile, level = camera_profile(profile_level_id)
    offered: list[tuple[int, RTCRtpCodecParameters, H264Profile]] = []
    for order, codec in enumerate(offer.sdp.media[offer.video].rtp.codecs):
        if codec.mimeType.lower() != "video/h264" or codec.clockRate != 90000:
            continue
        params = codec.parameters
        if str(params.get("packetization-mode", "0")) != "1":
            continue  # mode 0 cannot carry NAL units larger than one packet
        try:
            offered_profile, _ = parse_h264_profile_level_id(
                str(params.get("profile-level-id", "42e01f"))
            )
        except ValueError:
            continue
        offered.append((order, codec, offered_profile))
    decoders = _DECODED_BY[profile]
    best: tuple[int, int, RTCRtpCodecParameters, H264Profile] | None = None
    for order, codec, offered_profile in offered:
        if offered_profile not in decoders:
            continue
        rank = (decoders.index(offered_profile), order)
        if best is None or rank < (best[0], best[1]):
            best = (rank[0], rank[1], codec, offered_profile)
    if best is None:
        kinds = sorted({p.name.removeprefix("PROFILE_").lower() for _, _, p in offered})
        raise OfferError(
            422,
            f"the camera sends H.264 {profile.name.removeprefix('PROFILE_').lower()} "
            f"({profile_level_id.upper()}) and this offer accepts "
            f"{', '.join(kinds) if kinds else 'no H.264 in packetization mode 1'}",
        )
    _, _, codec, offered_profile = best
    if offered_profile == profile:
        answer_pli = profile_level_id.lower()  # the camera's own, constraint flags and all
    else:
        offered_pli = str(codec.parameters.get("profile-level-id", "42e01f"))
        answer_pli = f"{offered_pli[:4].lower()}{level:02x}"
    wanted = {(fb.type, fb.parameter) for fb in codec.rtcpFeedback}
    feedback = tuple(fb for fb in _FEEDBACK if fb in wanted)
    assert codec.payloadType is not None  # aiortc's parser sets it from a=rtpmap
    return Choice(codec.payloadType, answer_pli, feedback)


# ---- the answer --------------------------------------------------------------------------------


def _rejected(offered: MediaDescription) -> MediaDescription:
    m = MediaDescription(offered.kind, 0, offered.profile, offered.fmt[:1] or ["0"])
    m.host = "0.0.0.0"
    m.direction = "inactive" if offered.kind in ("audio", "video") else None
    m.rtp.muxId = offered.rtp.muxId
    m.ice = RTCIceParameters()
    return m


def build_answer(offer: Offer, choice: Choice, local: LocalTransport, stream: Stream) -> str:
    """The answer: our video section sends the chosen codec; every other section is rejected."""
    answer = SessionDescription()
    answer.origin = f"- {stream.session_id} 1 IN IP4 0.0.0.0"
    answer.name = "feedgate"
    if offer.bundle:
        answer.group.append(GroupDescription("BUNDLE", [offer.mid]))
    answer.msid_semantic.append(GroupDescription("WMS", [stream.stream_id]))
    for i, offered in enumerate(offer.sdp.media):
        if i != offer.video:
            answer.media.append(_rejected(offered))
            continue
        m = MediaDescription("video", 9, offered.profile, [choice.payload_type])
        first = local.candidates[0] if local.candidates else None
        m.host = first.ip if first is not None else "0.0.0.0"
        m.port = first.port if first is not None else 9
        m.direction = "sendonly"
        m.rtp.muxId = offer.mid
        m.msid = f"{stream.stream_id} {stream.track_id}"
        m.rtcp_port = 9
        m.rtcp_host = "0.0.0.0"
        m.rtcp_mux = True
        m.ssrc = [
            SsrcDescription(
                ssrc=stream.ssrc,
                cname=stream.cname,
                msid=f"{stream.stream_id} {stream.track_id}",
            )
        ]
        m.rtp.codecs = [
            RTCRtpCodecParameters(
                mimeType="video/H264",
                clockRate=90000,
                payloadType=choice.payload_type,
                rtcpFeedback=[RTCRtcpFeedback(type=t, parameter=p) for t, p in choice.feedback],
                parameters={
                    "level-asymmetry-allowed": "1",
                    "packetization-mode": "1",
                    "profile-level-id": choice.profile_level_id,
                },
            )
        ]
        m.ice = local.ice
        m.ice_candidates = list(local.candidates)
        m.ice_candidates_complete = True
        m.dtls = RTCDtlsParameters(fingerprints=list(local.fingerprints), role=local.dtls_role)
        answer.media.append(m)
    return str(answer)


def dtls_role_for(offer: Offer, *, ice_controlling: bool) -> str:
    """Our DTLS role from the offer's a=setup (actpass: we connect, RFC 8842 §5.3)."""
    remote = offer.dtls.role
    if remote == "client":
        return "server"
    if remote == "server":
        return "client"
    return "server" if ice_controlling else "client"
