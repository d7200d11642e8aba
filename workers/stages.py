"""Ray tasks around the core stages of one mode pair.

Each task is a plain function over a picklable request, returning a small picklable result:
weights go to the artifact store and only their URIs travel through Ray. Workers never touch the
database; the driver records what they return. Long stages checkpoint into the artifact store and,
when Ray retries them after a crash, resume from the newest checkpoint whose hash verifies.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from llpf_core.artifacts import ArtifactStore, CorruptArtifactError
from llpf_core.continuity import check_continuity, line_profile, subset
from llpf_core.geometry import layer_distances, total_distance
from llpf_core.m2m import find_m2m_path
from llpf_core.m2o import find_m2o_path, plan_spheres
from llpf_core.models import build_model
from llpf_core.path import StageOutcome
from llpf_core.recipes import train_mode
from llpf_core.settings import (
    ContinuitySettings,
    EvaluationSettings,
    LinearSettings,
    M2MSettings,
    M2OSettings,
    PhaseSpec,
    Recipe,
)
from workers.progress import ProgressReporter
from workers.runtime import Placement, choose_device, dataset_on, seed_everything, set_threads

logger = logging.getLogger(__name__)

Result = TypeVar("Result")


@dataclass(frozen=True)
class PairContext:
    """What every stage of one pair needs to know."""

    experiment_id: int
    pair_index: int
    arch: str
    dataset: str
    data_dir: str | None
    download: bool
    num_classes: int
    artifact_root: str
    placement: Placement
    evaluation: EvaluationSettings
    progress_board: Any | None = None
    fault_injection: dict[str, Any] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return f"experiment-{self.experiment_id}/pair-{self.pair_index}"

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.artifact_root)

    def reporter(self, stage: str) -> ProgressReporter:
        return ProgressReporter(self.progress_board, self.experiment_id, self.pair_index, stage)


def worker_boundary(function: Callable[..., Result]) -> Callable[..., Result]:
    """Log a failing stage with its traceback in the worker's log, then let Ray carry it."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Result:
        try:
            return function(*args, **kwargs)
        except Exception:
            logger.exception("stage %s failed", function.__name__)
            raise

    return wrapper


def _prepare(context: PairContext, seed: int) -> tuple[torch.device, Any]:
    set_threads(context.placement)
    seed_everything(seed)
    device = choose_device(context.placement)
    data = dataset_on(context.dataset, context.data_dir, context.download, device)
    return device, data


def _model(context: PairContext, device: torch.device) -> torch.nn.Module:
    return build_model(context.arch, num_classes=context.num_classes).to(device)


@dataclass(frozen=True)
class ModeResult:
    """A trained mode: where its weights are and what they achieve (recorded in `modes`)."""

    role: str
    seed: int
    recipe: dict[str, Any]
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    layer_variance: dict[str, float]
    layer_mean: dict[str, float]
    weights_uri: str
    weights_sha256: str
    steps: int
    wall_seconds: float
    device: str


@worker_boundary
def train_mode_stage(context: PairContext, role: str, seed: int, recipe: Recipe) -> ModeResult:
    """Train mode `role` ("a" or "b") from seed `seed` with `recipe`; store its weights."""
    device, data = _prepare(context, seed)
    model = _model(context, device)
    reporter = context.reporter(f"train_{role}")
    report = train_mode(
        model,
        data,
        recipe,
        seed,
        progress=reporter,
        norm_recalibration_batches=context.evaluation.norm_recalibration_batches,
    )
    uri, digest = context.store().save_weights(
        f"{context.prefix}/mode-{role}.safetensors", model.state_dict()
    )
    return ModeResult(
        role=role,
        seed=seed,
        recipe=recipe.model_dump(),
        train_loss=report.train.loss,
        train_accuracy=report.train.accuracy,
        test_loss=report.test.loss,
        test_accuracy=report.test.accuracy,
        layer_variance=report.layer_variance,
        layer_mean=report.layer_mean,
        weights_uri=uri,
        weights_sha256=digest,
        steps=report.steps,
        wall_seconds=report.wall_seconds,
        device=str(device),
    )


@dataclass(frozen=True)
class PathStageResult:
    """A path-finding stage's outcome: stored points (as dicts) and where it ended."""

    stage: str
    start_role: str
    points: list[dict[str, Any]]
    iterations: int
    total_rounds: int
    wall_seconds: float
    skipped_reason: str | None
    info: dict[str, Any]
    end_uri: str
    resumed_from: int | None
    device: str


