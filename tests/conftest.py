"""Shared fixtures: seeded torch, single-threaded CPU work, trained LeNet-5 modes on digits."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(autouse=True)
def _seeded_and_single_threaded():
    """Every test starts from the same random state, on one thread (CI has 2 cores)."""
    torch.set_num_threads(1)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    auth_mode = os.environ.get("RAY_AUTH_MODE")
    yield
    if auth_mode is None:  # a CLI call in this process must not change Ray's mode for others
        os.environ.pop("RAY_AUTH_MODE", None)


@pytest.fixture(scope="session")
def digits():
    from llpf_core.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def quick_recipe():
    """LeNet-5's recipe, shortened: enough for ~99% training accuracy on digits."""
    from llpf_core.recipes import RECIPES

    return RECIPES["lenet5-digits"].model_copy(update={"epochs": 12})


@pytest.fixture(scope="session")
def lenet_modes(digits, quick_recipe):
    """Two LeNet-5 modes trained on digits from seeds 1 and 2: (state_a, state_b)."""
    from llpf_core.models import build_model
    from llpf_core.recipes import train_mode

    torch.set_num_threads(1)
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = build_model("lenet5")
        train_mode(model, digits, quick_recipe, seed)
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return tuple(states)


POSTGRES_ADMIN_URL = os.environ.get(
    "LLPF_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def postgres_url():
    """A fresh, empty PostgreSQL database for one test, dropped afterwards.

    Skipped with the reason when no server answers at LLPF_TEST_POSTGRES_URL (default: the local
    server on 127.0.0.1:5432, database `test`).
    """
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(
        POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with admin.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as error:  # any failure to connect means: no server for this test
        pytest.skip(f"no PostgreSQL server at {POSTGRES_ADMIN_URL}: {type(error).__name__}")
    name = f"llpf_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
