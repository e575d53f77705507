"""Process environment for ZenML and friends; must run before any of them is imported."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any


def setup_environment(home: str | Path | None = None) -> Path:
    """Keep ZenML's config and local store inside the project (or ``IAT_HOME``), never in the user's home.

    Returns the project home (where data/, reports/ and .zenml/ live).
    """
    root = Path(home or os.environ.get("IAT_HOME") or Path.cwd()).resolve()
    os.environ.setdefault("ZENML_CONFIG_PATH", str(root / ".zenml"))
    os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
    os.environ.setdefault("ZENML_AUTO_OPEN_DASHBOARD", "false")
    os.environ.setdefault("ZENML_LOGGING_VERBOSITY", "WARN")
    os.environ.setdefault("BENTOML_HOME", str(root / "bentoml_home"))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # OpenMP threads that spin while waiting made 2-thread training 10x slower than 1 thread whenever another
    # process shared the 2 cores (measured: bench/bench_source_training.py); passive waiting removes that.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    return root


def quiet_tracebacks() -> None:
    """Log records of ZenML (a failed step: ~200 lines, each twice) carry no traceback: the CLI prints the error
    itself, in one line. ``iat --debug`` (or ``IAT_DEBUG=1``) keeps them."""
    make = logging.getLogRecordFactory()
    if getattr(make, "quiet_tracebacks", False):
        return  # installed already (main() runs more than once in one process: tests)

    def record(name: str, level: int, fn: str, lno: int, msg: object, args: Any, exc_info: Any, *rest: Any, **kw: Any) -> logging.LogRecord:
        if name.startswith("zenml"):
            exc_info = None
        return make(name, level, fn, lno, msg, args, exc_info, *rest, **kw)

    record.quiet_tracebacks = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(record)
