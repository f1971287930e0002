"""The policy decision as a specification: who may do what, on which camera, when."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tenants.db import Database
from tenants.leases import StreamCaps
from tenants.model import (
    Camera,
    Constraints,
    Grant,
    MaskKind,
    MaskZone,
    Principal,
    Quality,
    Right,
    Role,
    Tenant,
    TenantKind,
    TenantStatus,
    TimeWindow,
)
from tenants.policy import AccessRequest, Action, Policy, digest_ha1
from tenants.store import TenantStore
from tenants.tokens import SigningKey, TokenIssuer, TokenVerifier

NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday


@pytest.fixture
def world(tmp_path: Path):
    store = TenantStore(Database.open(f"sqlite:///{tmp_path}/t.db"))
    for tid, kind in (
        ("council", TenantKind.COUNCIL),
        ("police", TenantKind.POLICE),
        ("shop", TenantKind.RETAIL),
        ("hospital", TenantKind.HEALTH),
    ):
        store.put_tenant(Tenant(tid, tid.title(), kind))
    store.put_principal(
        Principal(
            "op",
            "council",
            "Operator",
            roles=frozenset({Role.OPERATOR, Role.VIEWER}),
            digest_ha1=digest_ha1("op", "pw"),
        )
    )
    store.put_principal(
        Principal("officer", "police", "Officer", roles=frozenset({Role.VIEWER, Role.INVESTIGATOR}))
    )
    store.put_principal(Principal("clerk", "shop", "Clerk", roles=frozenset({Role.FINANCE})))
    store.put_principal(Principal("guard", "shop", "Guard", roles=frozenset({Role.VIEWER})))
    store.put_principal(Principal("desk", "hospital", "Desk", roles=frozenset({Role.VIEWER})))
    store.put_camera(Camera("street", "council", tags=frozenset({"town"})))
    store.put_camera(Camera("home-row", "council", tags=frozenset({"residential"})))
    store.put_grant(
        Grant(
            "police-town",
            "council",
            "police",
            camera_tags=frozenset({"town"}),
            rights=frozenset({Right.LIVE, Right.PLAYBACK, Right.UNMASK}),
            constraints=Constraints(max_playback_age_s=86400),
        )
    )
    store.put_grant(
        Grant(
            "shop-day",
            "council",
            "shop",
            camera_ids=frozenset({"street"}),
            rights=frozenset({Right.LIVE}),
            constraints=Constraints(
                time_windows=(TimeWindow(time(8), time(18)),),
                max_concurrent_streams=1,
                quality_cap=Quality.SUB,
            ),
        )
    )
    store.put_grant(
        Grant(
            "hospital-purpose",
            "council",
            "hospital",
            camera_ids=frozenset({"street"}),
            rights=frozenset({Right.LIVE}),
            constraints=Constraints(purpose_required=True),
        )
    )
    # Street camera masks: a home's windows (permanent), a garden (liftable for incidents),
    # and a shop front only retail partners must not see.
    square = ((0.1, 0.1), (0.3, 0.1), (0.3, 0.3), (0.1, 0.3))
    store.put_mask(MaskZone("windows", "street", square))
    store.put_mask(MaskZone("garden", "street", square, kind=MaskKind.LIFTABLE))
    store.put_mask(
        MaskZone("rival-shop", "street", square, tenant_kinds=frozenset({TenantKind.RETAIL}))
    )
    issuer = TokenIssuer([SigningKey.generate()])
    policy = Policy(store, TokenVerifier(issuer))
    policy.reload(force=True)

    def tok(tenant: str, subject: str, roles=("viewer",), **kw) -> str:
        kw.setdefault("now", NOON)
        return issuer.issue(tenant=tenant, subject=subject, roles=roles, **kw)

    return store, policy, tok


async def decide(policy: Policy, token: str | None, camera: str = "street", **kw):
    return await policy.authorize(
        AccessRequest(
            kw.pop("action", Action.LIVE),
            "rtsp",
            camera=camera,
            token=token,
            now=kw.pop("now", NOON),
            **kw,
        )
    )


async def test_no_credentials_is_401(world):
    _, policy, _ = world
    d = await decide(policy, None)
    assert (d.allow, d.status) == (False, 401)


def zone_ids(d) -> set[str]:
    return {z.id for z in d.mask_zones}


async def test_owner_lifts_only_liftable_zones_and_only_with_a_purpose(world):
    _, policy, tok = world
    d = await decide(policy, tok("council", "op", roles=("operator",)))
    assert d.allow and d.grant_id is None and zone_ids(d) == {"windows", "garden"}
    d = await decide(
        policy, tok("council", "op", roles=("operator",)), unmasked=True, purpose="incident 42"
    )
    assert d.allow and zone_ids(d) == {"windows"} and d.lifted == ("garden",)
    assert d.lift_expires_at == NOON + timedelta(minutes=30)


async def test_grantee_without_unmask_right_never_gets_the_original(world):
    _, policy, tok = world
    d = await decide(
        policy, tok("shop", "guard"), unmasked=True, purpose="theft", quality=Quality.MAIN
    )
    assert d.allow and d.masked and not d.lifted
    assert zone_ids(d) == {"windows", "garden", "rival-shop"}  # retail sees more blacked out
    assert d.quality == Quality.SUB  # the grant caps quality too


async def test_police_unmask_needs_a_purpose(world):
    _, policy, tok = world
    kept = await decide(policy, tok("police", "officer"), unmasked=True)
    assert zone_ids(kept) == {"windows", "garden"} and not kept.lifted
    long = tok("police", "officer", ttl=timedelta(hours=2))
    d = await decide(policy, long, unmasked=True, purpose="CAD 1234")
    assert d.allow and zone_ids(d) == {"windows"} and d.grant_id == "police-town"
    assert policy.revalidate(d, NOON + timedelta(minutes=29)) is None
    assert policy.revalidate(d, NOON + timedelta(minutes=31)) == "mask lift expired"


async def test_viewers_with_the_same_zones_share_a_variant(world):
    _, policy, tok = world
    a = await decide(policy, tok("police", "officer"))
    b = await decide(policy, tok("council", "op", roles=("viewer",)))
    shop = await decide(policy, tok("shop", "guard"))
    assert a.variant == b.variant != shop.variant
    unmasked_cam = await decide(policy, tok("council", "op", roles=("viewer",)), camera="home-row")
    assert unmasked_cam.variant == "unmasked" and not unmasked_cam.masked


async def test_a_camera_without_a_grant_looks_like_no_camera(world):
    """Issue #10 finding 9: a camera the tenant neither owns nor has a grant on is answered
    as no camera at all, so its name tells nothing of what others have."""
    _, policy, tok = world
    hidden = await decide(policy, tok("police", "officer"), camera="home-row")
    missing = await decide(policy, tok("police", "officer"), camera="nowhere")
    assert (hidden.allow, hidden.status) == (missing.allow, missing.status) == (False, 404)
    assert hidden.reason.replace("home-row", "?") == missing.reason.replace("nowhere", "?")


async def test_a_grant_without_the_right_is_403(world):
    store, policy, tok = world
    store.put_principal(Principal("duty", "shop", "Duty", roles=frozenset({Role.OPERATOR})))
    policy.reload()
    duty = tok("shop", "duty", roles=("operator",))
    d = await decide(policy, duty, camera="street", action=Action.PLAYBACK)
    assert (d.allow, d.status) == (False, 403) and "no grant gives shop playback" in d.reason


async def test_time_window_limits_the_shop(world):
    _, policy, tok = world
    assert (await decide(policy, tok("shop", "guard"))).allow
    night = NOON.replace(hour=22)
    d = await decide(policy, tok("shop", "guard", now=night), now=night)
    assert not d.allow and "time windows" in d.reason


LONDON = ZoneInfo("Europe/London")
# 2026's changeover nights in the UK: clocks forward at 01:00 UTC on Sunday 29 March (01:00 GMT
# becomes 02:00 BST, a 23-hour day), back at 01:00 UTC on Sunday 25 October (02:00 BST becomes
# 01:00 GMT, a 25-hour day).
SPRING, AUTUMN = datetime(2026, 3, 29, tzinfo=UTC), datetime(2026, 10, 25, tzinfo=UTC)


@pytest.mark.parametrize(
    ("window", "utc", "inside"),
    [
        # "07:00-23:00" as the shopping centre means it: London's clock, summer and winter
        ("07:00-23:00", datetime(2026, 7, 1, 6, 30, tzinfo=UTC), True),  # 07:30 BST
        ("07:00-23:00", datetime(2026, 7, 1, 22, 30, tzinfo=UTC), False),  # 23:30 BST
        ("07:00-23:00", datetime(2026, 1, 7, 6, 30, tzinfo=UTC), False),  # 06:30 GMT
        ("07:00-23:00", datetime(2026, 1, 7, 22, 30, tzinfo=UTC), True),  # 22:30 GMT
        # the spring night: opens at 07:00 BST, which is 06:00 UTC
        ("07:00-23:00", SPRING.replace(hour=5, minute=59), False),
        ("07:00-23:00", SPRING.replace(hour=6), True),
        # an overnight window ends at 06:00 BST on the short night, 05:00 UTC
        ("22:00-06:00", SPRING.replace(hour=4, minute=59), True),
        ("22:00-06:00", SPRING.replace(hour=5, minute=30), False),
        # 01:00-02:00 never happens on the short night ...
        ("01:00-02:00", SPRING.replace(hour=0, minute=59), False),  # 00:59 GMT
        ("01:00-02:00", SPRING.replace(hour=1), False),  # 02:00 BST
        # ... and happens twice on the long one: 01:30 BST, then 01:30 GMT
        ("01:00-02:00", AUTUMN.replace(hour=0, minute=30), True),
        ("01:00-02:00", AUTUMN.replace(hour=1, minute=30), True),
        ("01:00-02:00", AUTUMN.replace(hour=2), False),  # 02:00 GMT
        # the autumn morning: opens at 07:00 GMT, which is 07:00 UTC again
        ("07:00-23:00", AUTUMN.replace(hour=6, minute=30), False),
        ("07:00-23:00", AUTUMN.replace(hour=7), True),
        ("07:00-23:00", AUTUMN - timedelta(hours=24) + timedelta(hours=6, minutes=30), True),
        # weekdays are London's too: Saturday 23:30 UTC in July is Sunday 00:30 BST
        ("00:00-01:00@6", datetime(2026, 7, 4, 23, 30, tzinfo=UTC), True),
        ("00:00-01:00@5", datetime(2026, 7, 4, 23, 30, tzinfo=UTC), False),
    ],
)
def test_time_windows_are_local_time_across_the_clock_changes(
    window: str, utc: datetime, inside: bool
) -> None:
    # Issue #9 finding 5: windows were evaluated in UTC.
    assert TimeWindow.parse(window).contains(utc, LONDON) is inside


async def test_policy_windows_follow_the_deployment_zone(world):
    store, london, tok = world  # the fixture's policy has the default zone, Europe/London
    summer_morning = datetime(2026, 7, 1, 7, 30, tzinfo=UTC)  # 08:30 BST, 03:30 in New York
    token = tok("shop", "guard", now=summer_morning, ttl=timedelta(hours=12))
    d = await decide(london, token, now=summer_morning)
    assert d.allow, d.reason  # the 08:00-18:00 window is open (it was shut in UTC)
    new_york = Policy(store, london.verifier, zone=ZoneInfo("America/New_York"))
    new_york.reload(force=True)
    shut = await decide(new_york, token, now=summer_morning)
    assert not shut.allow and "time windows" in shut.reason
    # A live session is re-checked in the same zone: 18:00 BST ends it, not 18:00 UTC.
    assert london.revalidate(d, now=datetime(2026, 7, 1, 16, 59, tzinfo=UTC)) is None
    assert london.revalidate(d, now=datetime(2026, 7, 1, 17, 0, tzinfo=UTC)) == (
        "outside the grant's time windows"
    )


async def test_purpose_required_grant(world):
    _, policy, tok = world
    assert not (await decide(policy, tok("hospital", "desk"))).allow
    assert (await decide(policy, tok("hospital", "desk"), purpose="A&E arrivals")).allow


async def test_roles_gate_actions(world):
    _, policy, tok = world
    # Viewer may watch but not rewind; an investigator may rewind within the age limit.
    assert not (
        await decide(policy, tok("police", "officer", roles=("viewer",)), action=Action.PLAYBACK)
    ).allow
    inv = tok("police", "officer", roles=("investigator",))
    assert (await decide(policy, inv, action=Action.PLAYBACK, playback_age_s=3600)).allow
    old = await decide(policy, inv, action=Action.PLAYBACK, playback_age_s=2 * 86400)
    assert not old.allow and "older" in old.reason


async def test_token_cannot_claim_roles_the_principal_lacks(world):
    _, policy, tok = world
    # "clerk" is finance only: a token claiming viewer does not make it a viewer.
    d = await decide(policy, tok("shop", "clerk", roles=("viewer",)))
    assert not d.allow and "role" in d.reason


async def test_token_camera_scope_is_enforced(world):
    _, policy, tok = world
    t = tok("police", "officer", cameras=["home-row"])
    d = await decide(policy, t)
    assert not d.allow and "does not cover" in d.reason


async def test_suspended_tenant_is_refused_and_live_sessions_revalidated(world):
    store, policy, tok = world
    d = await decide(policy, tok("police", "officer"))
    assert d.allow and policy.revalidate(d, NOON) is None
    store.set_tenant_status("police", TenantStatus.SUSPENDED)
    policy.reload()
    assert policy.revalidate(d, NOON) == "tenant suspended"
    assert not (await decide(policy, tok("police", "officer"))).allow


async def test_revoked_grant_and_expiry_end_sessions(world):
    store, policy, tok = world
    d = await decide(policy, tok("shop", "guard", ttl=timedelta(minutes=5)))
    assert policy.revalidate(d, NOON + timedelta(minutes=6)) == "credential expired"
    store.revoke_grant("shop-day", NOON)
    policy.reload()
    assert policy.revalidate(d, NOON) == "grant revoked"


async def test_concurrency_lease_is_atomic_and_released(world):
    _, policy, tok = world
    d = await decide(policy, tok("shop", "guard"))
    caps = StreamCaps()
    lease = caps.acquire(d)
    assert lease is not None
    assert caps.acquire(d) is None  # the cap is 1
    caps.release(lease)
    caps.release(lease)  # releasing twice is harmless
    assert caps.streams("shop", "shop-day") == 0
    assert caps.acquire(d) is not None


async def test_basic_password_and_token_as_password(world):
    _, policy, tok = world
    ok = await policy.authorize(
        AccessRequest(Action.LIVE, "rtsp", camera="street", username="op", password="pw", now=NOON)
    )
    assert ok.allow and ok.tenant == "council"
    bad = await policy.authorize(
        AccessRequest(
            Action.LIVE, "rtsp", camera="street", username="op", password="nope", now=NOON
        )
    )
    assert bad.status == 401
    as_password = await policy.authorize(
        AccessRequest(
            Action.LIVE,
            "rtsp",
            camera="street",
            username="x",
            password=tok("police", "officer"),
            now=NOON,
        )
    )
    assert as_password.allow and as_password.tenant == "police"


async def test_digest_check_uses_the_stored_ha1(world):
    _, policy, _ = world
    seen = []

    def check(ha1: str) -> bool:
        seen.append(ha1)
        return ha1 == digest_ha1("op", "pw")

    d = await policy.authorize(
        AccessRequest(
            Action.LIVE, "rtsp", camera="street", digest_username="op", digest_check=check, now=NOON
        )
    )
    assert d.allow and seen == [digest_ha1("op", "pw")]


async def test_a_token_names_a_registered_principal_whatever_roles_it_lists(world):
    _, policy, tok = world
    # Tokens are issued to principals of the store; one naming nobody is refused outright.
    d = await decide(policy, tok("police", "nobody", roles=("viewer", "operator")))
    assert (d.allow, d.status) == (False, 403) and "unknown principal" in d.reason


@pytest.mark.parametrize("change", ["deleted", "disabled", "narrowed"])
async def test_a_changed_principal_is_refused_and_its_live_sessions_end(world, change):
    store, policy, tok = world
    token = tok("police", "officer", roles=("viewer",))
    live = await decide(policy, token)
    assert live.allow and live.registered and policy.revalidate(live, NOON) is None
    officer = store.get_principal("officer")
    if change == "deleted":
        store.delete_principal("officer")
    elif change == "disabled":
        store.put_principal(replace(officer, disabled=True))
    else:  # its roles are cut to one that does not watch
        store.put_principal(replace(officer, roles=frozenset({Role.INVESTIGATOR})))
    policy.reload()
    # The same token, decided again: the principal is resolved now, not when it was issued.
    again = await decide(policy, token)
    assert not again.allow and again.status == 403
    why = policy.revalidate(live, NOON)
    assert why is not None and why.startswith("principal"), why


async def test_a_digest_users_live_session_ends_when_it_is_disabled(world):
    store, policy, _ = world
    d = await policy.authorize(
        AccessRequest(Action.LIVE, "rtsp", camera="street", username="op", password="pw", now=NOON)
    )
    assert d.allow and d.registered
    store.put_principal(replace(store.get_principal("op"), disabled=True))
    policy.reload()
    assert policy.revalidate(d, NOON) == "principal disabled"


async def test_sessions_end_when_their_camera_record_is_deleted_re_owned_or_regrouped(world):
    """Issue #10 finding 5: a decision was about a camera's record; once the record is gone,
    has another owner or is no longer covered by the grant, the session ends (in every
    process: the re-check reads the register)."""
    store, policy, tok = world
    owner = await decide(policy, tok("council", "op"))
    police = await decide(policy, tok("police", "officer"))
    assert owner.allow and police.allow and police.grant_id == "police-town"
    store.put_camera(Camera("street", "council", tags=frozenset({"retail"})))
    policy.reload()
    assert policy.revalidate(owner, NOON) is None
    assert policy.revalidate(police, NOON) == "the grant no longer covers the camera"
    store.put_camera(Camera("street", "shop", tags=frozenset({"town"})))
    policy.reload()
    assert policy.revalidate(owner, NOON) == "camera changed owner"
    assert policy.revalidate(police, NOON) == "camera changed owner"
    for zone in store.list_masks("street"):
        store.delete_mask(zone.id)
    store.delete_camera("street")
    policy.reload()
    assert policy.revalidate(owner, NOON) == policy.revalidate(police, NOON) == "camera deleted"


async def test_identities_of_expired_tokens_are_not_kept(world):
    # Every reconnecting viewer brings a fresh token; the identities of expired ones must
    # leave as new ones arrive (the soak grew by one identity per token until 10,000).
    _, policy, tok = world
    for _ in range(50):  # 50 viewers in the morning, tokens good for 10 minutes
        t = tok("police", "officer", ttl=timedelta(minutes=10))
        assert (await decide(policy, t)).allow
    assert policy.identities_cached == 50
    later = NOON + timedelta(hours=1)
    for _ in range(10):  # ten reconnect an hour later with fresh tokens
        t = tok("police", "officer", ttl=timedelta(minutes=10), now=later)
        assert (await decide(policy, t, now=later)).allow
    assert policy.identities_cached == 10  # the 50 expired ones are gone, 8 per new one
