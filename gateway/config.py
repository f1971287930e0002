"""One typed configuration, loaded defaults → TOML file → ``FEEDGATE_*`` env → validation.

The sections are declared as pydantic dataclasses: each field's type says what it accepts
(``Port``, ``Seconds``, ``ConfigPath``...), pydantic checks it, and an error names where the bad
value came from (the file, or the environment variable), the key and why it is bad, so an
operator can fix a config without reading code. Rules that span fields (a TLS key needs its
certificate, billing needs tenancy) are checked after that, by :func:`_check`.

Relative paths (every field typed ``ConfigPath``, and ``sqlite://`` database URLs) are relative
to the config file's directory, whoever's working directory the process has; the same ones from
the environment are relative to the working directory. Times a person sets or reads (grant
windows, months, invoices) are in ``timezone`` (default ``Europe/London``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import typing
import zoneinfo
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic.dataclasses import dataclass

from gateway.cluster.settings import ClusterConfig
from gateway.configpaths import PATH, ConfigPath
from gateway.configtypes import ID_RE, STRICT, Port, Seconds
from gateway.keysettings import KeysConfig as KeysConfig
from gateway.mediamtx.settings import MediaMtxConfig
from gateway.memory import MemoryConfig
from gateway.ptz.config import PtzConfig as PtzConfig
from gateway.recording.settings import ExportConfig as ExportConfig
from gateway.recording.settings import RecordingConfig as RecordingConfig
from gateway.rtspsettings import RtspConfig as RtspConfig
from gateway.webrtc.settings import WebRtcConfig as WebRtcConfig
from tenants.loader import FileError, read_toml, validate

ENV_PREFIX = "FEEDGATE_"
_ID_RE = ID_RE
_STRICT = STRICT


class ConfigError(FileError):
    """A config value is missing, malformed or out of range: ``"{source}: {key}: {reason}"``."""

    @property
    def source(self) -> str:
        return self.file


# ------------------------------------------------------------------------------ field types


_PATH = PATH  # fields typed ConfigPath (or annotated with it) name files


def _source(value: str | None) -> str | None:
    if value is None or value == "push" or value.startswith(("rtsp://", "rtsps://")):
        return value
    raise ValueError(f"{value!r} must be 'push' or an rtsp:// URL")


def _database_url(value: str) -> str:
    if value and not value.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise ValueError("must be sqlite://... or postgresql://...")
    return value


def _redis_url(value: str) -> str:
    if value and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be redis://..., rediss://... or unix://...")
    return value


def _zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (an IANA name: Europe/London)") from None
    return value


def _node_id(value: str) -> str:
    return _camera_id(value) if value else value  # the same alphabet as ids


DatabaseUrl = Annotated[str, AfterValidator(_database_url), _PATH]


def _camera_id(value: str) -> str:
    if not _ID_RE.match(value):
        raise ValueError(f"{value!r} must be 1-64 of A-Z a-z 0-9 _ . - (start alnum)")
    return value


CameraId = Annotated[str, AfterValidator(_camera_id)]


CameraSource = Annotated[str, AfterValidator(_source)]
LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR"],
    BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v),
]


def _onvif_url(value: str) -> str:
    if not value:
        return value
    from urllib.parse import urlsplit

    parts = urlsplit(value if "://" in value else f"http://{value}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{value!r}: expected http://host:port")
    if parts.username or parts.password:
        raise ValueError("put the credentials in onvif_username/onvif_password, not the URL")
    return value


def _preset_tokens(value: str) -> str:
    from gateway.ptz.model import PRESET_TOKEN_RE

    for token in (t.strip() for t in value.split(",")):
        if token and not PRESET_TOKEN_RE.match(token):
            raise ValueError(f"{token!r} is not a preset token")
    return value


# ------------------------------------------------------------------------------ sections


@dataclass(frozen=True, config=_STRICT)
class HttpConfig:
    host: str = "0.0.0.0"
    port: Port = 8080
    # PEM files (relative to the config file): serve HTTPS instead of HTTP.
    tls_cert: ConfigPath = ""
    tls_key: ConfigPath = ""
    # A bearer credential for Prometheus to scrape /metrics with ("": only the platform
    # tenant's admins and operators may read /metrics).
    metrics_token: str = ""
    # The secret MediaMTX presents to /mediamtx/auth (Basic password or Bearer); "" = the hook
    # answers loopback callers only.
    mediamtx_secret: str = ""


@dataclass(frozen=True, config=_STRICT)
class GrpcConfig:
    """The control API (tenants, cameras, grants, tokens, audit); served when tenancy is on."""

    host: str = "127.0.0.1"
    port: Port = 50051  # 0: no control API in this process
    # PEM files (relative to the config file): serve the control API over TLS; with
    # tls_client_ca, require client certificates signed by that CA (mutual TLS).
    tls_cert: ConfigPath = ""
    tls_key: ConfigPath = ""
    tls_client_ca: ConfigPath = ""
    # The tenant that runs the network: its admins manage every tenant.
    platform_tenant: str = "council"


@dataclass(frozen=True, config=_STRICT)
class BillingConfig:
    """Metering and invoicing. Needs tenancy (usage is attributed to tenants)."""

    enabled: bool = False
    # "" means the tenancy database; with redis_url set, events go through a Redis Stream
    # into this ledger (PostgreSQL for shared deployments).
    ledger: DatabaseUrl = ""
    redis_url: Annotated[str, AfterValidator(_redis_url)] = ""
    stream: str = "feedgate:usage"
    # LedgerConsumers this node runs (on worker 0), each with its own ledger connection: while
    # one waits for PostgreSQL's COPY the other reads and checks the next entries (2 measured
    # 1.25x one on 2 cores; see BENCHMARKS.md). 0: this node only produces (another consumes).
    consumers: Annotated[int, Field(ge=0, le=32)] = 2
    # Where events wait when the ledger or Redis is down ("" = <data_dir>/spool).
    spool_dir: ConfigPath = ""
    # Price plans and tenant assignments (TOML), relative to the config file.
    plans: ConfigPath = ""
    stripe_api_key: str = ""
    stripe_api_base: str = ""  # e.g. a localstripe URL in tests
    stripe_webhook_secret: str = ""


@dataclass(frozen=True, config=_STRICT)
class TenancyConfig:
    """Tenants, grants, tokens and audit. Off: every configured camera is open (a lab relay)."""

    enabled: bool = False
    # "" means sqlite:///<data_dir>/feedgate.db; or postgresql://user@host/db when shared.
    database: DatabaseUrl = ""
    # A TOML file of tenants/principals/cameras/grants loaded (upserted) at start.
    seed: ConfigPath = ""
    issuer: str = "feedgate"
    audience: str = "feedgate"
    # Clock skew allowed on a token's exp/nbf/iat: an expired token works this much longer.
    token_leeway: Annotated[float, Field(ge=0, le=300, allow_inf_nan=False)] = 5.0
    # A capped stream's lease lives this long unless its process renews it (every third of
    # it). A node that crashes and stays down frees its slots after this; one that restarts
    # voids its previous incarnation's leases at start.
    lease_ttl: Annotated[float, Field(ge=3, le=3600, allow_inf_nan=False)] = 15.0
    # How often live sessions are re-checked (expiry, revocation, suspension).
    recheck_interval: Seconds = 0.25
    # A lifted (liftable) mask comes back after this long; the viewer reconnects masked.
    mask_lift_timeout: Seconds = 1800.0


@dataclass(frozen=True, config=_STRICT)
class ConsoleConfig:
    """The web console (/console): sign-in sessions and cameras' stills."""

    enabled: bool = True
    # How long a console sign-in lasts (the session is one of our tokens: at most 24 h).
    session_ttl: Annotated[float, Field(ge=60.0, le=86400.0)] = 28800.0
    # How long one decoded still of a camera is shown before a fresh keyframe is decoded.
    still_ttl: Annotated[float, Field(ge=0.5, le=3600.0)] = 10.0


