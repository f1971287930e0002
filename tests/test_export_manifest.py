"""The evidence manifest: signed with the gateway's evidence key, published in its JWKS, and
verified offline by ``feedgate export verify`` (issue #13.5)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import make_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli.main import main
from gateway.config import TenancyConfig
from gateway.recording.export_manifest import (
    ExportManifest,
    ManifestError,
    MaskApplied,
    Requester,
    canonical_bytes,
    file_digest,
    keys_from_jwks,
    keys_from_pem,
    public_pem,
    sign_manifest,
    verify_export,
)
from gateway.tenancy import Tenancy
from tenants.tokens import SigningKey, TokenError, TokenIssuer

T0 = datetime(2026, 12, 1, 10, 15, tzinfo=UTC)


def manifest_for(media: Path, key: SigningKey, **over: object) -> ExportManifest:
    digest, size = file_digest(media)
    fields: dict[str, object] = {
        "export_id": "exp-1",
        "camera": "high-street-north",
        "start": T0,
        "end": T0 + timedelta(minutes=15),
        "media_start": T0 - timedelta(seconds=1),
        "media_end": T0 + timedelta(minutes=15),
        "masks_applied": (
            MaskApplied(id="homes", kind="permanent", points=((0, 0), (0.4, 0), (0.4, 0.3))),
        ),
        "reencoded": True,
        "requester": Requester(person="viido-officer", tenant="met"),
        "purpose": "investigation",
        "incident_ref": "CAD 1234/01DEC",
        "file_name": media.name,
        "file_size": size,
        "sha256": digest,
        "created": T0 + timedelta(hours=1),
        "key_id": key.kid,
        **over,
    }
    return ExportManifest.model_validate(fields)


@pytest.fixture
def export(tmp_path: Path) -> tuple[Path, Path, SigningKey]:
    key = SigningKey.generate()
    media = tmp_path / "exp-1.mp4"
    media.write_bytes(bytes(range(256)) * 400)
    doc = sign_manifest(manifest_for(media, key), key)
    manifest = tmp_path / "exp-1.manifest.json"
    manifest.write_bytes(canonical_bytes(doc))
    return media, manifest, key


def write_jwks(path: Path, *keys: SigningKey) -> Path:
    path.write_text(json.dumps({"keys": [k.public_jwk("evidence") for k in keys]}))
    return path


def verify_cli(
    media: Path, manifest: Path, *trust: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, object]]:
    code = main(["export", "verify", str(media), str(manifest), *trust, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_fresh_export_verifies_against_the_jwks_and_the_pem(
    export: tuple[Path, Path, SigningKey], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    media, manifest, key = export
    jwks = write_jwks(tmp_path / "jwks.json", SigningKey.generate(), key)
    code, out = verify_cli(media, manifest, "--jwks", str(jwks), capsys=capsys)
    assert code == 0 and out["verified"] is True
    pem = tmp_path / "evidence.pub.pem"
    pem.write_bytes(public_pem(key))
    code, out = verify_cli(media, manifest, "--key", str(pem), capsys=capsys)
    assert code == 0
    assert out["manifest"]["camera"] == "high-street-north"  # type: ignore[index]


def test_a_flipped_byte_in_the_file_fails(
    export: tuple[Path, Path, SigningKey], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    media, manifest, key = export
    data = bytearray(media.read_bytes())
    data[len(data) // 2] ^= 0x01
    media.write_bytes(bytes(data))
    code, out = verify_cli(
        media, manifest, "--jwks", str(write_jwks(tmp_path / "j.json", key)), capsys=capsys
    )
    assert code == 1 and out["reason"] == "hash_mismatch"


def test_a_truncated_file_fails(export: tuple[Path, Path, SigningKey]) -> None:
    media, manifest, key = export
    media.write_bytes(media.read_bytes()[:-1])
    with pytest.raises(ManifestError) as exc:
        verify_export(media, manifest, {key.kid: key.private_key.public_key()})
    assert exc.value.reason == "size_mismatch"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("camera", "market-square"),
        ("start", "2026-12-01T10:14:00.000000Z"),
        ("purpose", "curiosity"),
        ("masks_applied", []),
        ("sha256", "0" * 64),
    ],
)
def test_an_edited_manifest_fails(
    export: tuple[Path, Path, SigningKey],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    field: str,
    value: object,
) -> None:
    media, manifest, key = export
    doc = json.loads(manifest.read_bytes())
    doc["manifest"][field] = value
    manifest.write_text(json.dumps(doc, indent=2))
    code, out = verify_cli(
        media, manifest, "--jwks", str(write_jwks(tmp_path / "j.json", key)), capsys=capsys
    )
    assert code == 1 and out["reason"] == "bad_signature"


def test_a_signature_by_another_key_fails(
    export: tuple[Path, Path, SigningKey], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    media, manifest, key = export
    jwks = str(write_jwks(tmp_path / "j.json", key))
    forger = SigningKey.generate()
    # Signed by a key nobody trusts, naming itself.
    forged = sign_manifest(manifest_for(media, forger), forger)
    manifest.write_bytes(canonical_bytes(forged))
    code, out = verify_cli(media, manifest, "--jwks", jwks, capsys=capsys)
    assert code == 1 and out["reason"] == "unknown_key"
    # Signed by another key, naming ours.
    doc = sign_manifest(manifest_for(media, forger), forger)
    doc["manifest"]["key_id"] = doc["signature"]["kid"] = key.kid
    manifest.write_bytes(canonical_bytes(doc))
    code, out = verify_cli(media, manifest, "--jwks", jwks, capsys=capsys)
    assert code == 1 and out["reason"] == "bad_signature"


def test_a_jwks_cannot_pass_a_key_off_under_another_kid() -> None:
    ours, theirs = SigningKey.generate(), SigningKey.generate()
    jwk = {**theirs.public_jwk("evidence"), "kid": ours.kid}
    assert keys_from_jwks({"keys": [jwk]}) == {}
    assert list(keys_from_jwks({"keys": [ours.public_jwk("evidence")]})) == [ours.kid]


def test_a_private_pem_is_read_as_its_public_half(tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path / "k.pem")
    assert list(keys_from_pem((tmp_path / "k.pem").read_bytes())) == [key.kid]


def test_verify_needs_trusted_keys(
    export: tuple[Path, Path, SigningKey], capsys: pytest.CaptureFixture[str]
) -> None:
    media, manifest, _ = export
    assert main(["export", "verify", str(media), str(manifest)]) == 2
    assert "--jwks or --key" in capsys.readouterr().err


def test_a_manifest_needs_a_purpose_and_an_ordered_range(tmp_path: Path) -> None:
    key = SigningKey.generate()
    media = tmp_path / "f.mp4"
    media.write_bytes(b"x")
    with pytest.raises(ValueError, match="purpose or an incident"):
        manifest_for(media, key, purpose=None, incident_ref=None)
    with pytest.raises(ValueError, match="end must be after start"):
        manifest_for(media, key, end=T0)
    with pytest.raises(ValueError, match="time zone"):
        manifest_for(media, key, start=datetime(2026, 12, 1, 10, 0))


def test_times_are_written_one_way_whatever_their_zone(tmp_path: Path) -> None:
    key = SigningKey.generate()
    media = tmp_path / "f.mp4"
    media.write_bytes(b"x")
    bst = T0.astimezone(__import__("zoneinfo").ZoneInfo("Europe/London"))
    a = sign_manifest(manifest_for(media, key), key)
    b = sign_manifest(manifest_for(media, key, start=bst), key)
    assert canonical_bytes(a) == canonical_bytes(b)
    assert a["manifest"]["start"] == "2026-12-01T10:15:00.000000Z"


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_flipped_byte_of_the_manifest_fails(
    export: tuple[Path, Path, SigningKey], data: st.DataObject
) -> None:
    media, manifest, key = export
    original = manifest.read_bytes()
    try:
        at = data.draw(st.integers(0, len(original) - 1))
        bit = data.draw(st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128]))
        flipped = bytearray(original)
        flipped[at] ^= bit
        manifest.write_bytes(bytes(flipped))
        with pytest.raises(ManifestError):
            verify_export(media, manifest, {key.kid: key.private_key.public_key()})
    finally:
        manifest.write_bytes(original)


def test_a_signature_spelt_another_way_is_refused(export: tuple[Path, Path, SigningKey]) -> None:
    """base64url leaves four bits of the last character unused: a second spelling of the same
    signature would still verify unless only the canonical one is accepted."""
    media, manifest, key = export
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    doc = json.loads(manifest.read_bytes())
    value = doc["signature"]["value"]
    doc["signature"]["value"] = value[:-1] + alphabet[alphabet.index(value[-1]) ^ 1]
    manifest.write_bytes(canonical_bytes(doc))
    with pytest.raises(ManifestError) as exc:
        verify_export(media, manifest, {key.kid: key.private_key.public_key()})
    assert exc.value.reason == "bad_signature"


async def test_the_gateway_publishes_its_evidence_key_apart_from_its_token_keys(
    tmp_path: Path,
) -> None:
    config = replace(make_config(), data_dir=str(tmp_path), tenancy=TenancyConfig(enabled=True))
    tenancy = Tenancy.open(config)
    try:
        evidence = tenancy.evidence_key
        assert evidence is not None
        published = keys_from_jwks(tenancy.jwks())
        assert evidence.kid in published
        assert all("d" not in k for k in tenancy.jwks()["keys"])
        assert evidence.kid not in {k.kid for k in tenancy.issuer.keys}
        # A token signed with the evidence key is no token of ours.
        tc = config.tenancy
        forger = TokenIssuer([evidence], issuer=tc.issuer, audience=tc.audience)
        forged = forger.issue(tenant="council", subject="x")
        with pytest.raises(TokenError):
            tenancy.verifier.verify(forged)
    finally:
        await tenancy.close()
    again = Tenancy.open(config)
    try:
        assert again.evidence_key is not None and again.evidence_key.kid == evidence.kid
    finally:
        await again.close()


def test_any_key_id_a_thumbprint_can_be_is_accepted(tmp_path: Path) -> None:
    """A thumbprint is base64url: one key in 32 has an id starting with '_' or '-' (exports
    failed for them before)."""
    media = tmp_path / "f.mp4"
    media.write_bytes(b"x")
    key = SigningKey.generate()
    for kid in ("_hcdli8nGua1wUnYKfGin8TqX4ocgw8p2XijcUhrDPY", "-abc", key.kid):
        assert manifest_for(media, key, key_id=kid).key_id == kid
    with pytest.raises(ValueError):
        manifest_for(media, key, key_id="has space")
