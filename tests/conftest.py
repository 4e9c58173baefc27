"""Fixtures for every tier: fixed seeds and an isolated cache. The network is switched off in the root
``conftest.py`` (so that doctests in ``src`` run offline too); the tiny Llama is built in
``tests/integration/conftest.py``, and only that tier may load a model."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _seeds() -> None:
    random.seed(0)
    np.random.seed(0)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # the real default model's conversion is reused from the user cache by slow tests only
    if "FORGETSCALE_CACHE" not in os.environ:
        os.environ["FORGETSCALE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
