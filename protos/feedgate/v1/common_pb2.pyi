import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tenant(_message.Message):
    __slots__ = ("id", "name", "kind", "status", "jwks_url", "issuer", "algorithms")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    JWKS_URL_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    ALGORITHMS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    kind: str
    status: str
    jwks_url: str
    issuer: str
    algorithms: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., kind: _Optional[str] = ..., status: _Optional[str] = ..., jwks_url: _Optional[str] = ..., issuer: _Optional[str] = ..., algorithms: _Optional[_Iterable[str]] = ...) -> None: ...

class Principal(_message.Message):
    __slots__ = ("id", "tenant_id", "name", "kind", "roles", "disabled", "has_digest", "has_password")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    HAS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    HAS_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    name: str
    kind: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    disabled: bool
    has_digest: bool
    has_password: bool
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., name: _Optional[str] = ..., kind: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., disabled: _Optional[bool] = ..., has_digest: _Optional[bool] = ..., has_password: _Optional[bool] = ...) -> None: ...

class Camera(_message.Message):
    __slots__ = ("id", "owner_tenant", "name", "tags", "location", "area_type", "retention_days", "latitude", "longitude")
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    AREA_TYPE_FIELD_NUMBER: _ClassVar[int]
    RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    LATITUDE_FIELD_NUMBER: _ClassVar[int]
    LONGITUDE_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner_tenant: str
    name: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    location: str
    area_type: str
    retention_days: int
    latitude: float
    longitude: float
    def __init__(self, id: _Optional[str] = ..., owner_tenant: _Optional[str] = ..., name: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., location: _Optional[str] = ..., area_type: _Optional[str] = ..., retention_days: _Optional[int] = ..., latitude: _Optional[float] = ..., longitude: _Optional[float] = ...) -> None: ...

class TimeWindow(_message.Message):
    __slots__ = ("start", "end", "weekdays")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    WEEKDAYS_FIELD_NUMBER: _ClassVar[int]
    start: str
    end: str
    weekdays: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, start: _Optional[str] = ..., end: _Optional[str] = ..., weekdays: _Optional[_Iterable[int]] = ...) -> None: ...

class Constraints(_message.Message):
    __slots__ = ("time_windows", "max_concurrent_streams", "max_playback_age_s", "purpose_required", "quality_cap", "ptz_priority")
    TIME_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_STREAMS_FIELD_NUMBER: _ClassVar[int]
    MAX_PLAYBACK_AGE_S_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    QUALITY_CAP_FIELD_NUMBER: _ClassVar[int]
    PTZ_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    time_windows: _containers.RepeatedCompositeFieldContainer[TimeWindow]
    max_concurrent_streams: int
    max_playback_age_s: int
    purpose_required: bool
    quality_cap: str
    ptz_priority: int
    def __init__(self, time_windows: _Optional[_Iterable[_Union[TimeWindow, _Mapping]]] = ..., max_concurrent_streams: _Optional[int] = ..., max_playback_age_s: _Optional[int] = ..., purpose_required: _Optional[bool] = ..., quality_cap: _Optional[str] = ..., ptz_priority: _Optional[int] = ...) -> None: ...

class Grant(_message.Message):
    __slots__ = ("id", "owner_tenant", "grantee_tenant", "camera_ids", "camera_tags", "rights", "constraints", "created_at", "revoked_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_TENANT_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_TENANT_FIELD_NUMBER: _ClassVar[int]
    CAMERA_IDS_FIELD_NUMBER: _ClassVar[int]
    CAMERA_TAGS_FIELD_NUMBER: _ClassVar[int]
    RIGHTS_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner_tenant: str
    grantee_tenant: str
    camera_ids: _containers.RepeatedScalarFieldContainer[str]
    camera_tags: _containers.RepeatedScalarFieldContainer[str]
    rights: _containers.RepeatedScalarFieldContainer[str]
    constraints: Constraints
    created_at: _timestamp_pb2.Timestamp
    revoked_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., owner_tenant: _Optional[str] = ..., grantee_tenant: _Optional[str] = ..., camera_ids: _Optional[_Iterable[str]] = ..., camera_tags: _Optional[_Iterable[str]] = ..., rights: _Optional[_Iterable[str]] = ..., constraints: _Optional[_Union[Constraints, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
