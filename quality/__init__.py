"""Data quality for instance logs: a Great Expectations suite built from the schema, quarantine with reasons."""

from quality.report import write_validation_outputs
from quality.result import QuarantineThresholdError, ValidationError, ValidationResult
from quality.validate import validate_log

__all__ = [
    "QuarantineThresholdError",
    "ValidationError",
    "ValidationResult",
    "validate_log",
    "write_validation_outputs",
]
