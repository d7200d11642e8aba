"""End to end through the CLI, a local Ray instance and SQLite, with faults injected.

Every test runs a tiny experiment (LeNet-5 on digits, a few epochs, a short M2M) and asserts on
the database rows and the CLI's JSON output, not on log text.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml
from sqlalchemy import func, select
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.store.db import Store
from orchestrator.store.schema import (
    ContinuitySegment,
    Experiment,
    Mode,
    Pair,
    PairResult,
    PathPointRow,
    Stage,
)

pytestmark = pytest.mark.slow

TINY = {
    "name": "tiny",
    "pairs": 2,
    "recipe_a": {
        "name": "tiny",
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "epochs": 4,
        "batch_size": 64,
    },
    "m2m": {
        "phases": [
            {"name": "all", "layers": ["*"], "iterations": 12, "step_a": 0.15, "step_f": 0.02}
        ],
        "max_rounds": 5,
        "store_interval": 2,
        "checkpoint_interval": 4,
    },
    "m2o": {"sphere_tolerance": 0.5, "iterations": 20, "max_rounds": 3},
    "continuity": {"samples_per_segment": 3, "train_subset": 128},
    "linear": {"samples": 5},
    "resources": {"num_cpus": 1},
}
RESULT_KEYS = {
    "experiment",
    "pair",
    "status",
    "seed_a",
    "seed_b",
    "linear_barrier",
    "path_max_train_loss",
    "continuity_max_loss",
    "initial_distance",
    "final_distance",
    "m2o_iterations",
    "m2m_iterations",
    "wall_seconds",
}


def _write_config(tmp_path, **changes):
    config = {**TINY, **changes}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _submit(tmp_path, *extra, **changes):
    db = f"sqlite:///{tmp_path / 'llpf.db'}"
    result = CliRunner().invoke(
        app, ["submit", "--config", str(_write_config(tmp_path, **changes)), "--db", db, *extra]
    )
    return result, db


def _count(store, model, **where):
    with store.session() as session:
        query = select(func.count()).select_from(model)
        for key, value in where.items():
            query = query.where(getattr(model, key) == value)
        return session.scalar(query)


def test_submit_runs_every_stage_and_records_it(tmp_path):
    result, db = _submit(tmp_path)
    assert result.exit_code == 0, result.output
    store = Store(db)
    assert _count(store, Experiment) == 1
    assert _count(store, Pair, status="succeeded") == 2
    assert _count(store, Mode) == 4
    assert _count(store, Stage, state="succeeded") == 10  # m2o is skipped: same recipe
    assert _count(store, Stage, state="skipped", kind="m2o") == 2
    points = _count(store, PathPointRow)
    assert points == 2 * (1 + 12 // 2 + 1)  # start, every 2nd iterate, B itself
    assert _count(store, ContinuitySegment) == points - 2

    output = CliRunner().invoke(app, ["results", "1", "--format", "json", "--db", db]).output
    rows = json.loads(output)
    assert [row["pair"] for row in rows] == [0, 1]
    for row in rows:
        assert RESULT_KEYS <= row.keys()
        assert row["status"] == "succeeded"
        assert (row["seed_a"], row["seed_b"]) == (2 * row["pair"], 2 * row["pair"] + 1)
        assert row["final_distance"] == 0.0
        assert 0 < row["last_iterate_distance"] < row["initial_distance"]
        assert row["m2o_iterations"] == 0 and row["m2m_iterations"] == 12
        assert row["path_max_train_loss"] < row["linear_barrier"]
        assert row["continuity_max_loss"] >= 0 and row["initial_distance"] > 1

    with store.session() as session:
        experiment = session.scalars(select(Experiment)).one()
        assert experiment.status == "succeeded"
        assert experiment.config["recipe_a"]["epochs"] == 4  # the resolved config is stored
        positions = session.scalars(
            select(PathPointRow.position)
            .where(PathPointRow.position.is_not(None))
            .order_by(PathPointRow.pair_id, PathPointRow.position)
        ).all()
        assert positions == list(range(8)) * 2

    csv_output = CliRunner().invoke(app, ["results", "--format", "csv", "--db", db]).output
    assert csv_output.splitlines()[0].startswith("experiment,pair,status")
    status = CliRunner().invoke(app, ["status", "1", "--db", db, "--format", "json"])
    assert {row["m2m"] for row in json.loads(status.output)} == {"succeeded"}


def test_submitting_the_same_configuration_twice_creates_one_experiment(tmp_path):
    # GPUs asked for on a machine without any: device "auto" falls back to the CPU.
    first, db = _submit(tmp_path, pairs=1, resources={"num_cpus": 1, "num_gpus": 0.5})
    assert first.exit_code == 0, first.output
    second, _ = _submit(tmp_path, pairs=1)
    assert second.exit_code == 0
    assert "already exists" in second.output
    store = Store(db)
    assert _count(store, Experiment) == 1
    assert _count(store, Pair) == 1
    with store.session() as session:
        m2m = session.scalars(select(Stage).where(Stage.kind == "m2m")).one()
        assert m2m.state == "succeeded" and m2m.info["device"] == "cpu"


def test_a_nan_in_one_pair_fails_that_pair_only(tmp_path):
    result, db = _submit(tmp_path, fault_injection={"nan_pairs": [1]})
    assert result.exit_code == 1, result.output  # scripts can tell that pairs failed
    store = Store(db)
    with store.session() as session:
        pairs = {p.index: p for p in session.scalars(select(Pair))}
        assert pairs[0].status == "succeeded"
        assert pairs[1].status == "failed"
        assert "NonFiniteLossError" in pairs[1].error and "nan" in pairs[1].error
        m2m = session.scalars(
            select(Stage).where(Stage.pair_id == pairs[1].id, Stage.kind == "m2m")
        ).one()
        assert m2m.state == "failed" and m2m.attempts == 1  # not retried
        assert session.scalars(select(Experiment)).one().status == "partial"
        assert (
            session.scalar(
                select(PairResult.path_max_train_loss).where(PairResult.pair_id == pairs[0].id)
            )
            is not None
        )


def test_a_killed_worker_resumes_from_its_checkpoint(tmp_path):
    result, db = _submit(tmp_path, pairs=1, fault_injection={"m2m_kill_at_iteration": 8})
    assert result.exit_code == 0, result.output
    store = Store(db)
    with store.session() as session:
        m2m = session.scalars(select(Stage).where(Stage.kind == "m2m")).one()
        assert m2m.state == "succeeded"
        assert m2m.info["resumed_from"] == 8
        iterations = session.scalars(
            select(PathPointRow.iteration)
            .where(PathPointRow.stage == "m2m")
            .order_by(PathPointRow.iteration)
        ).all()
    assert iterations == [0, 2, 4, 6, 8, 10, 12, 13]  # nothing missing, nothing twice


def test_impossible_resources_fail_fast_with_a_clear_message(tmp_path):
    started = time.monotonic()
    result, _ = _submit(tmp_path, resources={"num_cpus": 64})
    assert result.exit_code == 2
    assert "num_cpus=64" in result.output and "largest node has CPU=" in result.output
    assert time.monotonic() - started < 60


def test_cifar10_on_disk_with_a_derived_fdf_schedule(tmp_path):
    from llpf_core.data.fake import write_fake_cifar10

    data_dir = write_fake_cifar10(tmp_path / "data", n_train=64, n_test=16, seed=0)
    changes = {
        "arch": "shufflenet_v2",
        "dataset": "cifar10",
        "data_dir": str(data_dir),
        "pairs": 1,
        "recipe_a": {**TINY["recipe_a"], "epochs": 1, "batch_size": 16},
        "m2m": {"max_rounds": 1, "batch_size": 8},
        "fdf": {"iterations_per_phase": 1, "final_iterations": 2, "step_a": 0.3},
        "evaluation": {"batch_size": 64, "norm_recalibration_batches": 1},
        "continuity": {"samples_per_segment": 2, "train_subset": 16},
    }
    result, db = _submit(tmp_path, **changes)
    assert result.exit_code == 0, result.output
    rows = json.loads(CliRunner().invoke(app, ["results", "--format", "json", "--db", db]).output)
    assert rows[0]["status"] == "succeeded" and rows[0]["final_distance"] == 0.0
    store = Store(db)
    with store.session() as session:
        config = session.scalars(select(Experiment)).one().config
        phases = session.scalars(
            select(PathPointRow.phase_name)
            .where(PathPointRow.stage == "m2m")
            .order_by(PathPointRow.iteration)
        ).all()
    names = [p["name"] for p in config["phases"]]
    assert names[0] == "Phase 1: conv1+bn1" and names[-1].endswith("all layers")
    assert rows[0]["m2m_iterations"] == len(names) - 1 + 2  # one per phase, two in the last
    assert phases[1] == names[0] and phases[-2] == names[-1]
