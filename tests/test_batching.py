"""Row batches: global time order, every row once per epoch, seeded shuffles that leave the global RNGs alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iat.features import FeatureEncoder
from iat.models.batching import RowBatches, frame_batch
from _frames import contract_log


@pytest.fixture(scope="module")
def frame():
    df, schema = contract_log(n=50, seed=1)
    df = df.sample(frac=1.0, random_state=0).reset_index(drop=True)  # rows not in time order on input
    df.loc[df.index[:6], "ts"] = df["ts"].iloc[0]  # ties in ts, broken by instance_id
    return FeatureEncoder.fit(df, schema).transform(df)


def test_time_order_is_global_and_the_same_every_epoch(frame) -> None:
    src = RowBatches(frame, batch_size=8)
    assert len(src) == 7
    for epoch in (0, 3):
        batches = list(src.batches(epoch))
        assert [len(b["click"]) for b in batches] == [8] * 6 + [2]
        ts = torch.cat([b["ts"] for b in batches]).numpy()
        iid = torch.cat([b["instance_id"] for b in batches]).numpy()
        assert (np.lexsort((iid, ts)) == np.arange(len(ts))).all()
        assert sorted(iid.tolist()) == sorted(frame.instance_id.tolist())
    one = frame_batch(frame)
    assert set(one) == set(batches[0]) and one["cat"].shape == (50, frame.cat.shape[1])


def test_shuffle_is_seeded_per_epoch_and_leaves_global_rngs_alone(frame) -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    t_state, n_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    order = lambda seed, epoch: torch.cat([b["instance_id"] for b in RowBatches(frame, 16, seed, "shuffle").batches(epoch)]).tolist()  # noqa: E731
    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1) and order(1, 0) != order(2, 0)
    assert sorted(order(1, 1)) == sorted(frame.instance_id.tolist())
    assert torch.equal(torch.get_rng_state(), t_state) and (np.random.get_state()[1] == n_state).all()


def test_bad_arguments_are_rejected(frame) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        RowBatches(frame, 0)
    with pytest.raises(ValueError, match="order"):
        RowBatches(frame, 8, order="random")
    with pytest.raises(ValueError, match="no rows"):
        RowBatches(frame.take(np.arange(0)), 8)
