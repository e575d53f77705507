"""The tokens pipeline fanned out into shard steps publishes the same store, byte for byte, as the one-step run."""

import json
from pathlib import Path

from zenml.client import Client

from iat.tokens.manifest import MANIFEST_FILE, PARTS_DIR
from iat.tokens.materialize import user_shard
from pipelines.source import source_pipeline
from pipelines.tokens import tokens_pipeline

FAST = {"epochs": 1, "threads": 1, "progress": False, "batch_size": 512}
K = 3


def _manifest_without_part_names(root: Path) -> dict:
    """Part folder names carry a random suffix; everything else in the manifest (checksums included) must match."""
    m = json.loads((root / MANIFEST_FILE).read_text())
    m["parts"] = [{k: v for k, v in p.items() if k != "name"} for p in m["parts"]]
    return m


def test_sharded_tokens_run_equals_unsharded(tmp_path):
    src = Client().get_pipeline_run(source_pipeline(kind="temporal", users=60, seed=11, train_config=FAST, n_boot=0).id)
    assert src.status.value == "completed"
    data = src.steps["split"].outputs["split_instances"][0].load()
    assert len(set(user_shard(data["user_id"].to_numpy(), K))) == K  # every shard step has users

    one = Client().get_pipeline_run(tokens_pipeline(source="temporal", stores_dir=str(tmp_path / "one")).id)
    many = Client().get_pipeline_run(tokens_pipeline(source="temporal", shards=K, stores_dir=str(tmp_path / "many")).id)
    assert one.status.value == many.status.value == "completed"
    assert set(many.steps) == {f"materialize_shard_{i}" for i in range(K)} | {"publish_tokens"}

    a = one.steps["materialize_tokens"].outputs["token_store"][0].load()
    b = many.steps["publish_tokens"].outputs["token_store"][0].load()
    assert Path(a["path"]).parent == tmp_path / "one" and Path(b["path"]).parent == tmp_path / "many"
    assert {k: v for k, v in a.items() if k != "path"} == {k: v for k, v in b.items() if k != "path"}
    assert a["rows"] == len(data)

    ra, rb = Path(a["path"]), Path(b["path"])
    assert _manifest_without_part_names(ra) == _manifest_without_part_names(rb)
    parts_a, parts_b = (json.loads((r / MANIFEST_FILE).read_text())["parts"] for r in (ra, rb))
    for pa, pb in zip(parts_a, parts_b):
        for f in pa["files"]:
            assert (ra / PARTS_DIR / pa["name"] / f).read_bytes() == (rb / PARTS_DIR / pb["name"] / f).read_bytes(), f

    # Downstream pipelines read the store from the source model version: now the sharded run's store.
    mv = Client().get_model_version("iat-source-synthetic-temporal")
    assert mv.get_artifact("token_store").load()["path"] == b["path"]
