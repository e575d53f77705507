"""The experiment runner's prepare stage: sources trained with the section's per-kind model configs, stores made."""

from __future__ import annotations

import json
from pathlib import Path

from iat.experiment_run import prepare


def test_prepare_trains_each_source_with_its_section_model_config(tmp_path: Path):
    matrix = {"L": 8, "lengths": [8], "seeds": [0], "with_hgaq": False, "archs": ["din"], "tables": ["main"]}
    prepare(
        tmp_path,
        {"dataset": "synthetic", "users": 60, "seed": 3},
        {"epochs": 1, "batch_size": 512},
        matrix,
        source_models={"user_order": {"sit_label_heads": 2, "t_src": 8}},
    )
    user = json.loads((tmp_path / "sources" / "user_order" / "config.json").read_text())["model"]
    temporal = json.loads((tmp_path / "sources" / "temporal" / "config.json").read_text())["model"]
    assert (user["sit_label_heads"], user["t_src"]) == (2, 8)
    assert "sit_label_heads" not in temporal  # the other kind keeps its defaults
    assert sorted(p.name for p in (tmp_path / "stores").iterdir()) == ["temporal", "user_order"]
