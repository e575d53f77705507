"""Run configs: YAML files in configs/ whose sections the CLI and the ZenML pipelines both read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from iat.schema import yaml_problem


def load_config(path: str | Path | None, section: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The ``section`` of a config file, with command-line values (those not None) on top."""
    cfg: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        try:
            doc = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"config {p} is not valid YAML: {yaml_problem(e)}") from None
        if not isinstance(doc, dict):
            raise ValueError(f"config {p}: top level must be a mapping of sections")
        cfg = dict(doc.get(section) or {})
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg
