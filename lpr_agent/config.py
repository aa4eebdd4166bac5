"""The agent's configuration: one TOML file plus ``LPR_AGENT_*`` overrides.

Each stage keeps its own settings model beside its code; this module only
gathers them into the root model, loads it and renders the commented example
file (``lpr-agent config example``).

Environment overrides have the form ``LPR_AGENT_<SECTION>__<KEY>=value``
(``__`` separates nesting levels, e.g. ``LPR_AGENT_UPLINK__SERVER_URL``). The
value is a string that pydantic coerces to the field's type, so ``"5"`` becomes
an int and ``"true"`` a bool; a value starting with ``[`` or ``{`` is parsed as
JSON (lists, tables). Variables under ``LPR_AGENT_TEST_`` are test hooks, not
settings.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lpr_agent.detect.config import DetectorConfig, SourceConfig
from lpr_agent.health import HealthConfig
from lpr_agent.identity import CameraIdentity
from lpr_agent.logs import LoggingConfig
from lpr_agent.metrics.config import MetricsConfig
from lpr_agent.spool.config import SpoolConfig
from lpr_agent.uplink.config import UplinkConfig

__all__ = ["EX_CONFIG", "AgentConfig", "CameraIdentity", "ConfigError", "load_config"]

DEFAULT_CONFIG_PATH = Path("/etc/lpr-agent/agent.toml")
EX_CONFIG = 78  # sysexits EX_CONFIG; the unit file's RestartPreventExitStatus
ENV_PREFIX = "LPR_AGENT_"
# Not settings: test hooks and the variables the CLI itself reads.
_ENV_NOT_SETTINGS = ("LPR_AGENT_TEST_", "LPR_AGENT_CONFIG")


class DaemonConfig(BaseModel):
    """Settings of ``lpr-agent run`` itself (``[daemon]``)."""

    model_config = ConfigDict(extra="forbid")

    state_dir: Path | None = Field(
        default=None,
        description="where the daemon writes status.json for `lpr-agent status`; "
        "default: the spool file's directory",
    )
    status_interval_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="how often status.json and the systemd STATUS= line are refreshed",
    )
    stall_after_s: float = Field(
        default=20.0,
        gt=0,
        description="a stage whose loop has not turned for this long counts as stuck: "
        "the systemd watchdog pings stop and systemd restarts the agent",
    )
    shutdown_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="on SIGTERM, how long to wait for the stages to finish before "
        "abandoning them (keep below the unit's TimeoutStopSec)",
    )
    model_load_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="longest time the detector model may take to load; meanwhile the "
        "start timeout is extended (EXTEND_TIMEOUT_USEC) so slow boards still start",
    )

    def resolved_state_dir(self, spool: SpoolConfig) -> Path:
        return self.state_dir if self.state_dir is not None else spool.path.parent


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    camera: CameraIdentity = Field(default_factory=CameraIdentity)
    source: SourceConfig = Field(default_factory=SourceConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    uplink: UplinkConfig = Field(default_factory=UplinkConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)

    @property
    def state_dir(self) -> Path:
        return self.daemon.resolved_state_dir(self.spool)


# --- loading -------------------------------------------------------------------------


class ConfigError(Exception):
    """A config that cannot be used. ``str()`` names the file (or variable), key and reason."""

    exit_code = EX_CONFIG


def _env_value(raw: str) -> Any:
    # JSON only for values that look like structures: a plain string such as
    # "true" or "5" is left for pydantic to coerce with the field's own type.
    stripped = raw.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return raw
    return raw


def _section_names() -> set[str]:
    return {
        name
        for name, field in AgentConfig.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }


def env_overrides(environ: Mapping[str, str]) -> dict[tuple[str, ...], tuple[str, Any]]:
    """``{("uplink", "server_url"): ("LPR_AGENT_UPLINK__SERVER_URL", value)}``.

    A variable that looks like a misspelt override (``LPR_AGENT_UPLINK_SERVER_URL``,
    one underscore) is an error rather than silently ignored.
    """
    sections = _section_names()
    found: dict[tuple[str, ...], tuple[str, Any]] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name.startswith(_ENV_NOT_SETTINGS):
            continue
        rest = name[len(ENV_PREFIX) :]
        if "__" not in rest:
            head = rest.lower().split("_", 1)[0]
            if head in sections:
                raise ConfigError(
                    f"environment {name}: not a setting; overrides are "
                    f"LPR_AGENT_<SECTION>__<KEY> (two underscores), e.g. "
                    f"LPR_AGENT_{head.upper()}__{rest.split('_', 1)[-1]}"
                )
            continue
        path = tuple(part.lower() for part in rest.split("__"))
        if any(not part for part in path):
            raise ConfigError(f"environment {name}: empty key between '__' separators")
        found[path] = (name, _env_value(environ[name]))
    return found


def _apply(data: dict[str, Any], path: tuple[str, ...], value: Any, origin: str) -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(
                f"environment {origin}: {'.'.join(path[: i + 1])} is a value, not a table"
            )
        node = child
    node[path[-1]] = value


def _describe(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    if err["type"] == "extra_forbidden":
        msg = "unknown key (not a setting; check the spelling)"
    elif err["type"] == "missing":
        msg = "required key is missing"
    value = err.get("input")
    if err["type"] not in ("extra_forbidden", "missing") and isinstance(
        value, str | int | float | bool
    ):
        msg += f" (got {value!r})"
    return msg


def load_config(
    path: Path | None = None, environ: Mapping[str, str] | None = None
) -> AgentConfig:
    """Read ``path`` (default: ``/etc/lpr-agent/agent.toml`` if present) and apply
    ``LPR_AGENT_*`` overrides from ``environ`` (default: ``os.environ``).

    Raises ConfigError whose message names the file or environment variable,
    the dotted key and the reason; one line per problem.
    """
    if environ is None:
        environ = os.environ
    if path is None:
        path = DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text: {exc.reason}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    overrides = env_overrides(environ)
    for key_path, (origin, value) in overrides.items():
        _apply(data, key_path, value, origin)
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            key = ".".join(loc)
            # Blame the variable when the bad key (or a table above it) came from it.
            origin = next(
                (o for p, (o, _) in overrides.items() if loc[: len(p)] == p),
                None,
            )
            where = f"environment {origin}" if origin else (str(path) if path else "defaults")
            lines.append(f"{where}: key {key}: {_describe(err)}")
        raise ConfigError("\n".join(lines)) from None


# --- the commented example file ------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, BaseModel):
        return _toml_value(value.model_dump(mode="json"))
    if hasattr(value, "value"):  # enums
        return _toml_value(value.value)
    return json.dumps(str(value))


def _wrap_comment(text: str, width: int = 88) -> list[str]:
    words, lines, line = text.split(), [], "#"
    for word in words:
        if len(line) + 1 + len(word) > width and line != "#":
            lines.append(line)
            line = "#"
        line += " " + word
    if line != "#":
        lines.append(line)
    return lines


def _render_model(
    model: type[BaseModel], instance: BaseModel | None, prefix: str, out: list[str]
) -> None:
    """Comment lines for ``model``'s fields; values come from ``instance`` (the
    parent's default) when there is one, so nested defaults are shown right."""
    nested: list[tuple[str, type[BaseModel], BaseModel | None, str | None]] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            sub_default = (
                getattr(instance, name, None)
                if instance is not None
                else (None if field.is_required() else field.get_default(call_default_factory=True))
            )
            nested.append((name, ann, sub_default, field.description))
            continue
        if field.description:
            out.extend(_wrap_comment(field.description))
        if instance is not None:
            value = getattr(instance, name)
        elif field.is_required():
            out.append(f"# {name} =   (required)")
            out.append("")
            continue
        else:
            value = field.get_default(call_default_factory=True)
        if value is None:
            out.append(f"# {name} =   (not set)")
        else:
            out.append(f"# {name} = {_toml_value(value)}")
        out.append("")
    for name, sub, sub_default, description in nested:
        table = f"{prefix}.{name}" if prefix else name
        if description:
            out.extend(_wrap_comment(description))
        elif sub.__doc__ and prefix == "":
            out.extend(_wrap_comment(sub.__doc__.strip().splitlines()[0]))
        # A table whose keys are all commented out is an empty table: fine
        # unless the model has required keys, then the header stays commented.
        has_required = any(f.is_required() for f in sub.model_fields.values())
        out.append(f"# [{table}]" if has_required else f"[{table}]")
        _render_model(sub, sub_default, table, out)


def example_toml() -> str:
    """The commented example config: every setting, its meaning and its default.

    Every key is commented out, so the file as shipped means "all defaults";
    uncommenting a line and editing it changes that one setting.
    """
    out = [
        "# lpr-agent configuration (TOML). Generated by `lpr-agent config example`.",
        "#",
        "# Every key is shown commented out with its default value; uncomment and edit",
        "# the ones to change. Any key can also be set from the environment as",
        "# LPR_AGENT_<SECTION>__<KEY>, e.g. LPR_AGENT_UPLINK__SERVER_URL=http://lpr:8765",
        "# (the environment wins). Check a file with `lpr-agent config check FILE`.",
        "",
    ]
    _render_model(AgentConfig, None, "", out)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"
