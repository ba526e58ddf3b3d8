"""The settings model: one TOML file serves the SDK, the CLI, Flask and Django.

Sources, strongest first: environment variables (prefix ``PIXELROUTE_``, ``__`` for nesting,
e.g. ``PIXELROUTE_ROUTER__EXPLORATION=0.05``), then the file or mapping given, then defaults.
Unknown keys are errors that name the key (``extra="forbid"``). Loading validates everything
but starts nothing: no model is loaded, no device probed, no connection made.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ._errors import ConfigError
from ._shown import is_secret_name, shown
from .backends import settings_model
from .backends.base import BackendSettings


def default_cache_dir() -> Path:
    """``$PIXELROUTE_CACHE_DIR``, else ``$XDG_CACHE_HOME/pixelroute``, else ``~/.cache/pixelroute``."""
    env = os.environ.get("PIXELROUTE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pixelroute"


class TelemetrySettings(BaseModel):
    """Where attempts are recorded and how much of the prompt is kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``sqlite:///path`` or ``postgresql://…``; unset = ``telemetry.db`` in the cache dir
    store: str | None = None
    prompt_retention: Literal["full", "hash", "none"] = "full"
    queue_size: int = Field(default=100_000, ge=1)
    on_full: Literal["drop", "block"] = "block"
    block_timeout_s: float = Field(default=0.05, ge=0)
    flush_interval_s: float = Field(default=1.0, gt=0, le=1.0)
    batch_size: int = Field(default=2000, ge=1)
    enabled: bool = True


class RouterSettings(BaseModel):
    """How the router decides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: artifact directory; missing -> the cold-start policy
    model: str | None = None
    correction_cost_per_hour: float = Field(default=60.0, ge=0)
    exploration: float = Field(default=0.02, ge=0, le=1)
    sla_confidence: float = Field(default=0.95, gt=0, lt=1)
    #: nothing meets the SLA: ``best_effort`` tries the candidate most likely on time within the budget
    #: (the deadline still ends the call), ``refuse`` raises NoFeasibleBackend without trying
    on_infeasible: Literal["best_effort", "refuse"] = "best_effort"
    #: deprecated spelling of ``on_infeasible`` (true = best_effort, false = refuse)
    best_effort: bool | None = None
    seed: int | None = None

    @model_validator(mode="after")
    def _legacy_best_effort(self) -> RouterSettings:
        if self.best_effort is None:
            return self
        wanted = "best_effort" if self.best_effort else "refuse"
        if "on_infeasible" in self.model_fields_set and self.on_infeasible != wanted:
            raise ValueError(f"`router.best_effort = {str(self.best_effort).lower()}` contradicts "
                             f"`router.on_infeasible = {self.on_infeasible!r}`; keep only `on_infeasible`")
        object.__setattr__(self, "on_infeasible", wanted)
        return self


class ExecutionSettings(BaseModel):
    """What happens after the decision: fallbacks, hedging, cascade, de-duplication; and preloading."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: after a content rejection: try a different provider, or stop and raise
    on_content_rejected: Literal["fallback", "stop"] = "fallback"
    max_attempts: int = Field(default=3, ge=1, le=10)
    #: hedge when the primary has not answered by this quantile of its predicted latency
    hedge_quantile: Literal["p50", "p95"] = "p95"
    cascade: bool = False
    #: gate scores below this escalate to the high-fidelity candidate
    cascade_threshold: float = Field(default=0.5, ge=0, le=1)
    dedupe: bool = False
    #: circuit breaker: consecutive failures that open it, and for how long
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown_s: float = Field(default=30.0, gt=0)
    #: load every backend's pipeline when the gateway, the Flask extension or the Django app
    #: starts, before the first request, instead of on it (a plain `Client` loads on first use,
    #: or at `client.warmup()`)
    preload: bool = False


