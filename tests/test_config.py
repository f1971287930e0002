"""The typed config: defaults → TOML file → FEEDGATE_* environment → validation, every error
naming the file (or the variable), the key and the reason, and relative paths following the
config file rather than the working directory."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from gateway.config import CameraConfig, Config, ConfigError, RtspConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "feedgate.toml"
    path.write_text(text)
    return load_config(path, env=env or {})


def error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text, env)
    return str(err.value)


BAD_CONFIGS = [
    # (kind of mistake, TOML, "key: reason" after "<file>: ")
    ("wrong type", '[rtsp]\nport = "eighty"\n', "rtsp.port: expected an integer, got 'eighty'"),
    ("out of range", "[http]\nport = 70000\n", "http.port: must be <= 65535, got 70000"),
    ("negative duration", "[rtsp]\nwrite_timeout = -1.0\n", "rtsp.write_timeout: must be > 0"),
    ("not a number", "[tenancy]\nrecheck_interval = nan\n", "tenancy.recheck_interval: expected"),
    ("unknown key", "[rtsp]\nprot = 1\n", "rtsp.prot: unknown key (known: basic_over_plain,"),
    ("unknown section", "[rstp]\nport = 1\n", "rstp: unknown key (known: billing, cameras,"),
    ("section not a table", "rtsp = 5\n", "rtsp: expected a table, got 5"),
    ("bad enum", '[[cameras]]\nid = "a"\ntransport = "sctp"\n', "cameras[0].transport: must be"),
    ("bad log level", 'log_level = "LOUD"\n', "log_level: must be 'DEBUG', 'INFO', 'WARNING'"),
    ("missing required", '[[cameras]]\nname = "no id"\n', "cameras[0].id: required"),
    (
        "tour without presets",
        '[[cameras]]\nid = "a"\nptz_idle = "tour"\n',
        "cameras[0].ptz_tour: ptz_idle 'tour' needs presets",
    ),
    ("bad camera id", '[[cameras]]\nid = "high street"\n', "cameras[0].id: 'high street' must be"),
    (
        "duplicate id",
        '[[cameras]]\nid = "a"\n[[cameras]]\nid = "a"\n',
        "cameras[1].id: duplicate camera id 'a'",
    ),
    (
        "bad camera source",
        '[[cameras]]\nid = "a"\nsource = "http://cam/1"\n',
        "cameras[0].source: 'http://cam/1' must be 'push' or an rtsp:// URL",
    ),
    ("odd RTP port", "[rtsp]\nrtp_port = 8001\n", "rtsp.rtp_port: must be even"),
    (
        "masked HLS with no transcodes",
        "[recording]\nhls_masked_transcodes = 0\n",
        "recording.hls_masked_transcodes: must be >= 1, got 0",
    ),
    ("bad time zone", 'timezone = "Europe/Londn"\n', "timezone: unknown time zone 'Europe/Londn'"),
    ("bad database URL", '[tenancy]\ndatabase = "mysql://x"\n', "tenancy.database: must be sqlite"),
    ("bad Redis URL", '[billing]\nredis_url = "localhost"\n', "billing.redis_url: must be redis"),
    ("rule across fields", "[billing]\nenabled = true\n", "billing.enabled: needs tenancy.enabled"),
    ("TLS half set", '[http]\ntls_cert = "c.pem"\n', "http.tls_key: required with the other"),
    ("TOML syntax", "[rtsp\n", "-: TOML syntax"),
]


@pytest.mark.parametrize(("kind", "text", "expected"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_a_bad_config_names_the_file_the_key_and_the_reason(
    tmp_path: Path, kind: str, text: str, expected: str
) -> None:
    message = error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'feedgate.toml'}: {expected}"), message


def test_every_bad_key_is_reported_at_once(tmp_path: Path) -> None:
    message = error(tmp_path, '[rtsp]\nport = "x"\nworkers = 0\n[http]\nport = -1\n')
    assert message.splitlines() == [
        f"{tmp_path / 'feedgate.toml'}: rtsp.port: expected an integer, got 'x'",
        f"{tmp_path / 'feedgate.toml'}: rtsp.workers: must be >= 1, got 0",
        f"{tmp_path / 'feedgate.toml'}: http.port: must be >= 0, got -1",
    ]


def test_a_bad_environment_variable_is_named(tmp_path: Path) -> None:
    message = error(tmp_path, "[rtsp]\nport = 9554\n", {"FEEDGATE_RTSP__PORT": "ninety"})
    assert message == (
        "environment FEEDGATE_RTSP__PORT: rtsp.port: expected an integer, got 'ninety'"
    )
    message = error(tmp_path, "", {"FEEDGATE_RTSP__NOPE": "1"})
    assert message.startswith("environment FEEDGATE_RTSP__NOPE: rtsp.nope: unknown key")
    # A rule broken only once the environment is applied names the variable that broke it.
    message = error(tmp_path, "", {"FEEDGATE_BILLING__ENABLED": "true"})
    assert message.startswith("environment FEEDGATE_BILLING__ENABLED: billing.enabled: needs")


def test_layers_defaults_then_file_then_environment(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        'log_level = "debug"\n[rtsp]\nport = 9554\nworkers = 2\n[tenancy]\nenabled = true\n',
        {
            "FEEDGATE_RTSP__PORT": "7554",
            "FEEDGATE_TENANCY__RECHECK_INTERVAL": "0.5",
            "FEEDGATE_TIMEZONE": "UTC",
            "FEEDGATE_TLS_CA": "/not/config.pem",  # the CLI's own variable: not config
            "OTHER": "x",
        },
    )
    assert cfg.rtsp.port == 7554  # env over file
    assert cfg.rtsp.workers == 2  # file over default
    assert cfg.rtsp.rtp_port == 8000  # default
    assert cfg.tenancy.recheck_interval == 0.5 and cfg.tenancy.enabled
    assert cfg.log_level == "DEBUG" and cfg.timezone == "UTC"


def test_a_bad_file_value_is_reported_even_if_the_environment_overrides_it(
    tmp_path: Path,
) -> None:
    message = error(tmp_path, '[rtsp]\nport = "x"\n', {"FEEDGATE_RTSP__PORT": "9554"})
    assert message.startswith(f"{tmp_path / 'feedgate.toml'}: rtsp.port:")


def test_relative_paths_follow_the_config_file_not_the_working_directory(
    tmp_path: Path,
) -> None:
    """Issue #9 finding 6: the same config run from another directory found no audit key."""
    conf = tmp_path / "etc" / "feedgate"
    conf.mkdir(parents=True)
    path = conf / "gateway.toml"
    path.write_text(
        'data_dir = "state"\n'
        '[tenancy]\nseed = "tenants.toml"\ndatabase = "sqlite://db/feedgate.db"\n'
        '[billing]\nplans = "../plans.toml"\nspool_dir = "spool"\n'
        'ledger = "sqlite:///abs/ledger.db"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = os.getcwd()
    os.chdir(elsewhere)
    try:
        cfg = load_config(Path("..") / "etc" / "feedgate" / "gateway.toml", env={})
        from_env = load_config(path, env={"FEEDGATE_DATA_DIR": "here"})
    finally:
        os.chdir(cwd)
    base = conf.resolve()
    assert cfg.data_dir == str(base / "state")
    assert cfg.tenancy.seed == str(base / "tenants.toml")
    assert cfg.tenancy.database == f"sqlite://{base / 'db' / 'feedgate.db'}"
    assert cfg.billing.plans == str(base / ".." / "plans.toml")
    assert cfg.billing.spool_dir == str(base / "spool")
    assert cfg.billing.ledger == "sqlite:///abs/ledger.db"  # absolute: as written
    assert cfg.database_url == f"sqlite://{base / 'db' / 'feedgate.db'}"
    # A relative path given in the environment is the shell's: the working directory's.
    assert from_env.data_dir == str(elsewhere / "here")


def test_the_default_data_dir_is_beside_the_config_file(tmp_path: Path) -> None:
    cfg = load(tmp_path, "")
    assert cfg.data_dir == str(tmp_path.resolve() / "var")
    assert load_config(None, env={}).data_dir == "var"  # no file: the working directory's


def test_a_served_config_finds_its_keys_from_any_directory(tmp_path: Path) -> None:
    """The CLI reads a --local database under the config's data_dir wherever it is run."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gw.toml").write_text('data_dir = "var"\n[tenancy]\nenabled = true\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "protos")])}
    for cwd in (conf, tmp_path):
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from gateway.config import load_config;"
                " print(load_config(sys.argv[1], env={}).database_url)",
                str(Path(os.path.relpath(conf / "gw.toml", cwd))),
            ],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"sqlite:///{conf.resolve() / 'var'}/feedgate.db"


def test_code_built_configs_are_validated_and_replaceable() -> None:
    with pytest.raises(ValueError):
        RtspConfig(port=70000)
    with pytest.raises(ValueError):
        CameraConfig(id="no spaces allowed")
    cfg = Config(cameras=(CameraConfig(id="cam1"),))
    moved = dataclasses.replace(cfg, rtsp=dataclasses.replace(cfg.rtsp, port=9554))
    assert moved.rtsp.port == 9554 and moved.camera("cam1") is not None
    assert str(Config().zone) == "Europe/London"


def test_the_config_has_a_json_schema() -> None:
    """The same declared types give a JSON Schema (2020-12, as OpenAPI 3.1 uses)."""
    schema = TypeAdapter(Config).json_schema()
    rtsp = schema["$defs"]["RtspConfig"]["properties"]["port"]
    assert rtsp == {
        "default": 8554,
        "maximum": 65535,
        "minimum": 0,
        "title": "Port",
        "type": "integer",
    }
    assert schema["$defs"]["RtspConfig"]["additionalProperties"] is False
    json.dumps(schema)
