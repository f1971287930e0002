"""One JWKS, three kinds of key: a gateway publishes its token keys, its evidence key and its
audit checkpoint keys together (all Ed25519, all ``use: sig``), each marked with what it signs.
A verifier of one kind trusts no other kind's key, so a manifest signed with a token key (held by
every node, rotated often) is not evidence, and a leaked audit key mints no tokens."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import make_config
from test_export_manifest import manifest_for, verify_cli

from gateway.config import TenancyConfig
from gateway.recording.export_manifest import canonical_bytes, keys_from_jwks, sign_manifest
from gateway.tenancy import Tenancy
from tenants.tokens import SigningKey
from tenants.tokens.jwks import parse_jwks
from tenants.tokens.keys import PURPOSE


async def test_only_the_evidence_key_of_a_gateways_jwks_verifies_a_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = replace(
        make_config(()), data_dir=str(tmp_path / "var"), tenancy=TenancyConfig(enabled=True)
    )
    tenancy = Tenancy.open(config)
    try:
        jwks = tenancy.jwks()
        assert {k[PURPOSE] for k in jwks["keys"]} == {"token", "evidence", "audit"}
        assert tenancy.evidence_key is not None
        assert list(keys_from_jwks(jwks)) == [tenancy.evidence_key.kid]
        media = tmp_path / "clip.mp4"
        media.write_bytes(b"footage")
        published = tmp_path / "jwks.json"
        published.write_text(json.dumps(jwks))
        manifest = tmp_path / "clip.manifest.json"
        for signer in (tenancy.issuer.keys[0], tenancy.audit_key):
            signed = sign_manifest(manifest_for(media, signer), signer)
            manifest.write_bytes(canonical_bytes(signed))
            code, out = verify_cli(media, manifest, "--jwks", str(published), capsys=capsys)
            assert (code, out["reason"]) == (1, "unknown_key"), signer
        key = tenancy.evidence_key
        manifest.write_bytes(canonical_bytes(sign_manifest(manifest_for(media, key), key)))
        code, _ = verify_cli(media, manifest, "--jwks", str(published), capsys=capsys)
        assert code == 0
    finally:
        await tenancy.close()


def test_a_fetched_jwks_yields_only_its_token_keys() -> None:
    """A partner (or a peer gateway) whose JWKS also publishes evidence and audit keys: only the
    keys that sign tokens verify tokens. An unmarked key is a token key, as any other issuer's."""
    token, evidence, audit, plain = (SigningKey.generate() for _ in range(4))
    doc = {
        "keys": [
            token.public_jwk(),
            evidence.public_jwk("evidence"),
            audit.public_jwk("audit"),
            {k: v for k, v in plain.public_jwk().items() if k != PURPOSE},
        ]
    }
    assert set(parse_jwks(doc, ["EdDSA"], "peer")) == {token.kid, plain.kid}
