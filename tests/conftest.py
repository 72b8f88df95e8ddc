"""Shared fixtures: a narrow VGG19 (full depth, few channels) keeps tests fast on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

NARROW = (4, 8, 8, 16, 16)
SHARED_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "images"
FIXTURE_IMAGES = Path(__file__).resolve().parent / "fixtures" / "images"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Never touch the user's real cache."""
    monkeypatch.setenv("HIRESNST_HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def sample_image(name: str) -> Path:
    """A sample image: the committed small copy, else the shared one."""
    local = FIXTURE_IMAGES / name
    return local if local.exists() else SHARED_IMAGES / name
