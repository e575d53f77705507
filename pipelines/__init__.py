"""ZenML pipelines chaining the steps in ``steps/``."""
