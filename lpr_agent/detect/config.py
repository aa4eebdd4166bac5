"""Settings of frame capture and plate detection (``[source]`` and ``[detector]``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lpr_agent.detect.regions import AUTO, Region, resolve_region


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        default="synthetic:",
        description="frame source: 'synthetic:' (options as 'synthetic:?cars=2&seed=1&plates=3' "
        "or '&plates=AB123CD,XY987ZT', '&once=1' to pass each plate once), "
        "'rtsp://…' / 'http://…' stream, '/dev/video0' or 'v4l2:0' camera, a video file, "
        "or a folder of images",
    )
    max_fps: float = Field(
        default=5.0, gt=0, description="process at most this many frames per second; "
        "the newest frame wins, older ones are dropped"
    )
    reconnect_initial_s: float = Field(
        default=1.0, gt=0, description="first wait before reopening a failed source"
    )
    reconnect_max_s: float = Field(
        default=30.0, gt=0, description="longest wait between reopen attempts (backoff cap)"
    )
    read_timeout_s: float = Field(
        default=10.0, gt=0, description="a source that gives no frame for this long is "
        "considered dead and reopened"
    )
    loop: bool = Field(
        default=False, description="restart a video file or image folder at its end "
        "(demo/soak); otherwise the source ends"
    )
    width: int | None = Field(default=None, gt=0, description="requested capture width "
                              "(V4L2/synthetic), None = device default")
    height: int | None = Field(default=None, gt=0, description="requested capture height "
                               "(V4L2/synthetic), None = device default")
    rtsp_transport: Literal["tcp", "udp"] = Field(
        default="tcp", description="how an rtsp:// camera sends its video: 'tcp' (RTP "
        "interleaved in the RTSP connection; no packet loss, passes NAT and firewalls) or "
        "'udp' (separate RTP/RTCP ports; lower latency, but a lost packet smears the frame)"
    )
    ffmpeg_options: dict[str, str | int | float] = Field(
        default_factory=dict, description="extra FFmpeg options for an rtsp:// or rtsps:// "
        "camera (read through PyAV), applied to each open of this source only, e.g. "
        "{ buffer_size = 4194304 } (UDP receive buffer) or, to verify an rtsps:// camera's "
        "certificate (FFmpeg does not by default), { tls_verify = 1, ca_file = "
        "'/etc/lpr-agent/camera-ca.pem' }; 'rtsp_transport' and 'timeout' come from "
        "rtsp_transport and read_timeout_s. The OPENCV_FFMPEG_CAPTURE_OPTIONS environment "
        "variable does not apply to these cameras"
    )

    @field_validator("ffmpeg_options")
    @classmethod
    def _check_ffmpeg_options(cls, value: dict[str, str | int | float]
                              ) -> dict[str, str | int | float]:
        owned = {"rtsp_transport": "rtsp_transport", "timeout": "read_timeout_s",
                 "stimeout": "read_timeout_s"}
        for key in value:
            if key in owned:
                raise ValueError(f"ffmpeg_options: set {key!r} with [source] {owned[key]}")
            if not key or not key.replace("_", "").isalnum():
                raise ValueError(f"ffmpeg_options: {key!r} is not an FFmpeg option name")
        return value


class DetectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["onnx"] = Field(
        default="onnx", description="detector backend: 'onnx' = PP-OCR text detection and "
        "recognition on the CPU (Apache-2.0 models from the rapidocr wheel)"
    )
    threads: int = Field(default=2, ge=1, le=64, description="CPU threads for inference")
    det_max_side: int = Field(
        default=800, ge=320, le=4096, description="frames are shrunk so their longer side is "
        "at most this before text detection (speed vs. small plates; small text the first "
        "pass cannot read gets a second look at full resolution, see second_look_below_px)"
    )
    return_freed_memory: bool = Field(
        default=True, description="tune the C allocator (glibc mallopt) to give large freed "
        "blocks back to the OS, so resident memory stays near the working set (~250 MB) "
        "instead of the peak; process-wide"
    )
    cut_recogniser: bool = Field(
        default=True, description="cut the recogniser's ~18k-class output layer to the ~1.9k "
        "Latin-looking classes at load (same logits for those, less CPU and memory)"
    )
    det_model: str | None = Field(default=None, description="path of a replacement text "
                                  "detection ONNX file (default: the packaged one)")
    rec_model: str | None = Field(default=None, description="path of a replacement text "
                                  "recognition ONNX file (default: the packaged one)")
    region: str = Field(
        default="auto", description="plate region: a built-in one ('eu', 'us', 'br'; "
        "lpr_agent/detect/regions/), one of [detector.regions], or 'auto' to choose per plate "
        "(never rewriting a read that already fits some region's layout)"
    )
    regions: dict[str, Region] = Field(
        default_factory=dict, description="extra or replacement regions, one table each "
        "named [detector.regions.NAME], with the fields of a Region "
        "(lpr_agent/detect/regions/__init__.py): layouts, exhaustive, max_swaps, to_digit, "
        "to_letter, context_correction, all_digit, all_letter, plate_margin, min_chars, "
        "max_chars"
    )
    plate_formats: list[str] = Field(
        default_factory=list, description="plate formats overriding the region's, as strings "
        "of L (letter), N (digit), ? (either), e.g. ['LLNNNLL']"
    )
    strict_formats: bool = Field(
        default=False, description="drop reads that fit none of the formats"
    )
    min_chars: int | None = Field(default=None, ge=1, le=16, description="shortest plate "
                                  "text accepted (default: the region's)")
    max_chars: int | None = Field(default=None, ge=1, le=16, description="longest plate "
                                  "text accepted (default: the region's)")
    require_letter_and_digit: bool = Field(
        default=False, description="accept only texts with at least one letter and one digit "
        "(the old false-plate filter; loses all-digit and vanity plates; plate-shape evidence "
        "filters signs and badges without it)"
    )
    min_confidence: float = Field(
        default=0.5, ge=0, le=1, description="lowest per-character OCR confidence accepted"
    )
    min_det_score: float = Field(
        default=0.5, ge=0, le=1, description="lowest text-detection score accepted"
    )
    reject_sign_colours: bool = Field(
        default=True, description="drop text on a saturated green or blue background (road and "
        "shop signs); plates are white, yellow or grey behind the characters"
    )
    plate_shape_filter: bool = Field(
        default=True, description="ask for plate-shape evidence (straight plate edges above "
        "and below the text) from reads that fit no layout, all-digit and all-letter reads: "
        "drops badges and signs, keeps all-digit and vanity plates"
    )
    second_look_below_px: float = Field(
        default=40.0, ge=0, description="text lines lower than this (pixels, full frame) "
        "that the first pass could not read as a plate are detected and read again, "
        "enlarged, from the full-resolution frame (small, distant plates); 0 = off"
    )
    motion_skip: bool = Field(
        default=False, description="skip plate detection on frames in which nothing moved "
        "inside the region of interest (cheap frame differencing; saves CPU on an empty road)"
    )
    motion_min_changed: float = Field(
        default=0.002, gt=0, le=1, description="with motion_skip: fraction of the region's "
        "pixels that must change (by more than 12 grey levels) to count as motion"
    )
    motion_max_skip_s: float = Field(
        default=2.0, gt=0, description="with motion_skip: detect at least this often anyway "
        "(light changes, parked cars)"
    )
    min_plate_height: int = Field(
        default=10, ge=1, description="plates whose text is lower than this (pixels, in the "
        "full frame) are ignored"
    )
    roi: list[float] | None = Field(
        default=None, description="region of interest [x1, y1, x2, y2] as fractions 0–1 of the "
        "frame; plates whose centre is outside are ignored"
    )
    # --- tracking / events -----------------------------------------------------------
    track_timeout_s: float = Field(
        default=2.0, gt=0, description="a track with no sighting for this long is closed and "
        "its event emitted"
    )
    max_track_s: float = Field(
        default=10.0, gt=0, description="a plate in view longer than this (parked car) is "
        "emitted anyway, so events are not delayed forever"
    )
    cooldown_s: float = Field(
        default=60.0, ge=0, description="the same plate text on this camera within this many "
        "seconds after its last event gives no new event"
    )
    min_hits: int = Field(default=1, ge=1, description="sightings a track needs before it "
                          "becomes an event (raise to suppress one-frame flukes)")
    # --- output ------------------------------------------------------------------------
    annotate: bool = Field(default=True, description="attach an annotated JPEG to each event")
    annotated_max_side: int = Field(default=960, ge=64, description="longest side (pixels) of "
                                    "the annotated JPEG")
    annotated_max_bytes: int = Field(default=250_000, ge=10_000, description="byte cap of the "
                                     "annotated JPEG (quality is lowered, then size, to fit)")
    jpeg_quality: int = Field(default=80, ge=10, le=100, description="starting JPEG quality")
    crop_max_side: int = Field(default=320, ge=32, description="longest side of a plate crop")
    crop_max_bytes: int = Field(default=40_000, ge=2_000, description="byte cap of one plate "
                                "crop JPEG")

    @field_validator("roi")
    @classmethod
    def _check_roi(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return value
        if len(value) != 4 or not all(0 <= v <= 1 for v in value) or not (
            value[0] < value[2] and value[1] < value[3]
        ):
            raise ValueError("roi must be [x1, y1, x2, y2] fractions with x1 < x2, y1 < y2")
        return value

    @field_validator("plate_formats")
    @classmethod
    def _check_formats(cls, value: list[str]) -> list[str]:
        for fmt in value:
            if not fmt or set(fmt) - set("LN?"):
                raise ValueError(f"plate format {fmt!r} may contain only L, N and ?")
        return value

    @model_validator(mode="after")
    def _check_region(self) -> DetectorConfig:
        if self.region != AUTO:
            resolve_region(self.region, self.regions)  # ValueError names the known ones
        return self
