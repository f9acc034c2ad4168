"""Shared fixtures: paths to the project and to the optional real data."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
MODELS_DIR = PROJECT_ROOT / "models"


def require_shared_data(sub: str) -> Path:
    """Path to ``../shared/data/<sub>``, or skip the test with the reason."""
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real data not present: {path} (only on machines with ../shared/data)")
    return path


def require_shipped_models() -> Path:
    """The shipped ``models/`` folder with both classifiers, or skip with the reason."""
    from inference.registry import missing_models

    reason = missing_models(MODELS_DIR)
    if reason is not None:
        pytest.skip(f"shipped models not usable: {reason}")
    return MODELS_DIR
