"""Subject access requests (issue #13.7): opened with a due date a month on, they find the views,
playbacks and exports of their window's footage, their redacted copy is black in the redaction zones
over the redactions' time ranges with a signed manifest, and they are counted in the published
figures."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from export_fixtures import NOW, T0, World, luma_frames

from gateway.recording.export_manifest import keys_from_jwks, verify_export
from gateway.recording.export_store import ExportState
from gateway.recording.exports import ExportError, RedactionZone
from gateway.sar.service import SarService
from tenants.audit import AuditAction, AuditLog
from tenants.db import Database
from tenants.months import month_of
from tenants.sar import Area, SubjectAccessRequest, cameras_in, disclosures, due_date
from tenants.tokens import SigningKey
from tenants.transparency import monthly_report, publishable

LONDON = ZoneInfo("Europe/London")
QUARTER = ((0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5))


@pytest.mark.parametrize(
    ("opened", "due"),
    [
        (datetime(2026, 12, 2, 17, 0, tzinfo=UTC), date(2027, 1, 2)),
        (datetime(2027, 1, 31, 12, 0, tzinfo=UTC), date(2027, 2, 28)),
        (datetime(2028, 1, 31, 12, 0, tzinfo=UTC), date(2028, 2, 29)),
        # 23:30 UTC on 31 May is 00:30 on 1 June in London (BST): due 1 July.
        (datetime(2026, 5, 31, 23, 30, tzinfo=UTC), date(2026, 7, 1)),
    ],
)
def test_a_request_is_due_one_calendar_month_on_in_local_time(opened: datetime, due: date) -> None:
    assert due_date(opened, LONDON) == due


def test_an_area_finds_the_cameras_placed_inside_it() -> None:
    from tenants.model import Camera

    cams = [
        Camera(id="a", owner_tenant="council", latitude=51.50, longitude=-0.12),
        Camera(id="b", owner_tenant="council", latitude=51.60, longitude=-0.12),
        Camera(id="c", owner_tenant="council"),
    ]
    assert cameras_in(Area.parse("51.49,-0.13,51.51,-0.11"), cams) == ["a"]
    with pytest.raises(ValueError):
        Area.parse("51.6,0,51.5,1")  # south of its own north


def test_disclosures_are_the_uses_of_the_windows_footage() -> None:
    """Live views by when they ran; playbacks and exports by the footage they served."""
    db = Database.open("sqlite://:memory:")
    audit = AuditLog(db, SigningKey.generate().private_key)
    w0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    at = iter(w0 - timedelta(hours=1) + timedelta(minutes=i) for i in range(1000))

    def add(action: AuditAction, t: datetime | None = None, **detail: object) -> None:
        camera = str(detail.pop("camera", "street"))
        purpose = str(detail.pop("purpose", "")) or None
        audit.append(action, tenant="police", principal="p", camera=camera, purpose=purpose,
                     detail=detail, time=t or next(at))  # fmt: skip

    add(AuditAction.SESSION_START, session="ended-before", mode="play")
    add(AuditAction.SESSION_END, session="ended-before")
    add(AuditAction.SESSION_START, session="publisher", mode="record")
    add(AuditAction.SESSION_START, session="ran-into", mode="play")
    add(AuditAction.SESSION_START, session="other-cam", mode="play", camera="yard")
    add(AuditAction.STILL, w0 + timedelta(minutes=5), purpose="still in")
    add(AuditAction.SESSION_END, w0 + timedelta(minutes=6), session="ran-into")
    add(AuditAction.SESSION_START, w0 + timedelta(hours=2), session="after", mode="play")
    add(AuditAction.PLAYBACK, w0 + timedelta(days=3), purpose="review",
        **{"from": "2026-12-01T09:50:00Z", "to": "2026-12-01T10:01:00Z"})  # fmt: skip
    add(AuditAction.PLAYBACK, w0 + timedelta(days=3, minutes=1), purpose="too early",
        **{"from": "2026-12-01T09:00:00Z", "to": "2026-12-01T09:59:00Z"})  # fmt: skip
    add(AuditAction.EXPORT, w0 + timedelta(days=4), purpose="case",
        start="2026-12-01T10:20:00+00:00", end="2026-12-01T11:00:00+00:00")  # fmt: skip
    request = SubjectAccessRequest(
        "sar-1", "council", "s", "c", ("street",), None, w0, w0 + timedelta(minutes=30),
        w0 + timedelta(days=5), "root", date(2027, 1, 6),
    )  # fmt: skip
    found = disclosures(db, request)
    assert [(t.action, t.detail.get("session") or t.purpose) for t in found] == [
        ("session_start", "ran-into"),
        ("still", "still in"),
        ("playback", "review"),
        ("export", "case"),
    ]
    assert found[0].footage_end == w0 + timedelta(minutes=6)


async def test_a_request_finds_the_exports_of_its_window_and_its_copy_is_redacted(
    world: World,
) -> None:
    service = SarService(world.tenancy, world.service, world.index)
    admin = world.token("root")
    window = (T0 + timedelta(seconds=2), T0 + timedelta(seconds=6))
    # Uses of the footage, before the request is opened.
    police = await world.service.create(
        world.token("officer"), "street", T0 + timedelta(seconds=4), T0 + timedelta(seconds=9),
        purpose="investigation",
    )  # fmt: skip
    await world.done(police.id)
    later = await world.service.create(
        world.token("officer"), "street", T0 + timedelta(seconds=7), T0 + timedelta(seconds=9),
        purpose="elsewhere",
    )  # fmt: skip
    await world.done(later.id)

    request = await service.open(
        admin, subject="Person in a red coat, about 40", contact="subject@example.org",
        start=window[0], end=window[1], cameras=["street"],
    )  # fmt: skip
    assert request.due == due_date(request.opened)
    found = await service.findings(admin, request.id)
    assert [s.start for s in found.recordings["street"]] == [window[0]]
    assert [(t.action, t.purpose, t.principal) for t in found.touches] == [
        ("export", "investigation", "officer")
    ]

    # The copy: the whole picture's top left quarter redacted from 3 s to 5 s.
    zone = RedactionZone("bystander-1", QUARTER, T0 + timedelta(seconds=3),
                         T0 + timedelta(seconds=5))  # fmt: skip
    job = await service.copy(admin, request.id, "street", redactions=[zone])
    done = await world.done(job.id, "root")
    assert done.state == ExportState.DONE, done.error
    assert done.kind == "sar_copy" and done.sar_id == request.id
    media, manifest = await world.service.files(admin, job.id)
    m = verify_export(media, manifest, keys_from_jwks(world.tenancy.jwks())).manifest
    assert m.kind == "sar_copy" and m.sar_id == request.id
    assert [r.id for r in m.redactions] == ["bystander-1"]
    frames = luma_frames(media)  # 2 s to 6 s, 25 fps
    assert len(frames) == 100
    assert frames[10][:120, :160].mean() > 40  # 2.4 s: before the redaction
    for i in range(25, 75, 6):  # 3 s to 5 s: black
        assert frames[i][:120, :160].max() <= 20, i
    assert frames[90][:120, :160].mean() > 40  # 5.6 s: after it
    # The copy is listed with the request; the audit names the request, not the subject.
    found = await service.findings(admin, request.id)
    assert [c.id for c in found.copies] == [job.id]
    sar_entries = world.audit(AuditAction.SAR)
    assert sar_entries and all("red coat" not in str(e.detail) for e in sar_entries)

    closed = await service.close(admin, request.id, "fulfilled", "copy sent by post")
    assert closed.state.value == "fulfilled"
    with pytest.raises(ExportError) as exc:
        await service.copy(admin, request.id, "street", redactions=[])
    assert exc.value.code == "closed"
    figures = monthly_report(world.tenancy.db, month_of(NOW), now=NOW)
    assert figures["subject_access_requests"]["opened"] == 1
    assert figures["subject_access_requests"]["fulfilled"] == 1
    assert publishable(figures)["subject_access_requests"]["opened"] == "<5"


async def test_requests_are_the_controllers_own(world: World) -> None:
    service = SarService(world.tenancy, world.service, world.index)
    start, end = T0, T0 + timedelta(seconds=4)
    # The police hold grants on the council's camera, but do not answer for it.
    with pytest.raises(ExportError) as exc:
        await service.open(world.token("officer"), subject="x", contact="y", start=start,
                           end=end, cameras=["street"])  # fmt: skip
    assert exc.value.status == 400 and "of yours" in str(exc.value)
    with pytest.raises(ExportError) as exc:
        await service.open(world.token("pviewer"), subject="x", contact="y", start=start,
                           end=end, cameras=["street"])  # fmt: skip
    assert exc.value.status == 403
    request = await service.open(world.token("root"), subject="x", contact="y", start=start,
                                 end=end, cameras=["street"])  # fmt: skip
    with pytest.raises(ExportError) as exc:
        await service.findings(world.token("officer"), request.id)
    assert exc.value.status == 404
    assert [r.id for r in await service.list_requests(world.token("root"), state="open")] == [
        request.id
    ]
    with pytest.raises(ExportError):
        await service.open(world.token("root"), subject="", contact="y", start=start, end=end,
                           cameras=["street"])  # fmt: skip
