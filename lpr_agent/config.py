"""The agent's configuration: one TOML file plus ``LPR_AGENT_*`` overrides.

Each stage keeps its own settings model beside its code; this module only
gathers them into the root model and loads it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from lpr_agent.detect.config import DetectorConfig, SourceConfig
from lpr_agent.spool.config import SpoolConfig
from lpr_agent.uplink.config import UplinkConfig


class CameraIdentity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    camera_id: str = Field(default="camera_001", min_length=1, max_length=128)
    checkpoint_id: str = Field(default="checkpoint_001", min_length=1, max_length=128)


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    camera: CameraIdentity = Field(default_factory=CameraIdentity)
    source: SourceConfig = Field(default_factory=SourceConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    uplink: UplinkConfig = Field(default_factory=UplinkConfig)


# --- loading -------------------------------------------------------------------------
# (The daemon work extends this: LPR_AGENT_* environment overrides, error
# messages naming file and key, `config check` / `config example`.)

import tomllib  # noqa: E402
from pathlib import Path  # noqa: E402

from pydantic import ValidationError  # noqa: E402

DEFAULT_CONFIG_PATH = Path("/etc/lpr-agent/agent.toml")
EX_CONFIG = 78  # sysexits EX_CONFIG; the unit file's RestartPreventExitStatus


class ConfigError(Exception):
    """A config file that cannot be used. ``str()`` names the file, key and reason."""

    exit_code = EX_CONFIG


def load_config(path: Path | None = None) -> AgentConfig:
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            return AgentConfig()
        path = DEFAULT_CONFIG_PATH
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: key {key}: {err['msg']}") from None
