"""A privacy mask drawn, moved or removed applies to the sessions already watching: each live
session whose burnt-in zones are no longer the camera's zones for its tenant ends at the next
re-check (its viewer's next decision gets the zones as they are now); sessions the change does
not touch carry on."""

from __future__ import annotations

from test_policy import NOON, decide, world  # noqa: F401  (world: the fixture)

from tenants.model import MaskKind, MaskZone, TenantKind

SQUARE = ((0.1, 0.1), (0.3, 0.1), (0.3, 0.3), (0.1, 0.3))
MOVED = ((0.5, 0.5), (0.7, 0.5), (0.7, 0.7), (0.5, 0.7))
CHANGED = "privacy masks changed"


async def test_sessions_end_when_their_zones_change_and_only_then(world) -> None:  # noqa: F811
    store, policy, tok = world
    guard = await decide(policy, tok("shop", "guard"))
    officer = await decide(policy, tok("police", "officer"))
    lifting = await decide(policy, tok("police", "officer"), unmasked=True, purpose="incident 7")
    assert lifting.lifted == ("garden",)
    sessions = (guard, officer, lifting)
    assert [policy.revalidate(d, NOON) for d in sessions] == [None, None, None]

    # A zone for retail partners only: the shop's session ends; the police's carry on.
    store.put_mask(MaskZone("till", "street", SQUARE, tenant_kinds=frozenset({TenantKind.RETAIL})))
    policy.reload()
    assert [policy.revalidate(d, NOON) for d in sessions] == [CHANGED, None, None]

    # A liftable zone: it is lifted for the session that lifts them, burnt in for the others.
    store.put_mask(MaskZone("yard", "street", SQUARE, kind=MaskKind.LIFTABLE))
    policy.reload()
    assert [policy.revalidate(d, NOON) for d in sessions] == [CHANGED, CHANGED, None]

    # A permanent zone moved: every session's pixels are wrong now.
    guard, officer, lifting = (
        await decide(policy, tok("shop", "guard")),
        await decide(policy, tok("police", "officer")),
        await decide(policy, tok("police", "officer"), unmasked=True, purpose="incident 7"),
    )
    assert [policy.revalidate(d, NOON) for d in (guard, officer, lifting)] == [None] * 3
    store.put_mask(MaskZone("windows", "street", MOVED))
    policy.reload()
    assert [policy.revalidate(d, NOON) for d in (guard, officer, lifting)] == [CHANGED] * 3

    # Removed: the same; and a fresh decision has the zones as they are and carries on.
    fresh = await decide(policy, tok("shop", "guard"))
    store.delete_mask("till")
    policy.reload()
    assert policy.revalidate(fresh, NOON) == CHANGED
    again = await decide(policy, tok("shop", "guard"))
    assert "till" not in {z.id for z in again.mask_zones}
    assert policy.revalidate(again, NOON) is None


async def test_a_mask_on_another_camera_changes_nothing(world) -> None:  # noqa: F811
    store, policy, tok = world
    guard = await decide(policy, tok("shop", "guard"))
    store.put_mask(MaskZone("elsewhere", "home-row", SQUARE))
    policy.reload()
    assert policy.revalidate(guard, NOON) is None
