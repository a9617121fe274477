"""Shared test fixtures: the project root on sys.path, and ../shared when it exists."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"


@pytest.fixture
def shared():
    """Path to ../shared (real SAR data, CLIP references); the test is skipped without it."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (a user's checkout has none)")
    return SHARED
