"""The ZenML transfer pipeline on the local stack (temporary store from conftest.py): data steps -> transfer step."""

import math

from zenml.client import Client

from pipelines.transfer import transfer_pipeline

CONFIG = {
    "source_domain": "ads",
    "target_domains": ["mall"],
    "period": None,
    "task": False,
    "controls": False,
    "seeds": [0],
    "L": 8,
    "base_L": 8,
    "source_model": {"d_e": 4, "d_group": 8, "cross_layers": 1, "cross_rank": 8, "hidden": [32, 32], "D": 16, "decompress": [16]},
    "source_train": {"epochs": 1, "batch_size": 512},
    "train": {"epochs": 1, "batch_size": 512},
    "ranker": {"seq": "din", "iat": "din", "hidden": [64, 32]},
}


def test_transfer_pipeline_outputs_table_and_markdown(iat_home):
    work = iat_home / "transfer-pipeline-work"
    run = transfer_pipeline(users=100, seed=5, reports_dir=str(iat_home / "reports" / "validation"), config=CONFIG, work_dir=str(work))
    run = Client().get_pipeline_run(run.id)
    assert run.status.value == "completed"
    step = run.steps["transfer_evaluation"]
    table = step.outputs["transfer_results"][0].load()
    md = step.outputs["transfer_table"][0].load()
    assert table["model"].tolist() == [
        "mall: base (no tokens)",
        "mall: +ads tokens (cross-domain)",
        "mall: +mall tokens (in-domain)",
        "mall: GBDT (no tokens)",
        "mall: GBDT + ads tokens (cross-domain)",
        "ads: base (no tokens)",
        "ads: +ads tokens (source trained on the whole train period)",
        "ads: GBDT (no tokens)",
    ]
    assert table["d_auc"].isna().tolist() == [True, False, False, False, False, True, False, False]
    assert isinstance(md, str) and "Cross-domain" in md and (work / "table.md").read_text() == md
    deltas = step.run_metadata["relative_change_pct"]
    assert math.isclose(deltas["mall: +ads tokens (cross-domain)"]["d_auc"], round(float(table.loc[1, "d_auc"]), 4))
    # the split log the step read is the data steps' artifact: lineage runs ingest -> validate -> split -> transfer
    assert step.inputs["split_instances"][0].id == run.steps["split"].outputs["split_instances"][0].id
