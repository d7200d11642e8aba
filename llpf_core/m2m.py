"""LLPF_M2M (Algorithm 1): a low-loss path between two modes on nearby variance spheres.

Each iteration moves the applied layers of the current point P_i a step toward the destination D
(Move, line 5), projects them back onto their variance spheres (VarianceCorrection, line 6),
trains them for r batches (line 7) and projects them again (line 8), giving P_{i+1}. Phases apply
the algorithm to growing sets of layer groups (Table 2, "Applied layers").

Choices where the paper leaves room, all tested:
- A *layer* is one named parameter tensor; only the phase's applied layers move and train.
- The variance target is the start point's per-layer variance (the paper's "sphere of P_0"), or
  the destination's with `variance_target="destination"`.
- The path's last point is D itself (`is_destination=True`): iterates converge to D only up to
  training noise and the variance gap, and the continuity check then covers that last segment.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch import Tensor, nn

from llpf_core.data.batches import BatchStream
from llpf_core.data.registry import ImageData
from llpf_core.geometry import layer_distances, layer_variances, move, variance_correction
from llpf_core.path import PathRecorder, PathSink, StageClock, StageOutcome
from llpf_core.phases import phase_layers
from llpf_core.settings import EvaluationSettings, M2MSettings, PhaseSpec
from llpf_core.training import RollingLoss, sgd_for, train_rounds

logger = logging.getLogger(__name__)

STAGE = "m2m"


def find_m2m_path(
    model: nn.Module,
    start: dict[str, Tensor],
    destination: dict[str, Tensor],
    data: ImageData,
    settings: M2MSettings,
    phases: list[PhaseSpec],
    sink: PathSink,
    seed: int,
    evaluation: EvaluationSettings | None = None,
    resume: dict[str, Any] | None = None,
) -> StageOutcome:
    """Run Algorithm 1 from `start` (P_0) to `destination` (D), phase after phase.

    `start` and `destination` are full state dicts of `model`'s architecture; `data` is on the
    model's device. Returns the stored path points in order, the last being D itself. `resume` is
    a state previously passed to `sink.checkpoint`; the search then continues from it exactly.
    Raises NonFiniteLossError if training diverges.
    """
    begun = time.perf_counter()
    evaluation = evaluation or EvaluationSettings()
    device = data.device
    model.load_state_dict(start)
    params = dict(model.named_parameters())
    dest = {name: destination[name].detach().to(device) for name in params}
    p0 = {name: p.detach().clone() for name, p in params.items()}
    initial_distances = layer_distances(p0, dest, params)
    sphere = p0 if settings.variance_target == "start" else dest
    target_variances = layer_variances(sphere)

    phase_names = [phase_layers(model, phase) for phase in phases]
    total_iterations = sum(phase.iterations for phase in phases)
    recorder = PathRecorder(
        STAGE,
        model,
        data,
        dest,
        sink,
        settings.store_interval,
        settings.eval_interval,
        evaluation,
        total_iterations,
    )
    batches = BatchStream(data, settings.batch_size, seed=seed, augment=settings.augment)
    rolling = RollingLoss(settings.rolling_window)
    clock = StageClock()
    iteration, first_phase, first_step, total_rounds = 0, 0, 0, 0
    if resume is not None:
        iteration, first_phase, first_step, total_rounds = _restore(
            resume, model, batches, rolling, recorder
        )
    else:
        recorder.record(0, 0, phases[0].name, 0, None, force=True)

    for phase_index in range(first_phase, len(phases)):
        phase, names = phases[phase_index], phase_names[phase_index]
        _train_only(model, names)
        optimizer = sgd_for([params[name] for name in names], settings)
        if resume is not None and phase_index == first_phase and resume.get("optimizer"):
            optimizer.load_state_dict(resume["optimizer"])
        logger.info(
            "M2M phase %d/%d %r: %d layers, T=%d",
            phase_index + 1,
            len(phases),
            phase.name,
            len(names),
            phase.iterations,
        )

        step = first_step if phase_index == first_phase else 0
        while step < phase.iterations:
            move(params, dest, initial_distances, phase, names)
            variance_correction(params, target_variances, names)
            with clock("train"):
                rounds, loss = train_rounds(
                    model, optimizer, batches, rolling, settings, f"M2M iteration {iteration + 1}"
                )
            variance_correction(params, target_variances, names)
            iteration, step, total_rounds = iteration + 1, step + 1, total_rounds + rounds

            arrived = _arrived(params, dest, names, settings.arrival_tolerance)
            last = step == phase.iterations or arrived
            with clock("record"):
                recorder.record(iteration, phase_index, phase.name, rounds, loss, force=last)
            if iteration % settings.checkpoint_interval == 0 and not last:
                state = _state(model, optimizer, batches, rolling, recorder)
                state.update(
                    iteration=iteration, phase=phase_index, step=step, total_rounds=total_rounds
                )
                sink.checkpoint(STAGE, iteration, state)
            if arrived:
                logger.info(
                    "M2M phase %r: every applied layer within %.3g of D after %d iterations",
                    phase.name,
                    settings.arrival_tolerance,
                    step,
                )
                break

    _train_only(model, list(params))
    _append_destination(model, destination, recorder, iteration, len(phases) - 1, phases[-1].name)
    return StageOutcome(
        stage=STAGE,
        points=recorder.points,
        iterations=iteration,
        total_rounds=total_rounds,
        wall_seconds=time.perf_counter() - begun,
        info={"seconds": clock.seconds, "train_samples": total_rounds * batches.batch_size},
    )


def _train_only(model: nn.Module, names: list[str]) -> None:
    """Let only the applied layers receive gradients."""
    applied = set(names)
    for name, param in model.named_parameters():
        param.requires_grad_(name in applied)


def _arrived(
    params: dict[str, Tensor], dest: dict[str, Tensor], names: list[str], tolerance: float
) -> bool:
    if tolerance <= 0:
        return False
    distances = torch.stack(list(layer_distances(params, dest, names).values()))
    return bool((distances <= tolerance).all())


def _append_destination(
    model: nn.Module,
    destination: dict[str, Tensor],
    recorder: PathRecorder,
    iteration: int,
    phase: int,
    phase_name: str,
) -> None:
    """Make D itself the path's last point, so that the path truly ends at the other mode."""
    model.load_state_dict(destination)
    point = recorder.record(iteration + 1, phase, phase_name, 0, None, force=True)
    assert point is not None
    point.is_destination = True


def _state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: BatchStream,
    rolling: RollingLoss,
    recorder: PathRecorder,
) -> dict[str, Any]:
    return {
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "batches": batches.state_dict(),
        "rolling": rolling.state_dict(),
        "recorder": recorder.state_dict(),
    }


def _restore(
    state: dict[str, Any],
    model: nn.Module,
    batches: BatchStream,
    rolling: RollingLoss,
    recorder: PathRecorder,
) -> tuple[int, int, int, int]:
    model.load_state_dict(state["model"])
    batches.load_state_dict(state["batches"])
    rolling.load_state_dict(state["rolling"], batches.data.device)
    recorder.load_state_dict(state["recorder"], int(state["iteration"]))
    logger.info(
        "M2M resumes at iteration %d (phase %d, step %d)",
        state["iteration"],
        state["phase"] + 1,
        state["step"],
    )
    return (
        int(state["iteration"]),
        int(state["phase"]),
        int(state["step"]),
        int(state["total_rounds"]),
    )
