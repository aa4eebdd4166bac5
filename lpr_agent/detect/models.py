"""Where the default models come from, and how to identify them.

The models are not downloaded at run time: they ship inside the pinned
``rapidocr`` wheel (Apache-2.0), which we only use as a carrier of ``.onnx``
files. We locate the package with ``importlib.util.find_spec`` instead of
importing it because ``import rapidocr`` pulls in omegaconf, Shapely, a
logger setup and more that the camera does not need (memory, start-up time).
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


class ModelNotFoundError(RuntimeError):
    """A model file the backend needs is not installed."""


@dataclass(frozen=True)
class ModelInfo:
    role: str
    package: str
    version: str
    filename: str
    licence: str


# The package versions are pinned in pyproject.toml; a different wheel may
# ship different weights, so the version is part of the model's identity.
DEFAULT_MODELS: dict[str, ModelInfo] = {
    "det": ModelInfo("text detection (DB)", "rapidocr", "3.10.0",
                     "PP-OCRv6_det_small.onnx", "Apache-2.0"),
    "rec": ModelInfo("text recognition (CTC)", "rapidocr", "3.10.0",
                     "PP-OCRv6_rec_small.onnx", "Apache-2.0"),
}


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"python package {package!r} (which ships the model files) is not installed; "
            f"install lpr-agent with its dependencies (pip install lpr-agent)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def model_path(key: str, override: str | None = None) -> Path:
    """Path of a default model, or of an operator-supplied override file."""
    if override:
        path = Path(override)
    else:
        info = DEFAULT_MODELS[key]
        path = package_dir(info.package) / "models" / info.filename
    if not path.is_file():
        raise ModelNotFoundError(f"model file {path} does not exist")
    return path


@lru_cache(maxsize=8)
def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def installed_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
