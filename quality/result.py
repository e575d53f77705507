"""What a validation run returns, and the errors it raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from iat.schema import SchemaError
from quality.gx_run import Outcome

REASONS_COLUMN = "reasons"
REASON_SEP = "; "
INPUT_ROW = "input_row"  # index name of the quarantine frame: the row's 0-based position in the input


class ValidationError(SchemaError):
    """The log fails a table-level check (missing column, unusable dtype, no rows): nothing can be kept."""


@dataclass
class ValidationResult:
    """Clean rows (contract dtypes), quarantined rows (input values + ``reasons``) and the evidence.

    ``counts`` maps each row-level expectation label to the number of rows it quarantined;
    ``outcomes`` are every expectation GX evaluated, in suite order.
    """

    clean: pd.DataFrame
    quarantine: pd.DataFrame
    counts: dict[str, int]
    n_input: int
    max_quarantine_share: float
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert len(self.clean) + len(self.quarantine) == self.n_input, (
            f"row accounting broken: {len(self.clean)} clean + {len(self.quarantine)} quarantined "
            f"!= {self.n_input} input rows"
        )

    @property
    def quarantine_share(self) -> float:
        return len(self.quarantine) / self.n_input if self.n_input else 0.0

    @property
    def passed(self) -> bool:
        return self.quarantine_share <= self.max_quarantine_share

    def describe_failures(self) -> str:
        """'label: n rows' for every expectation that quarantined rows, most rows first."""
        items = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return "; ".join(f"{label}: {n} rows" for label, n in items if n)

    def summary(self) -> dict[str, Any]:
        return {
            "n_input": self.n_input,
            "n_clean": len(self.clean),
            "n_quarantine": len(self.quarantine),
            "quarantine_share": self.quarantine_share,
            "max_quarantine_share": self.max_quarantine_share,
            "passed": self.passed,
            "counts": dict(self.counts),
            "expectations": [
                {
                    "expectation": o.label,
                    "description": o.description,
                    "level": o.level,
                    "success": o.success,
                    "gx_unexpected_count": o.unexpected_count,
                    "quarantined_rows": self.counts.get(o.label, 0),
                }
                for o in self.outcomes
            ],
        }


class QuarantineThresholdError(ValidationError):
    """More rows were quarantined than allowed. ``result`` still holds every row, so the caller can
    write the quarantine file before failing the run."""

    def __init__(self, result: ValidationResult) -> None:
        self.result = result
        super().__init__(
            f"quarantined {len(result.quarantine)} of {result.n_input} rows "
            f"({result.quarantine_share:.2%}) > allowed {result.max_quarantine_share:.2%}: "
            f"{result.describe_failures()}"
        )
