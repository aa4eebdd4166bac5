"""Wire-protocol models shared by the agent and the server stub.

The contract is ``shared/protocol.md``. Every model keeps unknown fields
(``extra="allow"``) because deployed servers and clients send fields we do not
know about, and rejecting them would break interoperability.

Validation is strict where a bad value would hurt a server later (a naive
timestamp breaks the reference server's ``/api/statistics``; a base64 string
that does not decode is useless to a dashboard) and lenient elsewhere.
"""

from __future__ import annotations

import binascii
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

__all__ = [
    "REST_PATHS",
    "SOCKETIO_EVENTS",
    "ApiError",
    "CameraRegistration",
    "CameraRegistrationReply",
    "CameraStatus",
    "DetectionReply",
    "DetectionResult",
    "ErrorReply",
    "HealthReply",
    "HealthStatus",
    "HealthUpdate",
    "Kind",
    "NewDetection",
    "Ping",
    "PlateDetection",
    "Pong",
    "ValidationError",
    "VehicleDetection",
    "first_error",
    "format_timestamp",
    "now_timestamp",
    "parse_inbound",
]

MAX_ID_LEN = 128
# Far above any real frame, far below SQLite's 64-bit INTEGER limit (a bigger
# count would make a server's insert fail instead of being rejected cleanly).
MAX_COUNT = 1_000_000
HealthState = Literal["healthy", "warning", "error"]


class Kind(StrEnum):
    """The kinds of message a camera sends: one spelling for spool, uplink and stub."""

    DETECTION = "detection"
    HEALTH = "health"
    REGISTRATION = "registration"


# Where each kind goes (protocol.md): the Socket.IO event and the REST endpoint.
SOCKETIO_EVENTS: dict[Kind, str] = {
    Kind.DETECTION: "lpr_data",
    Kind.HEALTH: "health_status",
    Kind.REGISTRATION: "camera_register",
}
REST_PATHS: dict[Kind, str] = {
    Kind.DETECTION: "/api/detection",
    Kind.HEALTH: "/api/health",
    Kind.REGISTRATION: "/api/cameras/register",
}


def format_timestamp(moment: datetime) -> str:
    """Render a timestamp the way every deployed server can parse it.

    Deployed servers parse stored timestamps with ``datetime.fromisoformat``
    on Python versions that reject a trailing ``Z``, so always emit an offset.
    """
    if moment.tzinfo is None:
        raise ValueError("naive datetime: a timestamp on the wire needs a UTC offset")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def now_timestamp() -> str:
    return format_timestamp(datetime.now(UTC))


def _check_timestamp(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"timestamp {value!r} is not ISO 8601 (e.g. 2024-12-19T10:00:00+00:00)"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError(
            f"timestamp {value!r} has no UTC offset; send e.g. 2024-12-19T10:00:00Z"
        )
    return value


def _check_base64_image(value: str) -> str:
    if not value:
        return value
    payload = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        # strict_mode does in C what b64decode(validate=True) does with a
        # regex, several times faster on image-sized strings.
        binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError):
        raise ValueError("image is not valid base64") from None
    return value


def _check_uuid(value: str) -> str:
    try:
        uuid.UUID(value)
    except ValueError:
        raise ValueError(f"event_id {value!r} is not a UUID") from None
    return value


