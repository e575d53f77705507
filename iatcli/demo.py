"""``iat demo`` / ``make demo``: the main job on the embedded synthetic data, each stage a ZenML pipeline run.

data + source (user-order with SIT) -> tokens (pre-SIT InsEmbs) -> downstream: the base ranker and the same
ranker + IAT over the tokens; prints both on the test split, with the oracle AUC of the synthetic world.
"""

from __future__ import annotations

from typing import Any

from zenml.client import Client

from iatcli.config import load_config
from iatcli.runs import downstream_params, run_pipeline, source_params, tokens_params


def _latest_ranker(name: str) -> Any:
    return Client().get_model_version(f"iat-ranker-{name}").get_artifact("ranker").load()


def run_demo(config: str) -> int:
    src = load_config(config, "source", {})
    for stage, cfg in (("source", src), ("tokens", load_config(config, "tokens", {}))):
        if run_pipeline(stage, cfg):
            return 1
    down = load_config(config, "downstream", {})
    names = []
    for variant in ({"iat": None, "tokens": None}, {}):
        cfg = {**down, **variant}
        if run_pipeline("downstream", cfg):
            return 1
        names.append(downstream_params(cfg)["spec"]["name"])
    base, iat = (_latest_ranker(n) for n in names)
    data = Client().get_model_version(f"iat-source-{source_params(src)['kind']}").get_artifact("split_instances").load()
    print(format_demo_table(base, iat, data, tokens_params(load_config(config, "tokens", {}))))
    return 0


def format_demo_table(base: Any, iat: Any, data: Any, tokens: dict[str, Any]) -> str:
    from iat.metrics import auc

    rows = [("base", base), (f"+IAT ({tokens.get('source', 'user_order')} tokens)", iat)]
    lines = ["", "test split | AUC [95% CI] | GAUC [95% CI] | LogLoss", "---|---|---|---"]
    for label, b in rows:
        m = b.metrics["test"]
        ci = lambda k: f"{m[k]:.4f} [{m[k + '_lo']:.4f}, {m[k + '_hi']:.4f}]" if m.get(k + "_lo") is not None else f"{m[k]:.4f}"  # noqa: E731
        lines.append(f"{label} ({b.spec.name}) | {ci('auc')} | {ci('gauc')} | {m['logloss']:.4f}")
    d_auc = 100 * (iat.metrics["test"]["auc"] - base.metrics["test"]["auc"]) / base.metrics["test"]["auc"]
    lines.append(f"relative AUC change of +IAT: {d_auc:+.2f}% (one seed; docs/RESULTS.md has 3-seed tables)")
    if "p_click" in data.columns:
        test = data[data["split"] == "test"]
        lines.append(f"oracle AUC (the generator's true p_click): {auc(test['click'].to_numpy(), test['p_click'].to_numpy()):.4f}")
    return "\n".join(lines)
