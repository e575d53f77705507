"""Off-policy replay: compare two rankers on a logged experience, without running them online.

Input: a candidate log. Each request lists the candidates the logging system considered, one of them marked
``logged`` (the item it showed) with the observed outcome (e.g. ``click``). For each arm, the arm scores the
candidates of every request; a request counts only when the arm's top choice is the logged item, and then
with the logged outcome (Li et al., 2011, "Unbiased offline evaluation of contextual-bandit-based news article
recommendation algorithms"). The estimate of an arm is the mean outcome over its matching requests.

Limitations, which the numbers do not show by themselves:
- unbiased only when the logging policy chose the shown item uniformly at random among the candidates (or
  independently of everything the outcome depends on). A log of a deployed ranker is biased toward what that
  ranker liked: a new arm that agrees with it is judged on the cases the old ranker was good at;
- it needs the candidate sets. Plain impression logs (MovieLens, most instance logs) record only what was
  shown; sampling "candidates" afterwards gives items the user never saw, whose outcome is unknown;
- only about 1 / (candidates per request) of the requests match, so CIs are wide, and the matched requests
  differ between arms (the comparison is paired over users, not over requests);
- top-1 only: no slates and no position effects;
- no feedback: the arm's choices do not change what the user sees next, so the cross features and token
  histories are those the logging policy produced, not those the arm would have produced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from iat.abtest import Scorer, Uplift, _rank, _score, ratio_uplift_ci


@dataclass
class ReplayArm:
    name: str
    matched: int  # requests where the arm's top choice was the logged item
    requests: int
    estimate: float  # mean outcome over matched requests

    @property
    def match_rate(self) -> float:
        return self.matched / self.requests


@dataclass
class ReplayResult:
    control: ReplayArm
    treatment: ReplayArm
    uplift: Uplift


def _matches(candidates: pd.DataFrame, scorer: Scorer, name: str, request_col: str, logged_col: str) -> np.ndarray:
    """Per candidate row: True on the logged row of a request where the arm's top choice is that row."""
    hidden = [logged_col, "click", "conversion", "revenue", "score"]  # outcomes and the logging policy's score
    score = _score(scorer, candidates.drop(columns=hidden, errors="ignore"), name)
    top = _rank(candidates[request_col].to_numpy(), score) == 0
    return top & candidates[logged_col].to_numpy(bool)


def replay(
    candidates: pd.DataFrame,
    control: Scorer,
    treatment: Scorer,
    outcome: str = "click",
    request_col: str = "request_id",
    logged_col: str = "logged",
    n_boot: int = 400,
    alpha: float = 0.05,
    seed: int = 0,
) -> ReplayResult:
    """Replay estimates of ``outcome`` for both arms and the relative uplift with a per-user bootstrap CI."""
    need = [request_col, logged_col, outcome, "user_id"]
    missing = [c for c in need if c not in candidates.columns]
    if missing:
        raise ValueError(f"replay: candidate log is missing columns {missing}")
    per_request = candidates.groupby(request_col)[logged_col].sum()
    if (per_request != 1).any():
        bad = per_request[per_request != 1]
        raise ValueError(f"replay: every request needs exactly one logged row; {len(bad)} requests have {sorted(set(bad.tolist()))}")
    logged = candidates[logged_col].to_numpy(bool)
    if candidates.loc[logged, outcome].isna().any():
        raise ValueError(f"replay: logged rows need an observed '{outcome}'")
    y = candidates[outcome].fillna(0).to_numpy(np.float64)
    users, inv = np.unique(candidates["user_id"].to_numpy(), return_inverse=True)
    arms = {}
    sums = {}
    for name, scorer in (("control", control), ("treatment", treatment)):
        m = _matches(candidates, scorer, name, request_col, logged_col)
        num = np.bincount(inv, weights=y * m, minlength=len(users))
        den = np.bincount(inv, weights=m.astype(np.float64), minlength=len(users))
        if den.sum() == 0:
            raise ValueError(f"replay: the {name} arm never picked the logged item; no request to count")
        sums[name] = (num, den)
        arms[name] = ReplayArm(name, int(den.sum()), len(per_request), float(num.sum() / den.sum()))
    rc, rt, up, lo, hi = ratio_uplift_ci(*sums["control"], *sums["treatment"], n_boot, alpha, seed, paired=True)
    return ReplayResult(arms["control"], arms["treatment"], Uplift(outcome, rc, rt, up, lo, hi))
