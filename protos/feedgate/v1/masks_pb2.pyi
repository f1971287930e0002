from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class Mask(_message.Message):
    __slots__ = ("id", "camera_id", "points", "kind", "tenant_kinds", "label")
    ID_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TENANT_KINDS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    id: str
    camera_id: str
    points: _containers.RepeatedCompositeFieldContainer[Point]
    kind: str
    tenant_kinds: _containers.RepeatedScalarFieldContainer[str]
    label: str
    def __init__(self, id: _Optional[str] = ..., camera_id: _Optional[str] = ..., points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., kind: _Optional[str] = ..., tenant_kinds: _Optional[_Iterable[str]] = ..., label: _Optional[str] = ...) -> None: ...

class PutMaskRequest(_message.Message):
    __slots__ = ("mask",)
    MASK_FIELD_NUMBER: _ClassVar[int]
    mask: Mask
    def __init__(self, mask: _Optional[_Union[Mask, _Mapping]] = ...) -> None: ...

class ListMasksRequest(_message.Message):
    __slots__ = ("camera_id",)
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    def __init__(self, camera_id: _Optional[str] = ...) -> None: ...

class ListMasksResponse(_message.Message):
    __slots__ = ("masks",)
    MASKS_FIELD_NUMBER: _ClassVar[int]
    masks: _containers.RepeatedCompositeFieldContainer[Mask]
    def __init__(self, masks: _Optional[_Iterable[_Union[Mask, _Mapping]]] = ...) -> None: ...

class DeleteMaskRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteMaskResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
