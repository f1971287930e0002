"""One typed configuration, loaded defaults → TOML file → ``FEEDGATE_*`` env → validation.

Every error names where the bad value came from (file and key, or the environment variable)
and why it is bad, so an operator can fix a config without reading code.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ENV_PREFIX = "FEEDGATE_"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(ValueError):
    """A config value is missing, malformed or out of range."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        super().__init__(f"{source}: {key}: {reason}")
        self.source = source
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class RtspConfig:
    host: str = "0.0.0.0"
    port: int = 8554
    # UDP egress/ingest ports: RTP on rtp_port, RTCP on rtp_port + 1.
    rtp_port: int = 8000
    # Worker processes sharing the RTSP port (SO_REUSEPORT); worker 0 owns every camera's ingest.
    workers: int = 1
    session_timeout: float = 60.0
    # A reader whose socket stays backed up this long is disconnected (MediaMTX uses 10 s).
    write_timeout: float = 10.0
    # Bytes a reader may have queued in its socket buffer before it starts losing frames.
    reader_queue_bytes: int = 8 * 1024 * 1024
    # Upper bound on one camera's GOP cache; a longer GOP is not cached (readers then wait).
    gop_cache_bytes: int = 16 * 1024 * 1024
    max_connections: int = 10_000
    # Seconds between usage reports for open sessions (a crash loses at most one interval).
    report_interval: float = 5.0
    # RTSPS (RTSP over TLS, media interleaved in the same TLS stream) on tls_port when tls_cert
    # and tls_key (PEM, relative to the config file) are set. Served by worker 0 only.
    tls_port: int = 8322
    tls_cert: str = ""
    tls_key: str = ""


@dataclass(frozen=True)
class HttpConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    # PEM files (relative to the config file): serve HTTPS instead of HTTP.
    tls_cert: str = ""
    tls_key: str = ""


@dataclass(frozen=True)
class GrpcConfig:
    """The control API (tenants, cameras, grants, tokens, audit); served when tenancy is on."""

    host: str = "127.0.0.1"
    port: int = 50051  # 0: no control API in this process
    # PEM files (relative to the config file): serve the control API over TLS; with
    # tls_client_ca, require client certificates signed by that CA (mutual TLS).
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # The tenant that runs the network: its admins manage every tenant.
    platform_tenant: str = "council"


@dataclass(frozen=True)
class BillingConfig:
    """Metering and invoicing. Needs tenancy (usage is attributed to tenants)."""

    enabled: bool = False
    # "" means the tenancy database; with redis_url set, events go through a Redis Stream
    # into this ledger (PostgreSQL for shared deployments).
    ledger: str = ""
    redis_url: str = ""
    stream: str = "feedgate:usage"
    # LedgerConsumers this node runs (on worker 0), each with its own ledger connection: while
    # one waits for PostgreSQL's COPY the other reads and checks the next entries (2 measured
    # 1.25x one on 2 cores; see BENCHMARKS.md). 0: this node only produces (another consumes).
    consumers: int = 2
    # Where events wait when the ledger or Redis is down ("" = <data_dir>/spool).
    spool_dir: str = ""
    # Price plans and tenant assignments (TOML), relative to the config file.
    plans: str = ""
    stripe_api_key: str = ""
    stripe_api_base: str = ""  # e.g. a localstripe URL in tests
    stripe_webhook_secret: str = ""


@dataclass(frozen=True)
class TenancyConfig:
    """Tenants, grants, tokens and audit. Off: every configured camera is open (a lab relay)."""

    enabled: bool = False
    # "" means sqlite:///<data_dir>/feedgate.db; or postgresql://user@host/db when shared.
    database: str = ""
    # A TOML file of tenants/principals/cameras/grants loaded (upserted) at start.
    seed: str = ""
    issuer: str = "feedgate"
    audience: str = "feedgate"
    token_leeway: float = 30.0
    # How often live sessions are re-checked (expiry, revocation, suspension).
    recheck_interval: float = 0.25
    # A lifted (liftable) mask comes back after this long; the viewer reconnects masked.
    mask_lift_timeout: float = 1800.0


@dataclass(frozen=True)
class CameraConfig:
    id: str
    name: str = ""
    # "push" (an encoder ANNOUNCEs to rtsp://gateway/<id>) or an rtsp:// URL to pull from.
    source: str = "push"
    # Optional lower-resolution stream of the same camera, served as <id>/sub.
    sub_source: str | None = None
    transport: Literal["tcp", "udp"] = "tcp"
    username: str | None = None
    password: str | None = None
    # A pull source is started at boot and kept up; on_demand starts it with the first reader.
    on_demand: bool = False

    @property
    def is_push(self) -> bool:
        return self.source == "push"


