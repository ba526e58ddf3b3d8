"""What ``Client.warmup`` and ``AsyncClient.warmup`` share: which backends, and the error on failure.

Loads run one backend after another: they compete for the same disk, memory and GPU, so in
parallel they would not finish sooner, and a failure stops the rest (a start-up that cannot
load its configuration should stop, not serve half of it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._errors import BackendError, Cancelled, ConfigError, DeadlineExceeded, PixelrouteError, ValidationError

if TYPE_CHECKING:
    from .backends.base import Backend

log = logging.getLogger("pixelroute")


def warmup_targets(backends: dict[str, Backend], names: Iterable[str] | None) -> list[Backend]:
    """The backends to warm: all of them for ``None``, else the named ones, in order, once each."""
    if names is None:
        return list(backends.values())
    if isinstance(names, str | bytes):
        raise ValidationError(
            f"`backends` must be a list of backend names but is {names!r}; pass [{names!r}]",
            field="backends",
            value=names,
        )
    chosen: dict[str, Backend] = {}
    for name in names:
        backend = backends.get(name) if isinstance(name, str) else None
        if backend is None:
            raise ValidationError(
                f"`backends` must name configured backends ({', '.join(backends)}) but contains {name!r}",
                field="backends",
                value=name,
            )
        chosen[name] = backend
    return list(chosen.values())


def warmup_failed(backend: Backend, exc: BaseException) -> PixelrouteError:
    """The error for a backend that did not load: its name first, the class kept where it says more."""
    message = f"backend `{backend.name}` could not be warmed up: {exc}"
    if isinstance(exc, ConfigError):  # the model or device in the config is wrong
        return ConfigError(message)
    if isinstance(exc, DeadlineExceeded):
        return DeadlineExceeded(message)
    if isinstance(exc, Cancelled):
        return Cancelled(message)
    return BackendError(message, backend=backend.name)


def report(backend: Backend, seconds: float) -> None:
    log.info("warmed up backend `%s` in %.2f s", backend.name, seconds)


def check_still_loaded(warmed: list[Backend]) -> None:
    """Warn when a later load evicted an earlier one: the memory budget cannot hold them all."""
    evicted = [b.name for b in warmed if not b.loaded]
    if evicted:
        log.warning(
            "after warm-up, backends %s are no longer loaded: the pipeline cache's `memory_budget_gb` "
            "cannot hold every pipeline, so their first requests will load them again",
            ", ".join(f"`{n}`" for n in evicted),
        )