@dataclass(frozen=True, config=_STRICT)
class IngestConfig:
    """How camera streams are taken in (gateway/sources/, gateway/stream/)."""

    # UDP sources, pulled or pushed: packets wait up to this long (s) for the gaps before them
    # to fill, so readers get them in order; later arrivals are dropped and counted. 0: none.
    reorder_window: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.05
    reorder_packets: Annotated[int, Field(ge=8, le=8192)] = 512  # held at most, per track
    # No media for max(stall_after, stall_frames frame intervals): the camera is stalled
    # (logged, audited as an outage, in /metrics); its readers stay connected through it.
    stall_after: Seconds = 3.0
    stall_frames: Annotated[int, Field(ge=1, le=1000)] = 10


@dataclass(frozen=True, config=_STRICT)
class CameraConfig:
    id: CameraId
    name: str = ""
    # "push" (an encoder ANNOUNCEs to rtsp://gateway/<id>) or an rtsp:// or rtsps:// URL.
    source: CameraSource = "push"
    # Optional lower-resolution stream of the same camera, served as <id>/sub.
    sub_source: Annotated[str | None, AfterValidator(_source)] = None
    transport: Literal["tcp", "udp"] = "tcp"
    username: str | None = None
    password: str | None = None
    # rtsps:// sources (gateway/sources/source_tls.py): trust this CA bundle instead of the
    # system's, expect this name in the certificate, or (false) accept any one, with a warning.
    tls_ca: ConfigPath = ""
    tls_server_name: str = ""
    tls_verify: bool = True
    # A pull source is started at boot and kept up; on_demand starts it with the first reader.
    on_demand: bool = False
    # ONVIF PTZ: the camera's device service (http://host:port) and the WS-Security
    # credentials feedgate steers it with (never logged).
    onvif: Annotated[str, AfterValidator(_onvif_url)] = ""
    onvif_username: str = ""
    onvif_password: str = field(default="", repr=False)
    onvif_profile: str = ""  # "" = the first profile with a PTZ configuration
    ptz_idle: Literal["home", "tour", "none"] = "home"  # what an unsteered camera does
    ptz_tour: Annotated[str, AfterValidator(_preset_tokens)] = ""  # comma-separated presets
    # Pushed cameras: a new publisher replaces the current one (true, MediaMTX's
    # overridePublisher) or is refused while it publishes (false).
    override_publisher: bool = True
    # Recorded (gateway/recording/): segment length ("0" = recording.segment_seconds) and the
    # purpose whose retention applies ("" = the register's retention_days for the camera).
    record: bool = False
    segment_seconds: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)] = 0.0
    record_purpose: str = ""

    @property
    def is_push(self) -> bool:
        return self.source == "push"


