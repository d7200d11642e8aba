"""The database schema: experiments, modes, pairs, stages, path points, segments, results.

Every row that a stage produces has a natural unique key (experiment and pair index, stage kind,
path iteration, ...), so that recording the same result twice, after a retry or a resumed
driver, updates a row rather than duplicating it. Weights are not stored here: rows hold the
URIs and SHA-256 of files in the artifact store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Experiment(Base):
    """One submitted configuration: `pairs` mode pairs connected with the same settings."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    config: Mapped[dict[str, Any]]
    code_version: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    artifact_root: Mapped[str] = mapped_column(Text)
    ray_address: Mapped[str | None] = mapped_column(Text)
    ray_job_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    pairs: Mapped[list[Pair]] = relationship(back_populates="experiment", order_by="Pair.index")


class Pair(Base):
    """Two modes of one experiment and the path between them."""

    __tablename__ = "pairs"
    __table_args__ = (UniqueConstraint("experiment_id", "index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    seed_a: Mapped[int]
    seed_b: Mapped[int]
    status: Mapped[str] = mapped_column(String(20), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    experiment: Mapped[Experiment] = relationship(back_populates="pairs")
    stages: Mapped[list[Stage]] = relationship(back_populates="pair", order_by="Stage.id")


class Mode(Base):
    """A trained network: role "a" or "b" of a pair, with its recipe, metrics and statistics."""

    __tablename__ = "modes"
    __table_args__ = (UniqueConstraint("pair_id", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(1))
    seed: Mapped[int]
    recipe: Mapped[dict[str, Any]]
    train_loss: Mapped[float] = mapped_column(Float)
    train_accuracy: Mapped[float] = mapped_column(Float)
    test_loss: Mapped[float] = mapped_column(Float)
    test_accuracy: Mapped[float] = mapped_column(Float)
    layer_variance: Mapped[dict[str, Any]]
    layer_mean: Mapped[dict[str, Any]]
    weights_uri: Mapped[str] = mapped_column(Text)
    weights_sha256: Mapped[str] = mapped_column(String(64))


class Stage(Base):
    """One stage of a pair's pipeline and its state (pending, running, succeeded, failed, ...)."""

    __tablename__ = "stages"
    __table_args__ = (UniqueConstraint("pair_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    wall_seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    info: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    pair: Mapped[Pair] = relationship(back_populates="stages")


class PathPointRow(Base):
    """A stored point of a pair's path. `position` orders the whole path from A to B."""

    __tablename__ = "path_points"
    __table_args__ = (UniqueConstraint("pair_id", "stage", "iteration"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(10))
    iteration: Mapped[int] = mapped_column(Integer)
    position: Mapped[int | None] = mapped_column(Integer)
    phase: Mapped[int] = mapped_column(Integer)
    phase_name: Mapped[str] = mapped_column(String(200))
    rounds: Mapped[int] = mapped_column(Integer)
    rolling_loss: Mapped[float | None] = mapped_column(Float)
    total_distance: Mapped[float] = mapped_column(Float)
    layer_distances: Mapped[dict[str, Any]]
    train_loss: Mapped[float | None] = mapped_column(Float)
    train_accuracy: Mapped[float | None] = mapped_column(Float)
    test_loss: Mapped[float | None] = mapped_column(Float)
    test_accuracy: Mapped[float | None] = mapped_column(Float)
    weights_uri: Mapped[str | None] = mapped_column(Text)
    is_destination: Mapped[bool] = mapped_column(default=False)


class ContinuitySegment(Base):
    """Training loss along the straight line between path positions `position` and `+1`."""

    __tablename__ = "continuity_segments"
    __table_args__ = (UniqueConstraint("pair_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    max_loss: Mapped[float] = mapped_column(Float)
    alphas: Mapped[list[Any]]
    losses: Mapped[list[Any]]


class PairResult(Base):
    """The summary of one pair, as `llpf results` prints it."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id", ondelete="CASCADE"), unique=True)
    linear_barrier: Mapped[float | None] = mapped_column(Float)
    linear_losses: Mapped[list[Any] | None] = mapped_column(JSON)
    path_max_train_loss: Mapped[float | None] = mapped_column(Float)
    continuity_max_loss: Mapped[float | None] = mapped_column(Float)
    initial_distance: Mapped[float | None] = mapped_column(Float)
    final_distance: Mapped[float | None] = mapped_column(Float)
    last_iterate_distance: Mapped[float | None] = mapped_column(Float)
    m2o_iterations: Mapped[int | None] = mapped_column(Integer)
    m2m_iterations: Mapped[int | None] = mapped_column(Integer)
    path_points: Mapped[int | None] = mapped_column(Integer)
    wall_seconds: Mapped[float | None] = mapped_column(Float)
