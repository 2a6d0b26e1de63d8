"""Shared fixtures: the hand-written sample tree and a tiny corpus built from it once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = FIXTURES / "samples"


@pytest.fixture(scope="session")
def sample_tree(tmp_path_factory) -> Path:
    """A copy of the six-language sample tree (tests may add broken files to their own copies)."""
    root = tmp_path_factory.mktemp("tree") / "samples"
    shutil.copytree(SAMPLES, root)
    return root
