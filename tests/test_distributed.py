"""DDP with 2 CPU processes (torchrun, gloo, rendezvous on 127.0.0.1) scores like 1 process on the same data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iat import distributed as dist
from iat.data.split import add_split
from iat.data.synthetic import generate
from iat.dist_train import train_downstream_with, train_source_with
from iat.downstream import DownstreamData, DownstreamSpec
from iat.features import FeatureEncoder
from iat.models.user_order import UserChunkBatches
from iat.train import CHECKPOINT_FILE, TrainConfig

CFG = TrainConfig(epochs=2, patience=0, batch_size=512, threads=1, progress=False)
TOLERANCE = 0.01  # |AUC(2 processes) - AUC(1 process)|: other batches, same data and global batch
TRIVIAL_AUC = 0.5  # a constant score; both runs must clear it by a margin, so a broken run cannot pass


@pytest.fixture(scope="module")
def log():
    df, schema = generate(200, seed=3, progress=False)
    return add_split(df), schema


def _same_scores(one: dict, two: dict) -> None:
    print(f"\ntest AUC: 1 process {one['test']['auc']:.4f}, 2 processes {two['test']['auc']:.4f}")
    assert (one["processes"], two["processes"]) == (1, 2)
    for s in ("valid", "test"):  # rank 0 scored every rank's predictions: the whole split, as one process does
        assert (two[s]["n"], two[s]["n_users"]) == (one[s]["n"], one[s]["n_users"])
    assert abs(two["test"]["auc"] - one["test"]["auc"]) < TOLERANCE
    assert min(one["test"]["auc"], two["test"]["auc"]) > TRIVIAL_AUC + 0.15


def test_users_are_dealt_whole_and_balanced():
    rng = np.random.default_rng(0)
    users = rng.zipf(1.5, 20_000) % 500
    weight = rng.random(20_000) < 0.8
    for world in (2, 3):
        owner = dist.deal_users(users, weight, world)
        per_user = {u: set(owner[users == u]) for u in np.unique(users)}
        assert all(len(o) == 1 for o in per_user.values())
        loads = np.bincount(owner, weights=weight, minlength=world)
        assert loads.max() - loads.min() <= np.bincount(users, weights=weight).max()


def test_one_process_needs_no_process_group():
    assert not dist.active() and dist.world_size() == 1
    assert dist.shard_rows(np.arange(5)) == slice(None) and dist.local_batch_size(512) == 512
    assert list(dist.lockstep([1, 2])) == [1, 2] and dist.gather_to_main("x") == ["x"]


def _windows(b: UserChunkBatches) -> set[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every training window as (context instance ids, chunk instance ids)."""
    iid = b.frame.instance_id
    return {(tuple(iid[c:s]), tuple(iid[s:e])) for c, s, e in b.chunks}


def test_user_order_windows_stay_whole_on_their_rank(log):
    """The ranks' user-order windows (a chunk and its context chunk) are exactly those of one process, split."""
    df, schema = log
    train = df[df["split"] == "train"]
    frame = FeatureEncoder.fit(train, schema).transform(train)
    owner = dist.deal_users(frame.user_id, None, 2)
    whole = _windows(UserChunkBatches(frame, t_src=32))
    ranks = [_windows(UserChunkBatches(frame.take(np.flatnonzero(owner == r)), t_src=32)) for r in range(2)]
    assert ranks[0] | ranks[1] == whole and not ranks[0] & ranks[1]


def test_source_model_under_ddp_scores_like_one_process(log, tmp_path):
    df, schema = log
    one = train_source_with(1, df, schema, "temporal", None, CFG, n_boot=0)
    two = train_source_with(2, df, schema, "temporal", None, CFG, tmp_path, n_boot=0)
    _same_scores(one.metrics, two.metrics)
    ck = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)  # written by rank 0 alone, with both ranks' RNGs
    assert len(ck["rng"]) == 2 and ck["state"]["epoch"] == CFG.epochs


@pytest.mark.slow
def test_user_order_source_model_under_ddp_scores_like_one_process():
    """User-order AUC moves more with the batch order (about 0.005 between seeds on this data), so a larger log
    and 3 epochs."""
    df, schema = generate(300, seed=3, progress=False)
    df = add_split(df)
    cfg = TrainConfig(epochs=3, patience=0, batch_size=512, threads=1, progress=False)
    one = train_source_with(1, df, schema, "user_order", None, cfg, n_boot=0)
    two = train_source_with(2, df, schema, "user_order", None, cfg, n_boot=0)
    _same_scores(one.metrics, two.metrics)


def test_downstream_ranker_under_ddp_scores_like_one_process(log):
    df, schema = log
    data = DownstreamData.prepare(df, schema)
    spec = DownstreamSpec("base-din", config={"seq": "din"})
    one = train_downstream_with(1, data, spec, None, CFG)[1]
    two = train_downstream_with(2, data, spec, None, CFG)[1]
    _same_scores(one, two)
