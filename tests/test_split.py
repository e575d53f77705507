import numpy as np
import pytest

from iat.data.split import add_split, time_split


def test_split_is_by_time_per_domain(small_log):
    df, _ = small_log
    out = add_split(df)
    for dom, d in out.groupby("domain"):
        tr, va, te = (d.loc[d["split"] == s, "ts"] for s in ("train", "valid", "test"))
        assert tr.max() < va.min() <= va.max() < te.min()
        lo, hi = d["ts"].min(), d["ts"].max()
        assert tr.max() < lo + 0.8 * (hi - lo) <= va.min()
        assert va.max() < lo + 0.9 * (hi - lo) <= te.min()
        # 80/10/10 of the time range. Traffic grows as users join (half at day 0, half uniformly later: ~75% of
        # the rows fall in the first 80% of the time), so train holds less than 80% of the rows, not much less.
        share = (d["split"] == "train").mean()
        assert 0.65 < share < 0.8, (dom, share)


def test_split_rejects_bad_fractions(small_log):
    df, _ = small_log
    with pytest.raises(ValueError, match="fractions"):
        time_split(df, (0.5, 0.2, 0.2))
    assert np.array_equal(time_split(df).index, df.index)
