"""Frame capture, plate detection and reading, tracking (see docs/architecture.md)."""

from __future__ import annotations

from lpr_agent.detect.config import DetectorConfig, SourceConfig

__all__ = ["DetectionPipeline", "DetectorConfig", "PipelineStats", "SourceConfig"]


def __getattr__(name: str) -> object:
    # The pipeline imports OpenCV and onnxruntime; keep `import lpr_agent.detect`
    # (done by the config loader) light.
    if name in {"DetectionPipeline", "PipelineStats"}:
        from lpr_agent.detect import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