@dataclass(frozen=True)
class Config:
    rtsp: RtspConfig = field(default_factory=RtspConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    tenancy: TenancyConfig = field(default_factory=TenancyConfig)
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    billing: BillingConfig = field(default_factory=BillingConfig)
    cameras: tuple[CameraConfig, ...] = ()
    data_dir: str = "var"
    log_level: str = "INFO"

    @property
    def database_url(self) -> str:
        return self.tenancy.database or f"sqlite:///{Path(self.data_dir).resolve()}/feedgate.db"

    def camera(self, camera_id: str) -> CameraConfig | None:
        for cam in self.cameras:
            if cam.id == camera_id:
                return cam
        return None


def _coerce(value: Any, tp: Any, source: str, key: str) -> Any:
    """Convert a TOML or env value to the declared field type, or explain why not."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], source, key)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(source, key, f"must be one of {', '.join(map(str, allowed))}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        ):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(source, key, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(source, key, f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        raise ConfigError(source, key, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(source, key, f"expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return float(str(value))
        except ValueError:
            raise ConfigError(source, key, f"expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(source, key, f"expected a string, got {value!r}")
        return value
    raise ConfigError(source, key, f"unsupported type {tp!r}")


def _build(cls: Any, data: Mapping[str, Any], source: str, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(source, full, f"unknown key (known: {', '.join(sorted(known))})")
        kwargs[key] = _coerce(value, hints[key], source, full)
    missing = [
        f.name
        for f in known.values()
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(source, f"{prefix}{missing[0]}", "required")
    return cls(**kwargs)


def _validate(cfg: Config, source: str) -> None:
    def port(key: str, value: int) -> None:
        if not 0 <= value <= 65535:
            raise ConfigError(source, key, f"port {value} out of range 0..65535")

    port("rtsp.port", cfg.rtsp.port)
    port("http.port", cfg.http.port)
    port("grpc.port", cfg.grpc.port)
    port("rtsp.rtp_port", cfg.rtsp.rtp_port)
    port("rtsp.tls_port", cfg.rtsp.tls_port)
    if cfg.rtsp.tls_cert and cfg.rtsp.tls_port and cfg.rtsp.tls_port == cfg.rtsp.port:
        raise ConfigError(source, "rtsp.tls_port", "must differ from rtsp.port")
    if cfg.rtsp.rtp_port % 2:
        raise ConfigError(source, "rtsp.rtp_port", "must be even (RTCP uses the next port)")
    if not 1 <= cfg.rtsp.workers <= 64:
        raise ConfigError(source, "rtsp.workers", "must be between 1 and 64")
    for key in ("session_timeout", "write_timeout", "report_interval"):
        if getattr(cfg.rtsp, key) <= 0:
            raise ConfigError(source, f"rtsp.{key}", "must be positive")
    if cfg.rtsp.reader_queue_bytes < 64 * 1024:
        raise ConfigError(source, "rtsp.reader_queue_bytes", "must be at least 65536")
    seen: set[str] = set()
    for i, cam in enumerate(cfg.cameras):
        key = f"cameras[{i}]"
        if not _ID_RE.match(cam.id):
            raise ConfigError(
                source, f"{key}.id", f"{cam.id!r} must be 1-64 of A-Z a-z 0-9 _ . - (start alnum)"
            )
        if cam.id in seen:
            raise ConfigError(source, f"{key}.id", f"duplicate camera id {cam.id!r}")
        seen.add(cam.id)
        for attr in ("source", "sub_source"):
            value = getattr(cam, attr)
            if value is None or (attr == "source" and value == "push"):
                continue
            if not value.startswith(("rtsp://", "rtsps://")):
                raise ConfigError(
                    source, f"{key}.{attr}", f"{value!r} must be 'push' or an rtsp:// URL"
                )
    if cfg.tenancy.database and not cfg.tenancy.database.startswith(
        ("sqlite://", "postgresql://", "postgres://")
    ):
        raise ConfigError(source, "tenancy.database", "must be sqlite://... or postgresql://...")
    if not 0 <= cfg.billing.consumers <= 32:
        raise ConfigError(source, "billing.consumers", "must be between 0 and 32")
    _validate_tls(cfg, source)
    if cfg.billing.enabled and not cfg.tenancy.enabled:
        raise ConfigError(source, "billing.enabled", "needs tenancy.enabled (usage is per tenant)")
    if cfg.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(source, "log_level", "must be DEBUG, INFO, WARNING or ERROR")


# Keys naming files, resolved against the config file's directory when relative.
_FILE_KEYS = (
    ("rtsp", "tls_cert"),
    ("rtsp", "tls_key"),
    ("tenancy", "seed"),
    ("billing", "plans"),
    ("http", "tls_cert"),
    ("http", "tls_key"),
    ("grpc", "tls_cert"),
    ("grpc", "tls_key"),
    ("grpc", "tls_client_ca"),
)


def _validate_tls(cfg: Config, source: str) -> None:
    from gateway.tls import TlsError, check_files

    for section, client_ca in (("rtsp", ""), ("http", ""), ("grpc", cfg.grpc.tls_client_ca)):
        sec = getattr(cfg, section)
        if not sec.tls_cert and not sec.tls_key:
            if client_ca:
                raise ConfigError(source, f"{section}.tls_client_ca", "needs tls_cert and tls_key")
            continue
        if not sec.tls_cert or not sec.tls_key:
            missing = "tls_key" if sec.tls_cert else "tls_cert"
            raise ConfigError(source, f"{section}.{missing}", "required with the other TLS file")
        try:
            check_files(sec.tls_cert, sec.tls_key, client_ca)
        except TlsError as exc:
            raise ConfigError(source, f"{section}.{exc.which}", str(exc)) from None


def _from_dict(data: Mapping[str, Any], source: str) -> Config:
    allowed = {f.name for f in dataclasses.fields(Config)}
    for key in data:
        if key not in allowed:
            raise ConfigError(source, key, f"unknown key (known: {', '.join(sorted(allowed))})")
    sections: dict[str, Any] = {}
    for name, cls in (
        ("rtsp", RtspConfig),
        ("http", HttpConfig),
        ("tenancy", TenancyConfig),
        ("grpc", GrpcConfig),
        ("billing", BillingConfig),
    ):
        raw = data.get(name, {})
        if not isinstance(raw, Mapping):
            raise ConfigError(source, name, "must be a table")
        sections[name] = _build(cls, raw, source, f"{name}.")
    cams_raw = data.get("cameras", [])
    if not isinstance(cams_raw, list):
        raise ConfigError(source, "cameras", "must be an array of tables ([[cameras]])")
    cameras = []
    for i, raw in enumerate(cams_raw):
        if not isinstance(raw, Mapping):
            raise ConfigError(source, f"cameras[{i}]", "must be a table")
        cameras.append(_build(CameraConfig, raw, source, f"cameras[{i}]."))
    top = {k: v for k, v in data.items() if k in ("data_dir", "log_level")}
    scalars = _build(_TopLevel, top, source, "")
    return Config(
        rtsp=sections["rtsp"],
        http=sections["http"],
        tenancy=sections["tenancy"],
        grpc=sections["grpc"],
        billing=sections["billing"],
        cameras=tuple(cameras),
        data_dir=scalars.data_dir,
        log_level=scalars.log_level,
    )


@dataclass(frozen=True)
class _TopLevel:
    data_dir: str = "var"
    log_level: str = "INFO"


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """Overlay FEEDGATE_SECTION__KEY=value (e.g. FEEDGATE_RTSP__PORT=9554) onto the file's data."""
    applied = []
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) == 1 and parts[0] in ("data_dir", "log_level"):
            data[parts[0]] = value
        elif len(parts) == 2 and parts[0] in ("rtsp", "http", "tenancy", "grpc", "billing"):
            section = data.setdefault(parts[0], {})
            section[parts[1]] = value
        else:
            continue
        applied.append(name)
    return applied


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Load defaults, then the TOML file (if any), then FEEDGATE_* variables, then validate."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(source, "-", f"cannot read: {exc.strerror}") from None
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(source, "-", "not UTF-8 text") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, "-", f"TOML syntax: {exc}") from None
    if path is not None:
        # Relative file names in the config are relative to the config file, not the cwd.
        for section, key in _FILE_KEYS:
            table = data.get(section)
            if not isinstance(table, dict):
                continue
            value = table.get(key)
            if isinstance(value, str) and value and not os.path.isabs(value):
                table[key] = str(Path(path).resolve().parent / value)
    file_cfg = _from_dict(data, source)
    _validate(file_cfg, source)
    applied = _apply_env(data, env)
    if not applied:
        return file_cfg
    env_source = f"{source} + env ({', '.join(applied)})"
    cfg = _from_dict(data, env_source)
    _validate(cfg, env_source)
    return cfg
