"""The ZenML source pipeline on the local stack (temporary store from conftest.py): artifacts, metadata, model version."""

from zenml.client import Client
from zenml.enums import ModelStages

from iat.models.registry import SourceBundle
from pipelines.source import source_pipeline

TINY = {"d_e": 4, "d_group": 8, "cross_layers": 1, "cross_rank": 8, "hidden": [32, 32], "D": 16, "decompress": [16]}


def test_source_pipeline_trains_logs_metrics_and_versions_the_model(iat_home):
    run = source_pipeline(
        kind="temporal",
        users=100,
        seed=4,
        reports_dir=str(iat_home / "reports" / "validation"),
        model_config=TINY,
        train_config={"epochs": 1, "batch_size": 512, "progress": False, "threads": 1},
        n_boot=20,
    )
    run = Client().get_pipeline_run(run.id)
    assert run.status.value == "completed"
    assert run.pipeline.name == "source_pipeline" and run.name.startswith("source_pipeline-")  # no leading underscore
    art = run.steps["train_source"].outputs["source_bundle"][0]
    bundle = art.load()
    assert isinstance(bundle, SourceBundle) and bundle.kind == "temporal"
    test = bundle.metrics["test"]
    assert 0.5 < test["auc"] < 1 and test["auc_lo"] <= test["auc"] <= test["auc_hi"]
    # metrics on the artifact (from the materializer) and on the model version (from the step)
    assert art.run_metadata["test_auc"] == test["auc"]
    assert art.run_metadata["config_hash"] == bundle.config["config_hash"]
    mv = Client().get_model_version("iat-source-synthetic-temporal", ModelStages.LATEST)
    assert mv.run_metadata["test"]["auc"] == test["auc"]
    assert mv.run_metadata["version"] == bundle.config["version"]
    assert "source_bundle" in mv.model_artifacts
    # the bundle predicts from the artifact store copy exactly as it was trained
    assert mv.get_artifact("source_bundle").load().config == bundle.config
