"""Test-wide setup: ZenML, BentoML and reports live in a temporary folder, never in the user's home."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import pytest

_HOME = Path(tempfile.mkdtemp(prefix="iat-tests-"))
os.environ["IAT_HOME"] = str(_HOME)
os.environ["ZENML_CONFIG_PATH"] = str(_HOME / ".zenml")

from iatcli.env import setup_environment  # noqa: E402  (must follow the env vars above)

setup_environment(_HOME)


@pytest.fixture(scope="session")
def iat_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def small_log() -> tuple[pd.DataFrame, "object"]:
    """A small synthetic log (about 20k rows) shared by tests that only read it."""
    from iat.data.synthetic import generate

    return generate(200, seed=7, progress=False)
