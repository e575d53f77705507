"""The instance-log contract: one row = one logged instance (an impression with its features and outcomes).

Required columns: ``instance_id`` (unique int64), ``user_id`` and ``item_id`` (int64; string ids are hashed
to int64 by the file loader), ``ts`` (int64 seconds), ``domain`` (string), ``click`` (0/1).
Optional labels: ``conversion`` (0/1, null where click=0) and ``conversion_ts`` (when the conversion became
known; null where there is none). Oracle columns ``p_click``/``p_conversion`` exist only on synthetic data and
are never read by a model. Feature columns are declared in a schema YAML with a group and a type.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

Group = Literal["user", "item", "context", "cross"]
FeatureType = Literal["categorical", "numeric"]

GROUPS: tuple[str, ...] = ("user", "item", "context", "cross")
FEATURE_TYPES: tuple[str, ...] = ("categorical", "numeric")

# Column name -> kind of value; the single source of truth for validation and loaders.
REQUIRED_COLUMNS: dict[str, str] = {
    "instance_id": "int",
    "user_id": "int",
    "item_id": "int",
    "ts": "int",
    "domain": "str",
    "click": "label",
}
OPTIONAL_LABEL_COLUMNS: dict[str, str] = {"conversion": "label", "conversion_ts": "int"}
ORACLE_COLUMNS: tuple[str, ...] = ("p_click", "p_conversion")
SPLIT_COLUMN = "split"
SPLITS: tuple[str, ...] = ("train", "valid", "test")


# A ts is seconds since the epoch. Where a schema declares no range, a ts must still lie in [0, 2100-01-01): beyond it
# a value is in milliseconds or microseconds (a 1000x time axis), below it not a time at all. The service holds live
# requests to the same bound.
DEFAULT_TS_MIN = 0
DEFAULT_TS_MAX = 4_102_444_800

# The label contract, one rule per field: validation (quality.suite, as GX expectations) and /ingest
# (iat.serving_core, through label_problem) state and enforce the same rules.
LABEL_RULES: dict[str, str] = {
    "click": "'click' is 0 or 1",
    "conversion": "'conversion' is 0 or 1 on a clicked row (click = 1) and null on every other row",
    "conversion_ts": "'conversion_ts' is set only with a conversion label, and is not before 'ts'",
}


def label_problem(click: Any, conversion: Any, conversion_ts: Any, ts: int) -> tuple[str, str] | None:
    """(field, rule) of the first label rule one instance breaks, or None; nulls are None."""
    if click not in (0, 1):
        return "click", LABEL_RULES["click"]
    if conversion is not None and (click != 1 or conversion not in (0, 1)):
        return "conversion", LABEL_RULES["conversion"]
    if conversion_ts is not None and (conversion is None or conversion_ts < ts):
        return "conversion_ts", LABEL_RULES["conversion_ts"]
    return None


class SchemaError(ValueError):
    """A schema YAML, or a log checked against it, breaks the contract."""


@dataclass(frozen=True)
class Feature:
    name: str
    group: str
    type: str

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise SchemaError(f"feature '{self.name}': group '{self.group}' is not one of {GROUPS}")
        if self.type not in FEATURE_TYPES:
            raise SchemaError(f"feature '{self.name}': type '{self.type}' is not one of {FEATURE_TYPES}")


@dataclass(frozen=True)
class Schema:
    """Feature declarations plus the facts validation needs (timestamp range, category column)."""

    name: str
    features: tuple[Feature, ...]
    ts_min: int | None = None
    ts_max: int | None = None
    # Item-side column stored with every token as side info (DESIGN: domain, item, category, labels, ts).
    category_column: str | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SchemaError(f"features declared twice: {dupes}")
        reserved = (set(REQUIRED_COLUMNS) - {"user_id", "item_id"}) | set(OPTIONAL_LABEL_COLUMNS) | set(ORACLE_COLUMNS)
        clash = sorted(set(names) & (reserved | {SPLIT_COLUMN}))
        if clash:
            raise SchemaError(f"features may not use reserved column names: {clash}")
        if self.category_column is not None and self.category_column not in names:
            raise SchemaError(f"category_column '{self.category_column}' is not a declared feature")
        lo, hi = self.ts_range
        if lo > hi:
            raise SchemaError(f"ts_min {lo} is after ts_max {hi}")
        for key, v in (("ts_min", self.ts_min), ("ts_max", self.ts_max)):
            if v is not None and not DEFAULT_TS_MIN <= v <= DEFAULT_TS_MAX:
                raise SchemaError(f"{key} {v} is not a time in seconds between {DEFAULT_TS_MIN} and {DEFAULT_TS_MAX} (2100-01-01)")

    @property
    def ts_range(self) -> tuple[int, int]:
        """The range every ts must lie in: the declared one, or by default [DEFAULT_TS_MIN, DEFAULT_TS_MAX]."""
        return (DEFAULT_TS_MIN if self.ts_min is None else self.ts_min, DEFAULT_TS_MAX if self.ts_max is None else self.ts_max)

    # -- views ---------------------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.type == "categorical"]

    @property
    def numeric(self) -> list[str]:
        return [f.name for f in self.features if f.type == "numeric"]

    def group(self, group: str) -> list[Feature]:
        if group not in GROUPS:
            raise SchemaError(f"unknown group '{group}', expected one of {GROUPS}")
        return [f for f in self.features if f.group == group]

    def columns(self) -> list[str]:
        """Every column a valid log must carry (required + declared features), in a stable order."""
        return list(REQUIRED_COLUMNS) + [n for n in self.feature_names if n not in REQUIRED_COLUMNS]

    # -- io ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["features"] = [asdict(f) for f in self.features]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Schema":
        if not isinstance(d, dict):
            raise SchemaError("schema YAML must be a mapping with a 'features' list")
        raw = d.get("features")
        if not isinstance(raw, list) or not raw:
            raise SchemaError("schema YAML: 'features' must be a non-empty list of {name, group, type}")
        feats = []
        for i, f in enumerate(raw):
            if not isinstance(f, dict) or not {"name", "group", "type"} <= set(f):
                raise SchemaError(f"schema YAML: features[{i}] needs keys name, group, type; got {f!r}")
            feats.append(Feature(str(f["name"]), str(f["group"]), str(f["type"])))
        known = {"name", "features", "ts_min", "ts_max", "category_column", "description", "extra"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SchemaError(f"schema YAML: unknown keys {unknown}")
        return cls(
            name=str(d.get("name", "unnamed")),
            features=tuple(feats),
            ts_min=_optional_int(d, "ts_min"),
            ts_max=_optional_int(d, "ts_max"),
            category_column=d.get("category_column"),
            description=str(d.get("description", "")),
            extra=_mapping(d, "extra"),
        )

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Schema":
        p = Path(path)
        if not p.is_file():
            raise SchemaError(f"schema file not found: {p}")
        try:
            d = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise SchemaError(f"schema file {p} is not valid YAML: {yaml_problem(e)}") from None
        try:
            return cls.from_dict(d)
        except SchemaError as e:
            raise SchemaError(f"schema file {p}: {e}") from None


def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in one line: where, and what."""
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(getattr(e, "problem", None) or e).split())


def _mapping(d: dict[str, Any], key: str) -> dict[str, Any]:
    v = d.get(key) or {}
    if not isinstance(v, dict):
        raise SchemaError(f"'{key}' must be a mapping, got {type(v).__name__} {v!r:.60}")
    return dict(v)


def _optional_int(d: dict[str, Any], key: str) -> int | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise SchemaError(f"'{key}' must be an integer number of seconds since the epoch, got {v!r}")
    return v
