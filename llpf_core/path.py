"""Path points and the bookkeeping shared by M2M and M2O: storing, evaluating, checkpointing.

The algorithms (`llpf_core.m2m`, `llpf_core.m2o`) hand each iterate to a `PathRecorder`, which
decides which iterates become stored path points, evaluates some of them on the whole dataset
splits, and passes weights and checkpoints to a `PathSink` supplied by the caller. The core never
writes files itself: a Ray worker's sink puts weights into the artifact store.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from llpf_core.data.registry import ImageData
from llpf_core.evaluation import evaluate, recalibrate_norm_statistics
from llpf_core.geometry import layer_distances, total_distance
from llpf_core.settings import EvaluationSettings

logger = logging.getLogger(__name__)


@dataclass
class PathPoint:
    """One stored point of a path, as recorded in the database.

    `iteration` counts the stage's iterations (0 is the stage's start point); `rounds` is the
    number of training batches (the paper's r) of the iteration that produced it. Distances are
    L2, to the stage's destination, per layer and over all layers. Metrics are on the whole
    training and test splits, without augmentation, or None where the point was not evaluated.
    """

    stage: str
    iteration: int
    phase: int
    phase_name: str
    rounds: int
    rolling_loss: float | None
    layer_distances: dict[str, float]
    total_distance: float
    train_loss: float | None = None
    train_accuracy: float | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    weights_uri: str | None = None
    is_destination: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StageOutcome:
    """What a path-finding stage returns: its stored points (in order) and a summary."""

    stage: str
    points: list[PathPoint]
    iterations: int
    total_rounds: int
    wall_seconds: float
    skipped_reason: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


class StageClock:
    """Wall seconds per activity of a stage ("train", "record", ...), for speed reports.

    No device synchronisation is forced, so on a GPU the split between activities is only
    approximate (asynchronous kernels are charged to whichever activity waits for them).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, activity: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.seconds[activity] = self.seconds.get(activity, 0.0) + elapsed


class PathSink(Protocol):
    """Where a stage's outputs go. Implemented by the caller (e.g. a Ray worker)."""

    def store_weights(self, stage: str, iteration: int, state: dict[str, Tensor]) -> str:
        """Persist a path point's full state dict; return where it went."""

    def checkpoint(self, stage: str, iteration: int, state: dict[str, Any]) -> None:
        """Persist the resumable state of the stage."""

    def progress(
        self, stage: str, iteration: int, total: int, loss: float, distance: float
    ) -> None:
        """Report progress (for bars, logs, metrics)."""


class NullSink:
    """A sink that keeps nothing: for tests and for callers that only want the metrics."""

    def store_weights(self, stage: str, iteration: int, state: dict[str, Tensor]) -> str:
        return ""

    def checkpoint(self, stage: str, iteration: int, state: dict[str, Any]) -> None:
        pass

    def progress(
        self, stage: str, iteration: int, total: int, loss: float, distance: float
    ) -> None:
        pass


@contextlib.contextmanager
def preserved_buffers(model: nn.Module) -> Iterator[None]:
    """Restore the model's buffers (BatchNorm statistics) and training mode on exit.

    Evaluation re-estimates normalisation statistics; the search itself must not see that, so
    that the path does not depend on how often it is evaluated.
    """
    saved = {name: b.detach().clone() for name, b in model.named_buffers()}
    training = model.training
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(saved[name])
        model.train(training)


class PathRecorder:
    """Turns iterates into stored, evaluated path points, and checkpoints the stage."""

    def __init__(
        self,
        stage: str,
        model: nn.Module,
        data: ImageData,
        destination: dict[str, Tensor],
        sink: PathSink,
        store_interval: int,
        eval_interval: int,
        evaluation: EvaluationSettings,
        total_iterations: int,
    ) -> None:
        self.stage = stage
        self.model = model
        self.data = data
        self.destination = destination
        self.sink = sink
        self.store_interval = store_interval
        self.eval_interval = eval_interval
        self.evaluation = evaluation
        self.total_iterations = total_iterations
        self.points: list[PathPoint] = []
        self.stored_count = 0
        self.started = time.perf_counter()
        self.started_iteration = 0

    def distances(self) -> tuple[dict[str, float], float]:
        params = dict(self.model.named_parameters())
        per_layer = layer_distances(params, self.destination, self.destination.keys())
        total = total_distance(per_layer)
        values = torch.stack([*per_layer.values(), total]).tolist()  # one host sync
        return dict(zip(per_layer, values[:-1], strict=False)), values[-1]

    def evaluate_point(self, point: PathPoint) -> None:
        """Fill in whole-split metrics of the model's current weights."""
        with preserved_buffers(self.model):
            recalibrate_norm_statistics(
                self.model, self.data, self.evaluation.norm_recalibration_batches
            )
            train = evaluate(
                self.model,
                self.data,
                self.data.train_x,
                self.data.train_y,
                self.evaluation.batch_size,
            )
            test = evaluate(
                self.model,
                self.data,
                self.data.test_x,
                self.data.test_y,
                self.evaluation.batch_size,
            )
        point.train_loss, point.train_accuracy = train.loss, train.accuracy
        point.test_loss, point.test_accuracy = test.loss, test.accuracy

    def record(
        self,
        iteration: int,
        phase: int,
        phase_name: str,
        rounds: int,
        rolling_loss: float | None,
        force: bool = False,
    ) -> PathPoint | None:
        """Record the model's current weights as iterate `iteration`, if it is due for storage.

        Iterate 0 (the start), every `store_interval`-th iterate and forced ones (a phase's last)
        are stored; every `eval_interval`-th stored point, and forced ones, are evaluated.
        """
        if not force and iteration % self.store_interval != 0:
            return None
        per_layer, total = self.distances()
        point = PathPoint(
            stage=self.stage,
            iteration=iteration,
            phase=phase,
            phase_name=phase_name,
            rounds=rounds,
            rolling_loss=rolling_loss,
            layer_distances=per_layer,
            total_distance=total,
        )
        if force or self.stored_count % self.eval_interval == 0:
            self.evaluate_point(point)
        point.weights_uri = self.sink.store_weights(
            self.stage, iteration, {k: v.detach() for k, v in self.model.state_dict().items()}
        )
        self.points.append(point)
        self.stored_count += 1
        self.report(iteration, rolling_loss, total)
        return point

    def report(self, iteration: int, loss: float | None, distance: float) -> None:
        shown = math.nan if loss is None else loss
        self.sink.progress(self.stage, iteration, self.total_iterations, shown, distance)
        elapsed = time.perf_counter() - self.started
        done = max(iteration - self.started_iteration, 0)
        if done and iteration % max(self.total_iterations // 20, 1) == 0:
            rate = done / max(elapsed, 1e-9)
            eta = (self.total_iterations - iteration) / max(rate, 1e-9)
            logger.info(
                "%s iteration %d/%d  loss %.4f  distance %.4f  %.1f it/s  ETA %.0fs",
                self.stage,
                iteration,
                self.total_iterations,
                shown,
                distance,
                rate,
                eta,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"points": [p.to_dict() for p in self.points], "stored_count": self.stored_count}

    def load_state_dict(self, state: dict[str, Any], iteration: int) -> None:
        self.points = [PathPoint(**p) for p in state["points"]]
        self.stored_count = int(state["stored_count"])
        self.started_iteration = iteration
