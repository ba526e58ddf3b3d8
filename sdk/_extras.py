"""Optional dependencies: a missing one becomes a :class:`MissingExtra` naming the extra that installs it.

The extras are pyproject.toml's ``[project.optional-dependencies]``; :data:`EXTRA_OF` maps each of
their import names to its extra (tests/test_cli_errors.py checks it against pyproject.toml). Two ways
in: :func:`require` imports an extra's modules up front (a command checks before it does any work),
:func:`optional_imports` turns an import of one of them that fails inside its block into the error.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager

from ._errors import MissingExtra

#: import name -> the extra that installs it
EXTRA_OF: dict[str, str] = {
    "flask": "flask",
    "django": "django",
    "psycopg": "postgres",
    "dask": "dask",
    "distributed": "dask",
    "pandas": "dask",
    "sklearn": "dask",  # lightgbm.dask needs scikit-learn
    "starlette": "serve",
    "uvicorn": "serve",
    "rq": "queue",
    "redis": "queue",
    "httpx_aiohttp": "aiohttp",
    "matplotlib": "report",  # optional even where used: the training report then has tables only
}


def missing_extra(exc: BaseException, needed_by: str) -> MissingExtra | None:
    """The :class:`MissingExtra` for ``exc`` when it is the import of an extra's module failing, else None."""
    if isinstance(exc, MissingExtra) or not isinstance(exc, ModuleNotFoundError):
        return None
    module = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF.get(module)
    if extra is None:
        return None
    return MissingExtra(
        f"{needed_by} needs the optional `{extra}` extra ({module} is not installed): "
        f"pip install 'pixelroute[{extra}]'",
        module=module,
        extra=extra,
    )


def require(extra: str, needed_by: str) -> None:
    """Import every module of ``extra``; :class:`MissingExtra` for the first one that is not installed.

    A module that is installed but cannot import one of its own dependencies is named too: the
    extra's installation is broken, and installing it again is the cure.
    """
    modules = [m for m, e in EXTRA_OF.items() if e == extra]
    if not modules:
        raise ValueError(f"no optional extra named {extra!r}; known: {sorted(set(EXTRA_OF.values()))}")
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            error = missing_extra(exc, needed_by)
            if error is None:  # e.g. uvicorn present but its h11 gone
                error = MissingExtra(
                    f"{needed_by} needs the optional `{extra}` extra, whose {module} cannot be imported "
                    f"({exc}): pip install --force-reinstall 'pixelroute[{extra}]'",
                    module=module,
                    extra=extra,
                )
            raise error from exc


@contextmanager
def optional_imports(needed_by: str) -> Iterator[None]:
    """Inside the block, an import of a missing extra's module raises :class:`MissingExtra`."""
    try:
        yield
    except ModuleNotFoundError as exc:
        error = missing_extra(exc, needed_by)
        if error is None:
            raise
        raise error from exc


__all__ = ["EXTRA_OF", "missing_extra", "optional_imports", "require"]
