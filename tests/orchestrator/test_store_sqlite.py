"""The experiment database on SQLite, the embedded default: opening, migrating, upserting.

Every test gets its own database file under tmp_path. The same checks run against PostgreSQL in
test_store_postgres.py; here SQLite's own settings (WAL, busy timeout, foreign keys) are added.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from orchestrator import cli, records
from orchestrator.config import ExperimentConfig, ResolvedConfig, resolve
from orchestrator.store.db import SQLITE_BUSY_TIMEOUT_MS, Store, StoreError, upsert
from orchestrator.store.migrate import alembic_config, current
from orchestrator.store.schema import Base, Mode, Pair, PairResult, PathPointRow, Stage

runner = CliRunner()


@pytest.fixture(scope="module")
def config() -> ResolvedConfig:
    """The embedded default experiment (LeNet-5 on digits), 2 pairs; resolved once."""
    return resolve(ExperimentConfig(pairs=2))


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'llpf.db'}"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated store on a fresh file; its connections are closed afterwards."""
    store = Store(db_url)
    store.ensure_schema()
    yield store
    store.engine.dispose()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI's callback replaces the root handlers; put pytest's back after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def head_revision(store: Store) -> str:
    return ScriptDirectory.from_config(alembic_config(store.engine)).get_current_head()


def create_experiment(store: Store, config: ResolvedConfig) -> tuple[int, list[int]]:
    """Insert the experiment; returns its id and its pairs' ids in index order."""
    with store.session() as session, session.begin():
        experiment = records.create_experiment(session, config, "s3://bucket/llpf")
        session.flush()
        pair_ids = [p.id for p in sorted(experiment.pairs, key=lambda p: p.index)]
        return experiment.id, pair_ids


def mode_row(pair_id: int, role: str = "a", **changes: Any) -> dict[str, Any]:
    row = {
        "pair_id": pair_id,
        "role": role,
        "seed": 0 if role == "a" else 1,
        "recipe": {"name": "lenet5-digits", "epochs": 12, "milestones": [6, 9], "nesterov": True},
        "train_loss": 0.05,
        "train_accuracy": 0.99,
        "test_loss": 0.09,
        "test_accuracy": 0.97,
        "layer_variance": {"conv1.weight": 0.0213, "fc3.bias": 1.5e-9, "note": "ünïcode"},
        "layer_mean": {"conv1.weight": -0.0012, "fc3.bias": None, "shape": [6, 1, 5, 5]},
        "weights_uri": f"s3://bucket/llpf/exp-1/pair-0/mode_{role}.safetensors",
        "weights_sha256": "ab" * 32,
    }
    return {**row, **changes}


def point_row(pair_id: int, iteration: int, **changes: Any) -> dict[str, Any]:
    row = {
        "pair_id": pair_id,
        "stage": "m2m",
        "iteration": iteration,
        "position": None,
        "phase": iteration % 6,
        "phase_name": f"phase {iteration % 6}",
        "rounds": 3,
        "rolling_loss": 0.1,
        "total_distance": 40.0 - iteration * 0.01,
        "layer_distances": {"conv1.weight": 1.25, "fc3.weight": [0.5, 0.25]},
        "train_loss": None,
        "train_accuracy": None,
        "test_loss": None,
        "test_accuracy": None,
        "weights_uri": None,
        "is_destination": False,
    }
    return {**row, **changes}


def count(store: Store, model: type[Base]) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_a_new_connection_uses_wal_a_busy_timeout_and_foreign_keys(store: Store) -> None:
    with store.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == SQLITE_BUSY_TIMEOUT_MS
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_a_missing_directory_is_a_store_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"

    with pytest.raises(StoreError) as raised:
        Store(f"sqlite:///{missing / 'llpf.db'}")

    message = str(raised.value)
    assert str(missing) in message and "does not exist" in message
    assert "\n" not in message


def test_ensure_schema_migrates_to_head_and_is_harmless_twice(db_url: str) -> None:
    store = Store(db_url)
    assert not store.has_schema()

    store.ensure_schema()
    tables = set(inspect(store.engine).get_table_names())
    store.ensure_schema()

    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    assert store.has_schema()
    assert current(store.engine) == head_revision(store)
    with store.engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    assert [v for (v,) in versions] == [head_revision(store)]
    store.engine.dispose()


def test_upserting_a_mode_inserts_once_then_updates_on_pair_and_role(
    store: Store, config: ResolvedConfig
) -> None:
    _, (pair_id, _) = create_experiment(store, config)
    first = mode_row(pair_id)
    changed = mode_row(pair_id, train_loss=0.5, recipe={"name": "other", "epochs": 1})

    with store.session() as session, session.begin():
        upsert(session, Mode, [first], keys=["pair_id", "role"])
    with store.session() as session, session.begin():
        upsert(session, Mode, [changed], keys=["pair_id", "role"])
        upsert(session, Mode, [mode_row(pair_id, "b")], keys=["pair_id", "role"])

    assert count(store, Mode) == 2
    with store.session() as session:
        mode = session.scalars(select(Mode).where(Mode.role == "a")).one()
        assert mode.train_loss == 0.5
        assert mode.recipe == {"name": "other", "epochs": 1}
        assert mode.layer_variance == first["layer_variance"]  # JSON round trip
        assert mode.layer_mean == first["layer_mean"]