@dataclass(frozen=True, config=_STRICT)
class Config:
    rtsp: RtspConfig = field(default_factory=RtspConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    tenancy: TenancyConfig = field(default_factory=TenancyConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    billing: BillingConfig = field(default_factory=BillingConfig)
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)
    ptz: PtzConfig = field(default_factory=PtzConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    mediamtx: MediaMtxConfig = field(default_factory=MediaMtxConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    cameras: tuple[CameraConfig, ...] = ()
    data_dir: ConfigPath = "var"
    log_level: LogLevel = "INFO"
    # The deployment's time zone (IANA): grant windows, months and invoices are in local time.
    timezone: Annotated[str, AfterValidator(_zone)] = "Europe/London"
    # This node's name among several sharing one database, stable across restarts ("" = the
    # host name and a digest of data_dir, so two nodes on one host differ).
    node_id: Annotated[str, AfterValidator(_node_id)] = ""

    @property
    def database_url(self) -> str:
        return self.tenancy.database or f"sqlite:///{Path(self.data_dir).resolve()}/feedgate.db"

    @property
    def node(self) -> str:
        if self.node_id:
            return self.node_id
        digest = hashlib.sha256(str(Path(self.data_dir).resolve()).encode()).hexdigest()
        return f"{socket.gethostname()[:40]}-{digest[:8]}"

    @property
    def recording_dir(self) -> Path:
        return Path(self.recording.dir or Path(self.data_dir) / "recordings").resolve()

    @property
    def clustered(self) -> bool:  # nodes share the tenancy database: one identity
        return self.tenancy.enabled and self.database_url.startswith(("postgres://", "postgresql"))

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    def camera(self, camera_id: str) -> CameraConfig | None:
        for cam in self.cameras:
            if cam.id == camera_id:
                return cam
        return None


# ------------------------------------------------------------------------------ the layers


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _is_path(tp: Any) -> bool:
    return typing.get_origin(tp) is Annotated and any(
        m is _PATH for m in getattr(tp, "__metadata__", ())
    )


def _resolve(value: str, base: Path) -> str:
    """A relative file name or sqlite:// URL made absolute against `base`."""
    if value.startswith("sqlite://"):
        path = value[len("sqlite://") :]
        if path and path != ":memory:" and not os.path.isabs(path):
            return f"sqlite://{base / path}"
        return value
    if "://" in value or not value or os.path.isabs(value):
        return value
    return str(base / value)


def _resolved(obj: Any, base: Path) -> Any:
    """`obj` (a config dataclass) with every relative path field made absolute."""
    changes: dict[str, Any] = {}
    for name, tp in _hints(type(obj)).items():
        value = getattr(obj, name)
        if _is_path(tp) and isinstance(value, str):
            new = _resolve(value, base)
            if new != value:
                changes[name] = new
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            new_section = _resolved(value, base)
            if new_section is not value:
                changes[name] = new_section
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            items = tuple(_resolved(v, base) for v in value)
            if any(a is not b for a, b in zip(items, value, strict=True)):
                changes[name] = items
    return dataclasses.replace(obj, **changes) if changes else obj


def _sections() -> dict[str, type]:
    """The [section] tables of the config: fields whose type is a dataclass."""
    out = {}
    for name, tp in _hints(Config).items():
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out[name] = tp
    return out


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Overlay FEEDGATE_SECTION__KEY=value (e.g. FEEDGATE_RTSP__PORT=9554) and FEEDGATE_KEY for
    top-level keys onto the file's data. Returns {config key: variable name} for what it set.
    Other FEEDGATE_* variables (the CLI's own, e.g. FEEDGATE_TLS_CA) are not config."""
    sections = _sections()
    top = {n: tp for n, tp in _hints(Config).items() if n not in sections and n != "cameras"}
    applied: dict[str, str] = {}
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) == 1 and parts[0] in top:
            tp, target, key = top[parts[0]], data, parts[0]
        elif len(parts) == 2 and parts[0] in sections:
            section = data.setdefault(parts[0], {})
            if not isinstance(section, dict):
                continue  # the file's own error (a section that is not a table) is reported
            tp = _hints(sections[parts[0]]).get(parts[1])
            target, key = section, parts[1]
        else:
            continue
        target[key] = _resolve(value, Path.cwd()) if tp is not None and _is_path(tp) else value
        applied[".".join(parts)] = name
    return applied


def _check(cfg: Config, source: str) -> None:
    """The rules that span fields."""
    if cfg.rtsp.tls_cert and cfg.rtsp.tls_port and cfg.rtsp.tls_port == cfg.rtsp.port:
        raise ConfigError(source, "rtsp.tls_port", "must differ from rtsp.port")
    seen: set[str] = set()
    for i, cam in enumerate(cfg.cameras):
        if cam.id in seen:
            raise ConfigError(source, f"cameras[{i}].id", f"duplicate camera id {cam.id!r}")
        seen.add(cam.id)
        if cam.ptz_idle == "tour" and not cam.ptz_tour.strip(" ,"):
            raise ConfigError(source, f"cameras[{i}].ptz_tour", "ptz_idle 'tour' needs presets")
    wc = cfg.webrtc
    if (wc.udp_port_min == 0) != (wc.udp_port_max == 0):
        raise ConfigError(source, "webrtc.udp_port_max", "0 only with udp_port_min 0 (ephemeral)")
    if wc.udp_port_min > wc.udp_port_max:
        raise ConfigError(source, "webrtc.udp_port_max", "must be at least udp_port_min")
    if cfg.ptz.default_timeout > cfg.ptz.max_timeout:
        raise ConfigError(source, "ptz.default_timeout", "must not exceed ptz.max_timeout")
    from gateway.cluster.tls import problems as relay_tls_problems
    from gateway.sources.source_tls import problems as camera_tls_problems

    for key, reason in [
        *cfg.cluster.problems(),
        *relay_tls_problems(cfg),
        *camera_tls_problems(cfg.cameras),
    ]:
        raise ConfigError(source, key, reason)
    for i, cam in enumerate(cfg.cameras):
        if cam.record_purpose and cam.record_purpose not in cfg.recording.purposes:
            raise ConfigError(
                source, f"cameras[{i}].record_purpose",
                f"{cam.record_purpose!r} is not one of recording.purposes",
            )  # fmt: skip
        if 0 < cam.segment_seconds < 2:
            raise ConfigError(source, f"cameras[{i}].segment_seconds", "must be 0 or at least 2")
    _check_marks(cfg, source)
    if cfg.mediamtx.api_url and not cfg.tenancy.enabled:
        raise ConfigError(source, "mediamtx.api_url", "needs tenancy.enabled (the policy)")
    if cfg.cluster.enabled and cfg.rtsp.workers > 1:
        # Camera leases, caps and the registry are per node: scale out with more nodes.
        raise ConfigError(source, "rtsp.workers", "must be 1 on a cluster node (add nodes)")
    if cfg.billing.enabled and not cfg.tenancy.enabled:
        raise ConfigError(source, "billing.enabled", "needs tenancy.enabled (usage is per tenant)")
    for key in ("token_dir", "audit_key", "evidence_key") if cfg.clustered else ():
        if not getattr(cfg.keys, key):  # per-node keys: each node its own gateway
            why = "required with a shared (PostgreSQL) tenancy.database: see `feedgate keys init`"
            raise ConfigError(source, f"keys.{key}", why)
    _check_tls(cfg, source)


def _check_marks(cfg: Config, source: str) -> None:
    from gateway.recording.disk import parse_mark

    low, critical = parse_mark(cfg.recording.low_water), parse_mark(cfg.recording.critical)
    if low.kind == critical.kind and critical.value > low.value:
        raise ConfigError(source, "recording.critical", "must not be above recording.low_water")


def _check_tls(cfg: Config, source: str) -> None:
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


def _build(data: Mapping[str, Any], source: str, base: Path | None) -> Config:
    cfg = validate(Config, data, source, ConfigError)
    if base is not None:
        cfg = _resolved(cfg, base)
    _check(cfg, source)
    return cfg


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Load defaults, then the TOML file (if any), then FEEDGATE_* variables, then validate.

    A bad value in the file is reported against the file; one the environment set, against
    its variable."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    source = "<defaults>"
    base: Path | None = None
    if path is not None:
        source = str(path)
        data = read_toml(Path(path), ConfigError)
        base = Path(path).resolve().parent
    file_cfg = _build(data, source, base)
    applied = _apply_env(data, env)
    if not applied:
        return file_cfg
    try:
        return _build(data, f"{source} + env ({', '.join(sorted(applied.values()))})", base)
    except ConfigError as exc:
        var = applied.get(exc.key)
        if var is None:
            raise
        raise ConfigError(f"environment {var}", exc.key, exc.reason) from None
