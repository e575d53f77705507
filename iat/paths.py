"""The data root: every path a config, a pipeline parameter (a deployed pipeline's ``POST /invoke`` among them) or a
dataset index names must lie inside it, so a caller cannot make the product read or write elsewhere.

The root is ``IAT_DATA_ROOT``, else the project home (``IAT_HOME``, else the working directory). A relative path is
relative to the root; symlinks are resolved before the check. Bounds on numeric parameters live where they are read
(``iat.data.registry`` for the size of a generated log).
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
