"""Feature encoding: a small frame (a rank request, encoded by dict lookups) gets the same codes as a large one
(encoded by pandas), for every kind of value a request or a log can hold."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from iat.features import DICT_LOOKUP_ROWS, FeatureEncoder
from _frames import contract_log

DF, SCHEMA = contract_log(n=60, seed=3)
ENC = FeatureEncoder.fit(DF, SCHEMA, min_count=1)

# what JSON, pandas and numpy hand the encoder: vocabulary values, their float / numpy / string twins, unseen ones,
# nulls, and bools (a list holding one goes to pandas on both sides: the test then checks the routing)
VALUE = st.one_of(
    st.sampled_from(ENC.vocabs["category"] + ENC.vocabs["device"]),
    st.integers(-3, 60),
    st.integers(-3, 60).map(float),
    st.sampled_from([None, np.nan, pd.NA, True, False, np.bool_(True), "1", "ios ", np.int64(2), np.float64(3.0), np.str_("ios")]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(VALUE, min_size=1, max_size=40))
def test_small_and_large_frames_encode_alike(values) -> None:
    for name in ENC.cat_names:
        small = ENC.encode_categorical(name, pd.Series(values, dtype=object))
        padded = pd.Series(values * (DICT_LOOKUP_ROWS // len(values) + 2), dtype=object)
        assert len(padded) > DICT_LOOKUP_ROWS
        large = ENC.encode_categorical(name, padded)[: len(values)]
        assert small.tolist() == large.tolist(), name


def test_oov_and_known_codes() -> None:
    codes = ENC.encode_categorical("device", pd.Series(["ios", "android", "web", None], dtype=object))
    assert codes[0] == ENC.vocabs["device"].index("ios") + 1 and codes[1] == ENC.vocabs["device"].index("android") + 1
    assert codes[2] == 0 and codes[3] == 0  # unseen and null: the OOV row


def test_a_bool_vocabulary_encodes_alike_small_and_large() -> None:
    """A bool column in the log (vocabulary [False, True]) read back as 0/1 integers: pandas decides, on both sides."""
    df = DF.assign(device=np.arange(len(DF)) % 2 == 0)
    enc = FeatureEncoder.fit(df, SCHEMA, min_count=1)
    values = np.array([1, 0, 1, 2])
    small = enc.encode_categorical("device", values)
    large = enc.encode_categorical("device", np.tile(values, DICT_LOOKUP_ROWS))[: len(values)]
    assert small.tolist() == large.tolist()
    assert enc.encode_categorical("device", np.array([True, False])).tolist() == [2, 1]  # the vocabulary's own values