class CheckpointingSink:
    """The core's PathSink for a Ray worker: weights and checkpoints to the artifact store."""

    keep_checkpoints = 2

    def __init__(self, context: PairContext, stage: str) -> None:
        self.context = context
        self.stage = stage
        self.store = context.store()
        self.directory = f"{context.prefix}/{stage}"
        self.reporter = context.reporter(stage)
        self.fail_at = context.fault_injection.get(f"{stage}_kill_at_iteration")

    def store_weights(self, stage: str, iteration: int, state: dict[str, torch.Tensor]) -> str:
        uri, _ = self.store.save_weights(
            f"{self.directory}/point-{iteration:07d}.safetensors", state
        )
        return uri

    def checkpoint(self, stage: str, iteration: int, state: dict[str, Any]) -> None:
        self.store.save_object(f"{self.directory}/checkpoints/ckpt-{iteration:07d}.pt", state)
        for old in self.checkpoints()[: -self.keep_checkpoints]:
            self.store.delete(old)
        self._maybe_die(iteration)

    def progress(
        self, stage: str, iteration: int, total: int, loss: float, distance: float
    ) -> None:
        self.reporter(iteration, total, loss, distance)

    def checkpoints(self) -> list[str]:
        return self.store.list(f"{self.directory}/checkpoints")

    def latest_valid_checkpoint(self) -> dict[str, Any] | None:
        """The newest checkpoint whose content hash verifies; damaged ones are skipped."""
        for key in reversed(self.checkpoints()):
            try:
                state = self.store.load_object(key)
            except (CorruptArtifactError, FileNotFoundError) as error:
                logger.warning("ignoring checkpoint %s: %s", key, error)
                continue
            logger.info("resuming %s from %s", self.stage, key)
            return state
        return None

    def clear_checkpoints(self) -> None:
        for key in self.checkpoints():
            self.store.delete(key)

    def _maybe_die(self, iteration: int) -> None:
        """Fault injection for tests: kill this worker process once, at a checkpoint."""
        if self.fail_at is None or iteration < self.fail_at:
            return
        marker = f"{self.directory}/killed-once"
        if self.store.exists(marker):
            return
        self.store.write_bytes(marker, b"1")
        import os
        import signal

        logger.warning("fault injection: killing worker at %s iteration %d", self.stage, iteration)
        os.kill(os.getpid(), signal.SIGKILL)


def _path_result(
    outcome: StageOutcome,
    start_role: str,
    resumed_from: int | None,
    device: torch.device,
) -> PathStageResult:
    end = outcome.points[-1]
    return PathStageResult(
        stage=outcome.stage,
        start_role=start_role,
        points=[p.to_dict() for p in outcome.points],
        iterations=outcome.iterations,
        total_rounds=outcome.total_rounds,
        wall_seconds=outcome.wall_seconds,
        skipped_reason=outcome.skipped_reason,
        info=outcome.info,
        end_uri=end.weights_uri or "",
        resumed_from=resumed_from,
        device=str(device),
    )


@worker_boundary
def m2o_stage(
    context: PairContext, mode_a_uri: str, mode_b_uri: str, settings: M2OSettings, seed: int
) -> PathStageResult:
    """Algorithm 2 from the mode on the larger sphere to the other's sphere, or a skip."""
    device, data = _prepare(context, seed)
    model = _model(context, device)
    store = context.store()
    mode_a, mode_b = store.load_weights(mode_a_uri), store.load_weights(mode_b_uri)
    plan = plan_spheres(model, mode_a, mode_b, settings)
    logger.info("pair %d: %s", context.pair_index, plan.reason)
    if not plan.needed:
        return PathStageResult(
            stage="m2o",
            start_role=plan.start,
            points=[],
            iterations=0,
            total_rounds=0,
            wall_seconds=0.0,
            skipped_reason=plan.reason,
            info={"relative_gap": plan.relative_gap},
            end_uri=mode_a_uri,
            resumed_from=None,
            device=str(device),
        )

    start, other = (mode_a, mode_b) if plan.start == "a" else (mode_b, mode_a)
    sink = CheckpointingSink(context, "m2o")
    resume = sink.latest_valid_checkpoint()
    outcome = find_m2o_path(
        model, start, other, data, settings, sink, seed, context.evaluation, resume=resume
    )
    outcome.info.update(relative_gap=plan.relative_gap, reason=plan.reason)
    sink.clear_checkpoints()
    resumed = int(resume["iteration"]) if resume else None
    return _path_result(outcome, plan.start, resumed, device)


