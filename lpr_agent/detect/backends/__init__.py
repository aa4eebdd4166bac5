"""Detector backends: find text/plate regions and read them.

A backend only runs models; plate-specific logic (formats, thresholds, ROI,
tracking) lives above it in :mod:`lpr_agent.detect.reader`, so a hardware
accelerator backend (e.g. Hailo) only has to implement :class:`PlateBackend`.
"""

from __future__ import annotations

from lpr_agent.detect.backends.base import CharRead, PlateBackend, RegionBox, TextRead

__all__ = ["CharRead", "PlateBackend", "RegionBox", "TextRead", "create_backend"]


def create_backend(name: str, **options: object) -> PlateBackend:
    """Instantiate a backend by its config name (``DetectorConfig.backend``)."""
    if name == "onnx":
        from lpr_agent.detect.backends.onnx_ocr import OnnxOcrBackend

        return OnnxOcrBackend(**options)  # type: ignore[arg-type]
    raise ValueError(f"unknown detector backend {name!r} (available: onnx)")