class Settings(BaseSettings):
    """Everything pixelroute reads from a config file, a mapping or the environment."""

    model_config = SettingsConfigDict(
        env_prefix="PIXELROUTE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    cache_dir: Path = Field(default_factory=default_cache_dir)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    #: SerializeAsAny: each entry dumps with its own kind's fields, so a config round-trips
    backends: list[SerializeAsAny[BackendSettings]] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment beats the file: operators override a shipped config per deployment.
        return (env_settings, init_settings)

    @field_validator("backends", mode="before")
    @classmethod
    def _per_kind(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        out: list[BackendSettings] = []
        seen: set[str] = set()
        for i, item in enumerate(value):
            if isinstance(item, BackendSettings):
                out.append(item)
            else:
                if not isinstance(item, dict) or "kind" not in item:
                    raise ValueError(f"`backends[{i}]` needs a `kind` but is {shown(item)}")
                model = settings_model(str(item["kind"]))
                try:
                    out.append(model(**item))
                except pydantic.ValidationError as exc:
                    raise ValueError(_describe(exc, prefix=f"backends[{i}]")) from None
            name = out[-1].name
            if name in seen:
                raise ValueError(f"`backends[{i}].name` must be unique but {shown(name)} appears twice")
            seen.add(name)
        return out

    def telemetry_url(self) -> str:
        """The telemetry store's URL: ``telemetry.store``, else SQLite in the cache dir."""
        return self.telemetry.store or f"sqlite:///{self.cache_dir / 'telemetry.db'}"

    def backend(self, name: str) -> BackendSettings:
        """The settings of the backend called ``name``; a ``ConfigError`` lists the names when none is."""
        for b in self.backends:
            if b.name == name:
                return b
        raise ConfigError(f"no backend named {name!r}; configured: {', '.join(b.name for b in self.backends)}")


def load_settings(source: str | os.PathLike[str] | dict[str, Any] | None = None) -> Settings:
    """Validate a TOML file path, a mapping (Flask/Django settings) or nothing (defaults + env)."""
    data: dict[str, Any]
    if source is None:
        data = {}
    elif isinstance(source, dict):
        data = {k.lower(): v for k, v in source.items()}
    else:
        path = Path(source)
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file `{path}` does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file `{path}` is not valid TOML: {exc}") from None
    try:
        return Settings(**data)
    except pydantic.ValidationError as exc:
        raise ConfigError("invalid configuration: " + _describe(exc)) from None
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def embedded_default(cache_dir: Path | None = None) -> Settings:
    """``Client()`` with no config: two tiny local pipelines and SQLite telemetry in the cache dir.

    The tiny pipelines have random weights, so their images are noise; they are real diffusers
    pipelines, built on first use. Point ``model`` at a hub id for real images.
    """
    base = load_settings(None)
    cache = cache_dir or base.cache_dir
    tiny = cache / "tiny"
    # Shadow prices: the tiny pipelines stand in for a distilled model and a high-fidelity one,
    # priced as FLUX.1 [schnell] ($0.003/image) and SD3.5 Large ($0.065/image) at their list
    # prices (docs/backends/), so routing behaves as it would with the real pair.
    # Latency priors are the tiny pipelines' own on a 2-core CPU at their default steps.
    backends = [
        {
            "name": "local-fast",
            "kind": "diffusers",
            "model": str(tiny / "sd15-fast"),
            "make_tiny": "sd15",
            "default_steps": 2,
            "step_options": [1, 2, 4],
            "price": {"per_image": 0.003},
            "typical_latency_s": 0.3,
            "strengths": {"typography": 0.1, "counting": 0.3, "composition": 0.3, "reflection": 0.4},
        },
        {
            "name": "local-quality",
            "kind": "diffusers",
            "model": str(tiny / "sdxl-quality"),
            "make_tiny": "sdxl",
            "default_steps": 8,
            "step_options": [4, 8, 12],
            "price": {"per_image": 0.065},
            "typical_latency_s": 0.8,
            "strengths": {"typography": 0.7, "counting": 0.6, "composition": 0.6, "reflection": 0.6},
        },
    ]
    data = base.model_dump()
    data["cache_dir"] = cache
    data["backends"] = backends
    return Settings(**data)


#: where a secret goes instead of a config file
_SECRETS_FROM_ENV = (
    "secrets come only from the environment: put the key in an environment variable "
    '(e.g. OPENAI_API_KEY) and name it with api_key_env = "OPENAI_API_KEY"'
)


def _describe(exc: pydantic.ValidationError, prefix: str = "") -> str:
    """One sentence per error, naming the setting; values are shown by :func:`shown`, never a secret."""
    parts = []
    for err in exc.errors():
        own = ".".join(str(p) for p in err.get("loc", ()))
        loc = f"{prefix}.{own}" if prefix and own else (prefix or own)
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            if is_secret_name(own):  # `api_key = "sk-..."`: never echo it, say where keys go
                parts.append(f"`{loc}` is not a known setting; {_SECRETS_FROM_ENV}")
                continue
            msg = "is not a known setting (misspelt?)"
        if msg.startswith("`"):  # already a full sentence from a nested validator
            if own and prefix and msg.startswith(f"`{own}`"):  # name it from the top: `backends[0].…`
                msg = f"`{loc}`" + msg.removeprefix(f"`{own}`")
            parts.append(msg)
            continue
        parts.append(f"`{loc}` {msg} (got {shown(err.get('input'), name=own)})" if loc else msg)
    return "; ".join(parts)
