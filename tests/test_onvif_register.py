"""The register's ONVIF settings on both backends: the password sealed under a key outside
the database, write-only, kept when left out, gone with its camera."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tenants.db import Database
from tenants.model import Camera, DomainError, Tenant, TenantKind
from tenants.onvif import OnvifRegister, SecretBox
from tenants.seed import SeedError, load_seed
from tenants.store import TenantStore


def _register(db: Database, key: Path) -> tuple[TenantStore, OnvifRegister]:
    store = TenantStore(db)
    store.put_tenant(Tenant("council", "Council", TenantKind.COUNCIL))
    store.put_camera(Camera("cam1", "council"))
    return store, OnvifRegister(db, SecretBox.load(key, create=True))


def test_settings_round_trip_sealed_and_write_only(db: Database, tmp_path: Path) -> None:
    key = tmp_path / "keys" / "secrets.key"
    store, reg = _register(db, key)
    assert key.stat().st_mode & 0o077 == 0  # the key file is the owner's alone
    v0 = store.version()
    before, after = reg.put("cam1", "http://10.0.4.21:80", "feedgate", password="s3cret-pw")
    assert before is None and after.password_set and store.version() > v0
    assert "s3cret-pw" not in repr(after) and "s3cret-pw" not in repr(reg.credentials("cam1"))
    (sealed,) = db.query_one("SELECT password_sealed FROM camera_onvif") or ("",)
    assert sealed and "s3cret-pw" not in sealed
    creds = reg.credentials("cam1")
    assert creds is not None and creds.password == "s3cret-pw"
    # Left out: kept. Cleared: gone.
    reg.put("cam1", "http://10.0.4.22:80", "feedgate2")
    creds = reg.credentials("cam1")
    assert creds is not None and creds.password == "s3cret-pw"
    assert creds.settings.url == "http://10.0.4.22:80"
    _, cleared = reg.put("cam1", "http://10.0.4.22:80", "feedgate2", clear_password=True)
    assert not cleared.password_set
    # Another key cannot open what this one sealed: a clear error, not garbage.
    reg.put("cam1", "http://10.0.4.22:80", "feedgate2", password="again")
    other = OnvifRegister(db, SecretBox.load(tmp_path / "other.key", create=True))
    with pytest.raises(DomainError, match="set the password again"):
        other.credentials("cam1")
    # The settings go with their camera.
    store.delete_camera("cam1")
    assert reg.get("cam1") is None and reg.camera_ids() == []


@pytest.mark.parametrize(
    "url",
    ["ftp://10.0.4.21", "http://user:pw@10.0.4.21", "http://", "http://10.0.4.21:99999"],
)
def test_bad_addresses_are_refused(db: Database, tmp_path: Path, url: str) -> None:
    _, reg = _register(db, tmp_path / "k")
    with pytest.raises(DomainError, match="onvif_url"):
        reg.put("cam1", url, "feedgate", password="pw")
    assert reg.get("cam1") is None


def test_keys_init_makes_the_secret_key_once_and_refuses_a_bad_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli.main import main

    cfg = tmp_path / "feedgate.toml"
    cfg.write_text('data_dir = "var"\n')
    assert main(["keys", "init", "--config", str(cfg)]) == 0
    key = tmp_path / "var" / "keys" / "secrets.key"
    assert f"created secret key {key}" in capsys.readouterr().out
    assert key.stat().st_mode & 0o077 == 0
    sealed = SecretBox.load(key, create=False).seal("pw")
    assert main(["keys", "init", "--config", str(cfg)]) == 0
    assert "every key exists already" in capsys.readouterr().out
    assert SecretBox.load(key, create=False).open(sealed) == "pw"  # not replaced
    key.write_text("not a key")
    assert main(["keys", "init", "--config", str(cfg)]) == 2
    assert "keys.secret_key" in capsys.readouterr().err
    assert key.read_text() == "not a key"


def test_a_seed_sets_onvif_settings_and_names_a_bad_key(db: Database, tmp_path: Path) -> None:
    store, reg = _register(db, tmp_path / "k")
    seed = tmp_path / "seed.toml"
    camera = '[[cameras]]\nid = "cam2"\nowner = "council"\n'
    seed.write_text(
        '[[tenants]]\nid = "council"\nname = "Council"\nkind = "council"\n' + camera
        + 'onvif_url = "http://127.0.0.1:8899"\nonvif_username = "feedgate"\n'
        'onvif_password = "seeded-pw"\n'
    )  # fmt: skip
    load_seed(store, seed, reg)
    creds = reg.credentials("cam2")
    assert creds is not None and creds.password == "seeded-pw"
    assert creds.settings.url == "http://127.0.0.1:8899"
    for extra, key in [
        ('onvif_url = "ftp://x"\n', "cameras[0].onvif_url"),
        ('onvif_username = "feedgate"\n', "cameras[0].onvif_url"),
        ('onvif_url = "http://127.0.0.1:1"\nonvif_password = ""\n', "cameras[0].onvif_password"),
    ]:
        seed.write_text(
            '[[tenants]]\nid = "council"\nname = "Council"\nkind = "council"\n' + camera + extra
        )
        with pytest.raises(SeedError, match=re.escape(key)):
            load_seed(store, seed, reg)
    after = reg.credentials("cam2")  # a bad file changed nothing
    assert after is not None and after.settings.url == "http://127.0.0.1:8899"
