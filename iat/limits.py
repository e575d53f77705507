"""What a caller may ask of a run (a config, a pipeline parameter, a deployed pipeline's unauthenticated
``POST /invoke``): paths inside the data root only, run parameters within bounds.

The data root is ``IAT_DATA_ROOT``, else the project home (``IAT_HOME``, else the working directory). A relative path
is relative to the root; symlinks are resolved before the check. The size of a generated log is bounded where it is
generated (``iat.data.registry``); a dataset index's part names are checked by ``iat.data.io``.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_ENV = "IAT_DATA_ROOT"


class PathOutsideRootError(ValueError):
    """A named path resolves outside the data root."""


def data_root() -> Path:
    return Path(os.environ.get(DATA_ROOT_ENV) or os.environ.get("IAT_HOME") or Path.cwd()).resolve()


def confined(path: str | Path, what: str) -> Path:
    """``path`` resolved against the data root; ``PathOutsideRootError`` naming ``what`` if it leaves the root."""
    root = data_root()
    p = Path(path).expanduser()
    full = (p if p.is_absolute() else root / p).resolve()
    if not full.is_relative_to(root):
        raise PathOutsideRootError(f"{what} '{path}' is outside the data root {root} (set {DATA_ROOT_ENV} to serve files from another folder)")
    return full


# Bounds on the run parameters a caller can set (a deployed pipeline's invoke among them): far above any sane run on
# one machine, low enough that no request can book it for days.
RUN_BOUNDS: dict[str, tuple[int, int]] = {"epochs": (1, 1_000), "L": (1, 4_096), "n_boot": (0, 10_000), "seeds": (1, 20), "processes": (1, 64)}


def check_run_bounds(**values: int | list[int] | None) -> None:
    """A ``ValueError`` naming the parameter when one lies outside ``RUN_BOUNDS`` (``seeds``: how many); None passes."""
    for name, v in values.items():
        if v is None:
            continue
        n = len(v) if isinstance(v, (list, tuple)) else v
        lo, hi = RUN_BOUNDS[name]
        if isinstance(n, bool) or not isinstance(n, int) or not lo <= n <= hi:
            raise ValueError(f"{name} must be {'a list of ' if name == 'seeds' else ''}{lo} to {hi}{' seeds' if name == 'seeds' else ''}, got {v!r}")
