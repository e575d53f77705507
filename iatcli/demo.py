"""``iat demo`` / ``make demo``: the main job on the embedded synthetic data, as one ZenML run of ``end_to_end``.

ingest -> validate -> split -> source (user-order with SIT) -> tokens (pre-SIT InsEmbs) -> the base ranker and the
same ranker + IAT over the tokens -> transfer evaluation (per-domain sources; cross-domain and later-period) ->
result table (test split, CIs, the synthetic world's oracle AUC, the transfer table), printed at the end. Every stage is a cached step: running the demo again with the same config reuses what is done.
"""

from __future__ import annotations

from iatcli.end_to_end import run_end_to_end


def run_demo(config: str) -> int:
    code = run_end_to_end(config)
    if code == 0:
        print("\nThe run, its artifacts and model versions are in the ZenML dashboard: `iat dashboard`.")
    return code
