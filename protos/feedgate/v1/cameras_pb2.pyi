from feedgate.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PutCameraRequest(_message.Message):
    __slots__ = ("camera",)
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    camera: _common_pb2.Camera
    def __init__(self, camera: _Optional[_Union[_common_pb2.Camera, _Mapping]] = ...) -> None: ...

class GetCameraRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListCamerasRequest(_message.Message):
    __slots__ = ("owner_tenant",)
    OWNER_TENANT_FIELD_NUMBER: _ClassVar[int]
    owner_tenant: str
    def __init__(self, owner_tenant: _Optional[str] = ...) -> None: ...

class ListCamerasResponse(_message.Message):
    __slots__ = ("cameras",)
    CAMERAS_FIELD_NUMBER: _ClassVar[int]
    cameras: _containers.RepeatedCompositeFieldContainer[_common_pb2.Camera]
    def __init__(self, cameras: _Optional[_Iterable[_Union[_common_pb2.Camera, _Mapping]]] = ...) -> None: ...

class DeleteCameraRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteCameraResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetCameraOnvifRequest(_message.Message):
    __slots__ = ("camera_id", "onvif_url", "onvif_username", "onvif_profile", "password", "clear_password")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    ONVIF_URL_FIELD_NUMBER: _ClassVar[int]
    ONVIF_USERNAME_FIELD_NUMBER: _ClassVar[int]
    ONVIF_PROFILE_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CLEAR_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    onvif_url: str
    onvif_username: str
    onvif_profile: str
    password: str
    clear_password: bool
    def __init__(self, camera_id: _Optional[str] = ..., onvif_url: _Optional[str] = ..., onvif_username: _Optional[str] = ..., onvif_profile: _Optional[str] = ..., password: _Optional[str] = ..., clear_password: _Optional[bool] = ...) -> None: ...

class GetCameraOnvifRequest(_message.Message):
    __slots__ = ("camera_id",)
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    def __init__(self, camera_id: _Optional[str] = ...) -> None: ...

class ClearCameraOnvifRequest(_message.Message):
    __slots__ = ("camera_id",)
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    def __init__(self, camera_id: _Optional[str] = ...) -> None: ...

class ClearCameraOnvifResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CameraOnvif(_message.Message):
    __slots__ = ("camera_id", "onvif_url", "onvif_username", "onvif_profile", "password_set")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    ONVIF_URL_FIELD_NUMBER: _ClassVar[int]
    ONVIF_USERNAME_FIELD_NUMBER: _ClassVar[int]
    ONVIF_PROFILE_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_SET_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    onvif_url: str
    onvif_username: str
    onvif_profile: str
    password_set: bool
    def __init__(self, camera_id: _Optional[str] = ..., onvif_url: _Optional[str] = ..., onvif_username: _Optional[str] = ..., onvif_profile: _Optional[str] = ..., password_set: _Optional[bool] = ...) -> None: ...