Timestamp = Annotated[str, AfterValidator(_check_timestamp)]
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN)]
Base64Image = Annotated[str, AfterValidator(_check_base64_image)]
EventId = Annotated[str, AfterValidator(_check_uuid)]
Confidence = Annotated[float, Field(ge=0.0, le=1.0)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
# The camera's per-kind sequence number (extension): strict, so "5" or 5.0 is
# an error rather than a silent coercion; 2**53 keeps it exact in JavaScript.
Seq = Annotated[int, Field(ge=1, le=2**53, strict=True)]


class _Message(BaseModel):
    """Base of every wire message: unknown fields are kept, never rejected."""

    # allow_inf_nan=False: NaN/Infinity are not JSON; a server cannot store
    # or echo them portably.
    model_config = ConfigDict(extra="allow", populate_by_name=True, allow_inf_nan=False)

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict to emit, without unset optional extensions."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class _CameraMessage(_Message):
    camera_id: Identifier
    checkpoint_id: Identifier
    timestamp: Timestamp


def _check_bbox(value: list[float]) -> list[float]:
    if len(value) != 4:
        raise ValueError(f"bbox must have exactly 4 numbers [x1, y1, x2, y2], got {len(value)}")
    x1, y1, x2, y2 = value
    if min(value) < 0:
        raise ValueError("bbox coordinates must be non-negative")
    if x1 > x2 or y1 > y2:
        raise ValueError("bbox must satisfy x1 <= x2 and y1 <= y2")
    return value


Box = Annotated[list[float], AfterValidator(_check_bbox)]


class VehicleDetection(_Message):
    bbox: Box
    confidence: Confidence
    # "class" is a Python keyword, hence the alias.
    vehicle_class: str = Field(default="vehicle", alias="class", max_length=64)


class PlateDetection(_Message):
    bbox: Box
    confidence: Confidence
    text: str = Field(default="", max_length=32)


class CameraRegistration(_Message):
    camera_id: Identifier
    checkpoint_id: Identifier
    timestamp: Timestamp | None = None


class DetectionResult(_CameraMessage):
    type: Literal["detection_result"] = "detection_result"
    event_id: EventId | None = None
    seq: Seq | None = None
    vehicles_count: Count = 0
    plates_count: Count = 0
    ocr_results: list[Annotated[str, Field(max_length=32)]] = Field(default_factory=list)
    vehicle_detections: list[VehicleDetection] = Field(default_factory=list)
    plate_detections: list[PlateDetection] = Field(default_factory=list)
    processing_time_ms: Annotated[float, Field(ge=0)] = 0
    annotated_image: Base64Image | None = None
    cropped_plates: list[Base64Image] = Field(default_factory=list)


class HealthStatus(_CameraMessage):
    type: Literal["health_check"] = "health_check"
    event_id: EventId | None = None
    seq: Seq | None = None
    component: Identifier
    status: HealthState
    message: str = Field(default="", max_length=1024)
    details: dict[str, Any] = Field(default_factory=dict)


class Ping(_Message):
    type: str = "test"
    message: str = ""
    timestamp: Timestamp | None = None


# --- replies (server -> camera) -------------------------------------------------


class _Reply(_Message):
    success: bool = True
    message: str = ""
    timestamp: str | None = None  # deployed servers reply with naive local times


class CameraRegistrationReply(_Reply):
    camera_id: str | None = None
    checkpoint_id: str | None = None


class DetectionReply(_Reply):
    detection_id: str | None = None
    camera_id: str | None = None
    checkpoint_id: str | None = None
    duplicate: bool | None = None


class HealthReply(_Reply):
    health_id: str | None = None
    camera_id: str | None = None
    checkpoint_id: str | None = None
    duplicate: bool | None = None


class Pong(_Reply):
    original_message: str | None = None


class ErrorReply(_Message):
    """Socket.IO ``error`` event / HTTP 4xx body."""

    message: str
    success: bool = False


ApiError = ErrorReply


# --- broadcasts (server -> dashboards) ---------------------------------------------


class NewDetection(_Message):
    detection_id: str
    camera_id: str
    checkpoint_id: str
    vehicles_count: int = 0
    plates_count: int = 0
    ocr_results: list[str] = Field(default_factory=list)
    timestamp: str


class HealthUpdate(_Message):
    health_id: str
    camera_id: str
    checkpoint_id: str
    component: str
    status: str
    message: str = ""
    timestamp: str


class CameraStatus(_Message):
    camera_id: str
    checkpoint_id: str
    status: str
    timestamp: str


# --- inbound validation helpers ----------------------------------------------------

M = TypeVar("M", bound=_Message)

_REQUIRED: dict[type[_Message], tuple[str, ...]] = {
    DetectionResult: ("type", "camera_id", "checkpoint_id", "timestamp"),
    HealthStatus: ("type", "camera_id", "checkpoint_id", "timestamp", "component", "status"),
    CameraRegistration: ("camera_id", "checkpoint_id"),
}


def first_error(exc: ValidationError) -> str:
    """One human sentence for the first problem, naming the field."""
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "body"
    msg = err["msg"].removeprefix("Value error, ")
    return f"Invalid field {where}: {msg}"


def parse_inbound(model: type[M], data: Any) -> M:
    """Validate a message from the network.

    Raises ``ValueError`` with the protocol's wording ("Missing required field:
    <name>") for a missing field, and a message naming the field otherwise.
    Strict about the top level being an object: lists, strings and numbers
    are not messages.
    """
    if not isinstance(data, dict):
        raise ValueError("Message body must be a JSON object")
    for name in _REQUIRED.get(model, ()):
        if data.get(name) in (None, ""):
            raise ValueError(f"Missing required field: {name}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValueError(first_error(exc)) from None
