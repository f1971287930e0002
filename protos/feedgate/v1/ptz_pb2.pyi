import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PtzCameraRequest(_message.Message):
    __slots__ = ("camera", "purpose")
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    camera: str
    purpose: str
    def __init__(self, camera: _Optional[str] = ..., purpose: _Optional[str] = ...) -> None: ...

class PtzVector(_message.Message):
    __slots__ = ("pan", "tilt", "zoom")
    PAN_FIELD_NUMBER: _ClassVar[int]
    TILT_FIELD_NUMBER: _ClassVar[int]
    ZOOM_FIELD_NUMBER: _ClassVar[int]
    pan: float
    tilt: float
    zoom: float
    def __init__(self, pan: _Optional[float] = ..., tilt: _Optional[float] = ..., zoom: _Optional[float] = ...) -> None: ...

class MoveRequest(_message.Message):
    __slots__ = ("camera", "purpose", "kind", "vector", "timeout")
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    camera: str
    purpose: str
    kind: str
    vector: PtzVector
    timeout: float
    def __init__(self, camera: _Optional[str] = ..., purpose: _Optional[str] = ..., kind: _Optional[str] = ..., vector: _Optional[_Union[PtzVector, _Mapping]] = ..., timeout: _Optional[float] = ...) -> None: ...

class GotoRequest(_message.Message):
    __slots__ = ("camera", "purpose", "preset", "home")
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    HOME_FIELD_NUMBER: _ClassVar[int]
    camera: str
    purpose: str
    preset: str
    home: bool
    def __init__(self, camera: _Optional[str] = ..., purpose: _Optional[str] = ..., preset: _Optional[str] = ..., home: _Optional[bool] = ...) -> None: ...

class SetPresetRequest(_message.Message):
    __slots__ = ("camera", "purpose", "name", "token")
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    camera: str
    purpose: str
    name: str
    token: str
    def __init__(self, camera: _Optional[str] = ..., purpose: _Optional[str] = ..., name: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class PtzPreset(_message.Message):
    __slots__ = ("token", "name", "position")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    token: str
    name: str
    position: PtzVector
    def __init__(self, token: _Optional[str] = ..., name: _Optional[str] = ..., position: _Optional[_Union[PtzVector, _Mapping]] = ...) -> None: ...

class PtzPresetList(_message.Message):
    __slots__ = ("presets",)
    PRESETS_FIELD_NUMBER: _ClassVar[int]
    presets: _containers.RepeatedCompositeFieldContainer[PtzPreset]
    def __init__(self, presets: _Optional[_Iterable[_Union[PtzPreset, _Mapping]]] = ...) -> None: ...

class PtzLock(_message.Message):
    __slots__ = ("camera", "state", "holder_kind", "priority", "until", "reason")
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HOLDER_KIND_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    camera: str
    state: str
    holder_kind: str
    priority: int
    until: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, camera: _Optional[str] = ..., state: _Optional[str] = ..., holder_kind: _Optional[str] = ..., priority: _Optional[int] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class PtzStatus(_message.Message):
    __slots__ = ("position", "moving", "lock")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    MOVING_FIELD_NUMBER: _ClassVar[int]
    LOCK_FIELD_NUMBER: _ClassVar[int]
    position: PtzVector
    moving: bool
    lock: PtzLock
    def __init__(self, position: _Optional[_Union[PtzVector, _Mapping]] = ..., moving: _Optional[bool] = ..., lock: _Optional[_Union[PtzLock, _Mapping]] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("camera", "reason", "seconds")
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    camera: str
    reason: str
    seconds: float
    def __init__(self, camera: _Optional[str] = ..., reason: _Optional[str] = ..., seconds: _Optional[float] = ...) -> None: ...
