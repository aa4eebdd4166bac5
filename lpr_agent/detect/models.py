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
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

class ModelNotFoundError(RuntimeError):
    """A model file the backend needs is not installed."""


@dataclass(frozen=True)
class ModelInfo:
    role: str
    package: str
    version: str
    filename: str
    licence: str
    sha256: str  # of the file we evaluated; another file may read plates differently


# The package versions are pinned in pyproject.toml; a different wheel may
# ship different weights, so the version is part of the model's identity.
DEFAULT_MODELS: dict[str, ModelInfo] = {
    "det": ModelInfo(
        "text detection (DB)", "rapidocr", "3.10.0", "PP-OCRv6_det_small.onnx", "Apache-2.0",
        "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
    ),
    "rec": ModelInfo(
        "text recognition (CTC)", "rapidocr", "3.10.0", "PP-OCRv6_rec_small.onnx", "Apache-2.0",
        "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
    ),
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
    """Path of a default model, or of an operator-supplied override file.

    A default model whose hash differs from the evaluated one is used, but
    logged loudly: accuracy figures in the README no longer apply to it.
    """
    if override:
        path = Path(override)
    else:
        info = DEFAULT_MODELS[key]
        path = package_dir(info.package) / "models" / info.filename
    if not path.is_file():
        raise ModelNotFoundError(f"model file {path} does not exist")
    if not override and sha256_of(path) != DEFAULT_MODELS[key].sha256:
        log.warning(
            "model file differs from the evaluated one path=%s sha256=%s expected=%s",
            path, sha256_of(path), DEFAULT_MODELS[key].sha256,
        )
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