@worker_boundary
def m2m_stage(
    context: PairContext,
    start_uri: str,
    destination_uri: str,
    start_role: str,
    settings: M2MSettings,
    phases: list[PhaseSpec],
    seed: int,
) -> PathStageResult:
    """Algorithm 1 from `start_uri` (a mode, or where M2O ended) to the other mode."""
    device, data = _prepare(context, seed)
    model = _model(context, device)
    store = context.store()
    start, destination = store.load_weights(start_uri), store.load_weights(destination_uri)
    if context.pair_index in context.fault_injection.get("nan_pairs", []):
        start = {
            k: v.float().fill_(float("nan")) if v.is_floating_point() else v
            for k, v in start.items()
        }  # fault injection for tests: a diverged start
    sink = CheckpointingSink(context, "m2m")
    resume = sink.latest_valid_checkpoint()
    outcome = find_m2m_path(
        model,
        start,
        destination,
        data,
        settings,
        phases,
        sink,
        seed,
        context.evaluation,
        resume=resume,
    )
    sink.clear_checkpoints()
    resumed = int(resume["iteration"]) if resume else None
    return _path_result(outcome, start_role, resumed, device)


@dataclass(frozen=True)
class ContinuityResult:
    """Loss along each segment between consecutive path points, oriented A to B."""

    segments: list[dict[str, Any]]
    first_distance: float
    final_distance: float
    wall_seconds: float


@worker_boundary
def continuity_stage(
    context: PairContext,
    point_uris: list[str],
    mode_a_uri: str,
    mode_b_uri: str,
    settings: ContinuitySettings,
    seed: int,
) -> ContinuityResult:
    """The section-5 continuity check over the whole path, and the distances of its ends."""
    started = time.perf_counter()
    device, data = _prepare(context, seed)
    model = _model(context, device)
    store = context.store()
    reporter = context.reporter("continuity")
    segments = check_continuity(
        model,
        lambda k: store.load_weights(point_uris[k]),
        len(point_uris),
        data,
        settings.samples_per_segment,
        settings.train_subset,
        context.evaluation,
        progress=lambda done, total, loss: reporter(done, total, loss),
    )
    names = [name for name, _ in model.named_parameters()]
    first, last = store.load_weights(point_uris[0]), store.load_weights(point_uris[-1])
    mode_a, mode_b = store.load_weights(mode_a_uri), store.load_weights(mode_b_uri)
    return ContinuityResult(
        segments=[
            {
                "position": s.position,
                "alphas": s.profile.alphas,
                "losses": s.profile.losses,
                "max_loss": s.profile.max_loss,
            }
            for s in segments
        ],
        first_distance=float(total_distance(layer_distances(first, mode_a, names))),
        final_distance=float(total_distance(layer_distances(last, mode_b, names))),
        wall_seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class LinearResult:
    """The straight line A-B: losses along it and the distance between the modes."""

    alphas: list[float]
    losses: list[float]
    max_loss: float
    barrier: float
    distance: float
    wall_seconds: float


@worker_boundary
def linear_stage(
    context: PairContext, mode_a_uri: str, mode_b_uri: str, settings: LinearSettings, seed: int
) -> LinearResult:
    """Full-training-set loss along the linear interpolation between the two modes."""
    started = time.perf_counter()
    device, data = _prepare(context, seed)
    model = _model(context, device)
    store = context.store()
    mode_a, mode_b = store.load_weights(mode_a_uri), store.load_weights(mode_b_uri)
    mode_a = {k: v.to(device) for k, v in mode_a.items()}
    mode_b = {k: v.to(device) for k, v in mode_b.items()}
    images, labels = subset(data, None)
    profile = line_profile(
        model, mode_a, mode_b, data, settings.samples, images, labels, context.evaluation
    )
    names = [name for name, _ in model.named_parameters()]
    return LinearResult(
        alphas=profile.alphas,
        losses=profile.losses,
        max_loss=profile.max_loss,
        barrier=profile.barrier,
        distance=float(total_distance(layer_distances(mode_a, mode_b, names))),
        wall_seconds=time.perf_counter() - started,
    )
