"""Request and response bodies of the ranking service, with the limits every input is held to.

Validation happens here, before any model code runs: a body that breaks a limit or a type is answered with
HTTP 400 and pydantic's list of errors, each with the ``loc`` (path) of the offending field. Whether a
feature name is declared in the schema, and of the right kind, is checked next by the serving core (also a
400 naming the field). Integers are strict (``"7"`` or ``true`` are not ids), floats must be finite.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema

from iat.schema import DEFAULT_TS_MAX, DEFAULT_TS_MIN

MAX_CANDIDATES = 512  # candidates per rank request
MAX_FEATURES = 256  # entries in one features / context mapping
MAX_NAME = 64  # characters of a feature name or a domain
MAX_STRING = 256  # characters of a string feature value
INT64 = 2**63

Int64 = Annotated[int, Field(strict=True, ge=-INT64, le=INT64 - 1)]
Ts = Annotated[int, Field(strict=True, ge=DEFAULT_TS_MIN, le=DEFAULT_TS_MAX, description="seconds since the epoch (UTC); the offline rule too")]
Bit = Annotated[int, Field(strict=True, ge=0, le=1)]
Name = Annotated[str, Field(strict=True, min_length=1, max_length=MAX_NAME)]


def _feature_value(v: Any) -> Any:
    """One clean error per bad value (a plain Union would report one per member type)."""
    if v is None or (isinstance(v, int) and not isinstance(v, bool)):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError("must be a finite number (NaN and infinity are not feature values)")
        return v
    if isinstance(v, str):
        if len(v) > MAX_STRING:
            raise ValueError(f"string of {len(v)} characters; at most {MAX_STRING} are allowed")
        return v
    raise ValueError(f"must be a number, a string or null, not {type(v).__name__}")


FeatureValue = Annotated[
    Any,
    PlainValidator(_feature_value),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string", "maxLength": MAX_STRING}, {"type": "null"}]}),
]
Features = Annotated[dict[Name, FeatureValue], Field(max_length=MAX_FEATURES)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Candidate(_Strict):
    item_id: Int64
    features: Features = Field(default_factory=dict, description="item features and candidate-specific cross features")


class RankRequest(_Strict):
    user_id: Int64
    ts: Optional[Ts] = Field(default=None, description="request time; default: now")
    domain: Name
    context: Features = Field(
        default_factory=dict, description="user, context and cross features of the request (cross features come from the caller's feature service)"
    )
    candidates: list[Candidate] = Field(min_length=1, max_length=MAX_CANDIDATES)


class CandidateScore(BaseModel):
    item_id: int
    p_ctr: float
    p_cvr: float = Field(description="P(conversion | click)")


class RankResponse(BaseModel):
    user_id: int
    ts: int
    model_version: str
    history_tokens: int = Field(description="instance tokens read from the store (strictly before ts)")
    history_clicks: int = Field(description="clicked items in the base behaviour sequence")
    scores: list[CandidateScore]


class Instance(_Strict):
    """A newly logged instance: its ids, time, outcome and features, as a row of the log."""

    instance_id: Int64
    user_id: Int64
    item_id: Int64
    ts: Ts
    domain: Name
    click: Bit
    conversion: Optional[Bit] = None
    conversion_ts: Optional[Ts] = None
    features: Features = Field(default_factory=dict)


class IngestResponse(BaseModel):
    instance_id: int
    store_version: int
    store_rows: int


class LabelRequest(_Strict):
    instance_id: Int64
    conversion_ts: Ts
    conversion: Bit = 1


class LabelResponse(BaseModel):
    instance_id: int
    store_version: int