def test_upserting_path_points_updates_on_pair_stage_and_iteration(
    store: Store, config: ResolvedConfig
) -> None:
    _, (pair_id, other_pair_id) = create_experiment(store, config)
    keys = ["pair_id", "stage", "iteration"]
    # 2,000 rows of 16 columns take two statements (the upsert chunks at 30,000 parameters)
    rows = [point_row(pair_id, i) for i in range(2000)]

    with store.session() as session, session.begin():
        upsert(session, PathPointRow, rows, keys=keys)
        upsert(session, PathPointRow, [point_row(other_pair_id, 0)], keys=keys)
    with store.session() as session, session.begin():
        again = [point_row(pair_id, i, rounds=7, layer_distances={"all": i}) for i in range(2000)]
        upsert(session, PathPointRow, again + [point_row(pair_id, 2000)], keys=keys)

    assert count(store, PathPointRow) == 2002
    with store.session() as session:
        points = session.scalars(
            select(PathPointRow)
            .where(PathPointRow.pair_id == pair_id)
            .order_by(PathPointRow.iteration)
        ).all()
        assert [p.iteration for p in points] == list(range(2001))
        assert {p.rounds for p in points[:2000]} == {7}
        assert points[1234].layer_distances == {"all": 1234}
        assert points[2000].layer_distances == {"conv1.weight": 1.25, "fc3.weight": [0.5, 0.25]}


def test_non_finite_floats_in_json_columns_are_stored(store: Store, config: ResolvedConfig) -> None:
    """A diverged interpolation yields inf or nan losses; recording them must not fail."""
    _, (pair_id, _) = create_experiment(store, config)
    losses = [0.1, float("inf"), float("nan"), 0.2]

    with store.session() as session, session.begin():
        upsert(session, PairResult, [{"pair_id": pair_id, "linear_losses": losses}], ["pair_id"])

    with store.session() as session:
        stored = session.scalars(select(PairResult.linear_losses)).one()
    assert stored[0] == 0.1 and stored[3] == 0.2
    assert stored[1] is None and stored[2] is None  # non-finite values are written as null


def test_a_mode_of_a_missing_pair_is_refused(store: Store) -> None:
    with pytest.raises(IntegrityError), store.session() as session, session.begin():
        upsert(session, Mode, [mode_row(pair_id=999)], keys=["pair_id", "role"])


def test_an_experiment_is_found_by_its_fingerprint(store: Store, config: ResolvedConfig) -> None:
    experiment_id, pair_ids = create_experiment(store, config)

    with store.session() as session:
        found = records.find_experiment(session, config.fingerprint())
        assert found is not None and found.id == experiment_id
        assert found.status == "pending" and found.artifact_root == "s3://bucket/llpf"
        assert [(p.index, p.seed_a, p.seed_b) for p in found.pairs] == [(0, 0, 1), (1, 2, 3)]
        for pair_id in pair_ids:
            assert set(records.stages_by_kind(session, pair_id)) == set(records.STAGE_KINDS)
        # the stored configuration is what a driver runs: it must validate to the same one
        assert ResolvedConfig.model_validate(found.config).fingerprint() == config.fingerprint()
        other = config.model_copy(update={"pairs": 3})
        assert records.find_experiment(session, other.fingerprint()) is None
    assert count(store, Pair) == 2
    assert count(store, Stage) == 2 * len(records.STAGE_KINDS)


def test_the_same_fingerprint_cannot_be_inserted_twice(
    store: Store, config: ResolvedConfig
) -> None:
    create_experiment(store, config)

    with pytest.raises(IntegrityError):
        create_experiment(store, config)


def test_artifacts_default_to_a_directory_beside_the_database(store: Store, tmp_path: Path) -> None:
    assert store.artifact_root_default() == str(tmp_path.resolve() / "llpf_artifacts")


def test_db_upgrade_migrates_a_new_file(db_url: str, tmp_path: Path) -> None:
    result = runner.invoke(cli.app, ["db", "upgrade", "--db", db_url])

    assert result.exit_code == 0, result.output
    store = Store(db_url)
    assert current(store.engine) == head_revision(store)
    assert f"revision {head_revision(store)}" in result.output
    store.engine.dispose()


def test_db_upgrade_into_a_missing_directory_exits_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "absent"

    result = runner.invoke(cli.app, ["db", "upgrade", "--db", f"sqlite:///{missing}/llpf.db"])

    assert result.exit_code == 2
    assert f"directory '{missing}' does not exist" in result.output
    assert "Traceback" not in result.output


def test_status_of_an_empty_migrated_database(store: Store, db_url: str) -> None:
    table = runner.invoke(cli.app, ["status", "--db", db_url])
    as_json = runner.invoke(cli.app, ["status", "--db", db_url, "--format", "json"])

    assert table.exit_code == 0, table.output
    assert "experiments" in table.output
    assert as_json.exit_code == 0, as_json.output
    assert as_json.output.strip() == "[]"


def test_status_of_a_database_without_tables_points_at_db_upgrade(db_url: str) -> None:
    result = runner.invoke(cli.app, ["status", "--db", db_url])

    assert result.exit_code == 2
    assert "llpf db upgrade" in result.output
