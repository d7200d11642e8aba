"""Reading and writing the rows of one experiment: the driver's only way to the database."""

from __future__ import annotations

import importlib.metadata
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.config import ResolvedConfig
from orchestrator.store.db import now, upsert
from orchestrator.store.schema import (
    ContinuitySegment,
    Experiment,
    Mode,
    Pair,
    PairResult,
    PathPointRow,
    Stage,
)

STAGE_KINDS = ("train_a", "train_b", "linear", "m2o", "m2m", "continuity")
FINAL_STAGE_STATES = {"succeeded", "skipped", "failed", "cancelled"}


def code_version() -> str:
    """The package version, plus the git commit when running from a checkout."""
    version = importlib.metadata.version("llpf")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{version}+g{commit}" if commit else version


def find_experiment(session: Session, fingerprint: str) -> Experiment | None:
    return session.scalar(select(Experiment).where(Experiment.fingerprint == fingerprint))


def create_experiment(session: Session, config: ResolvedConfig, artifact_root: str) -> Experiment:
    """Insert the experiment with its pairs and their pending stages."""
    experiment = Experiment(
        name=config.name,
        fingerprint=config.fingerprint(),
        config=config.model_dump(mode="json"),
        code_version=code_version(),
        status="pending",
        artifact_root=artifact_root,
        created_at=now(),
    )
    session.add(experiment)
    session.flush()
    for index in range(config.pairs):
        seed_a, seed_b = config.seeds(index)
        pair = Pair(
            experiment_id=experiment.id, index=index, seed_a=seed_a, seed_b=seed_b, status="pending"
        )
        session.add(pair)
        session.flush()
        for kind in STAGE_KINDS:
            session.add(Stage(pair_id=pair.id, kind=kind, state="pending", attempts=0))
    return experiment


def stage(session: Session, pair_id: int, kind: str) -> Stage:
    return session.scalars(select(Stage).where(Stage.pair_id == pair_id, Stage.kind == kind)).one()


def stages_by_kind(session: Session, pair_id: int) -> dict[str, Stage]:
    rows = session.scalars(select(Stage).where(Stage.pair_id == pair_id)).all()
    return {row.kind: row for row in rows}


def mark_running(session: Session, pair: Pair, kind: str) -> None:
    row = stage(session, pair.id, kind)
    row.state, row.attempts, row.started_at, row.error = "running", row.attempts + 1, now(), None
    if pair.started_at is None:
        pair.started_at = now()
    pair.status = "running"


def mark_finished(
    session: Session,
    pair_id: int,
    kind: str,
    state: str,
    wall_seconds: float | None = None,
    error: str | None = None,
    info: dict[str, Any] | None = None,
) -> None:
    row = stage(session, pair_id, kind)
    row.state, row.finished_at, row.error = state, now(), error
    if wall_seconds is not None:
        row.wall_seconds = wall_seconds
    elif row.started_at is not None:
        row.wall_seconds = (now() - as_utc(row.started_at)).total_seconds()
    if info is not None:
        row.info = info


def as_utc(moment: datetime) -> datetime:
    """A timestamp read back from the store, as an aware UTC datetime.

    SQLite returns naive datetimes; they were written as UTC.
    """
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def record_mode(session: Session, pair_id: int, result: Any) -> None:
    upsert(
        session,
        Mode,
        [
            {
                "pair_id": pair_id,
                "role": result.role,
                "seed": result.seed,
                "recipe": result.recipe,
                "train_loss": result.train_loss,
                "train_accuracy": result.train_accuracy,
                "test_loss": result.test_loss,
                "test_accuracy": result.test_accuracy,
                "layer_variance": result.layer_variance,
                "layer_mean": result.layer_mean,
                "weights_uri": result.weights_uri,
                "weights_sha256": result.weights_sha256,
            }
        ],
        keys=["pair_id", "role"],
    )


def modes(session: Session, pair_id: int) -> dict[str, Mode]:
    rows = session.scalars(select(Mode).where(Mode.pair_id == pair_id)).all()
    return {row.role: row for row in rows}


def record_path_points(session: Session, pair_id: int, points: list[dict[str, Any]]) -> None:
    """Upsert a stage's points; positions are assigned once the whole path is known."""
    rows = [
        {
            "pair_id": pair_id,
            "stage": p["stage"],
            "iteration": p["iteration"],
            "position": None,
            "phase": p["phase"],
            "phase_name": p["phase_name"],
            "rounds": p["rounds"],
            "rolling_loss": p["rolling_loss"],
            "total_distance": p["total_distance"],
            "layer_distances": p["layer_distances"],
            "train_loss": p["train_loss"],
            "train_accuracy": p["train_accuracy"],
            "test_loss": p["test_loss"],
            "test_accuracy": p["test_accuracy"],
            "weights_uri": p["weights_uri"],
            "is_destination": p["is_destination"],
        }
        for p in points
    ]
    upsert(session, PathPointRow, rows, keys=["pair_id", "stage", "iteration"])


def assign_positions(session: Session, pair_id: int, start_role: str) -> list[PathPointRow]:
    """Order the pair's points into one path from A to B and number them.

    The path runs M2O's points, then M2M's (whose first point is where M2O ended, so it is left
    unnumbered), from the mode M2O started at; if that was B, the order is reversed.
    """
    rows = session.scalars(select(PathPointRow).where(PathPointRow.pair_id == pair_id)).all()
    m2o = sorted((r for r in rows if r.stage == "m2o"), key=lambda r: r.iteration)
    m2m = sorted((r for r in rows if r.stage == "m2m"), key=lambda r: r.iteration)
    if m2o and m2m:
        m2m[0].position = None
        m2m = m2m[1:]
    ordered = m2o + m2m
    if start_role == "b":
        ordered.reverse()
    for position, row in enumerate(ordered):
        row.position = position
    return ordered


def ordered_points(session: Session, pair_id: int) -> list[PathPointRow]:
    return list(
        session.scalars(
            select(PathPointRow)
            .where(PathPointRow.pair_id == pair_id, PathPointRow.position.is_not(None))
            .order_by(PathPointRow.position)
        ).all()
    )


def record_segments(session: Session, pair_id: int, segments: list[dict[str, Any]]) -> None:
    rows = [
        {
            "pair_id": pair_id,
            "position": s["position"],
            "max_loss": s["max_loss"],
            "alphas": s["alphas"],
            "losses": s["losses"],
        }
        for s in segments
    ]
    upsert(session, ContinuitySegment, rows, keys=["pair_id", "position"])


def record_result(session: Session, pair_id: int, values: dict[str, Any]) -> None:
    upsert(session, PairResult, [{"pair_id": pair_id, **values}], keys=["pair_id"])
