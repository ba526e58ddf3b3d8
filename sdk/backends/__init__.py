"""Backend kinds. Each kind lives in its own module and is imported only when configured.

A backend module defines a ``Backend`` subclass with a ``Settings`` class attribute (a
:class:`~pixelroute.backends.base.BackendSettings` subclass whose ``kind`` is a ``Literal``) and a
``from_settings(settings, **runtime)`` classmethod.
"""

from __future__ import annotations

import importlib
from typing import Any

from .._errors import ConfigError
from .base import Backend, BackendOutput, BackendSettings, Capabilities, MockBackend, Price

#: kind -> "module:Class"; modules load lazily so `import pixelroute` never imports torch or httpx clients
KINDS: dict[str, str] = {
    "mock": "pixelroute.backends.base:MockBackend",
    "diffusers": "pixelroute.backends.diffusers:DiffusersBackend",
    "openai": "pixelroute.backends.openai:OpenAIBackend",
    "stability": "pixelroute.backends.stability:StabilityBackend",
    "ideogram": "pixelroute.backends.ideogram:IdeogramBackend",
    "imagen": "pixelroute.backends.imagen:ImagenBackend",
    "gemini": "pixelroute.backends.gemini:GeminiBackend",
    "a1111": "pixelroute.backends.a1111:A1111Backend",
    "replicate": "pixelroute.backends.replicate:ReplicateBackend",
}


def backend_class(kind: str) -> type[Backend]:
    """The class implementing ``kind``; a clear ``ConfigError`` for an unknown kind."""
    target = KINDS.get(kind)
    if target is None:
        raise ConfigError(f"`kind` must be one of {', '.join(sorted(KINDS))} but is {kind!r}")
    module_name, _, cls_name = target.partition(":")
    module = importlib.import_module(module_name)
    cls: type[Backend] = getattr(module, cls_name)
    return cls


def settings_model(kind: str) -> type[BackendSettings]:
    cls = backend_class(kind)
    if kind == "mock":
        from .base import MockSettings

        return MockSettings
    model: type[BackendSettings] = cls.Settings  # type: ignore[attr-defined]
    return model


def create_backend(settings: BackendSettings, **runtime: Any) -> Backend:
    """Build the backend for validated ``settings``. Nothing heavy happens until first use."""
    cls = backend_class(settings.kind)
    backend: Backend = cls.from_settings(settings, **runtime)  # type: ignore[attr-defined]
    return backend


__all__ = [
    "KINDS",
    "Backend",
    "BackendOutput",
    "BackendSettings",
    "Capabilities",
    "MockBackend",
    "Price",
    "backend_class",
    "create_backend",
    "settings_model",
]
