"""The driver: runs every pair's stages on Ray and records what they return.

The pipeline of one pair is train A and B, then the linear baseline and M2O, then M2M, then the
continuity check. The driver reads what remains to be done from the database, so the same code
runs a fresh experiment and resumes an interrupted one: stages that succeeded are skipped, and
stages left "running" by a dead driver are run again (their workers resume from checkpoints).
Pairs are independent: a failed stage fails its pair, never the others.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError, RayTaskError, TaskCancelledError
from sqlalchemy import select

from orchestrator import records
from orchestrator.config import ResolvedConfig, ResourceSettings
from orchestrator.store.db import Store, now
from orchestrator.store.schema import Experiment, Pair
from workers.runtime import Placement
from workers.stages import PairContext
from workers.tasks import TASKS

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.5
PROGRESS_INTERVAL_S = 10.0


@dataclass
class InFlight:
    """A running stage: which pair, which kind, and when it was launched."""

    pair_id: int
    pair_index: int
    kind: str
    launched: float = field(default_factory=time.time)


class ExperimentRunner:
    """Runs (or resumes) one experiment to the end: every pair succeeded, failed or cancelled."""

    def __init__(
        self,
        store: Store,
        experiment_id: int,
        board: Any | None = None,
        on_update: Callable[[ExperimentRunner], None] | None = None,
        resources: ResourceSettings | None = None,
    ) -> None:
        self.store = store
        self.experiment_id = experiment_id
        self.board = board
        self.on_update = on_update
        with store.session() as session:
            experiment = session.get(Experiment, experiment_id)
            if experiment is None:
                raise ValueError(f"no experiment {experiment_id} in {store.url}")
            self.config = ResolvedConfig.model_validate(experiment.config)
            # Resources may be adjusted to the cluster at hand (e.g. no GPU: run on the CPU).
            self.resources = resources or self.config.resources
            self.artifact_root = experiment.artifact_root
        self.in_flight: dict[ray.ObjectRef, InFlight] = {}
        self.active_pairs: set[int] = set()
        self.done_pairs: dict[int, str] = {}
        self.total_pairs = self.config.pairs
        self.progress_recorded = 0.0

    def run(self) -> str:
        """Run until every pair is finished; returns the experiment's final status."""
        self._start()
        pending = self._unfinished_pairs()
        limit = self._pairs_in_flight_limit()
        logger.info(
            "experiment %d: %d of %d pairs to run, up to %d at a time",
            self.experiment_id,
            len(pending),
            self.total_pairs,
            limit,
        )

        while pending or self.active_pairs:
            if self._cancel_requested():
                return self._cancel()
            while pending and len(self.active_pairs) < limit:
                self._advance(pending.pop(0))
            self._wait_and_record()
            self._record_progress()
            if self.on_update is not None:
                self.on_update(self)
        return self._finish()

    def _record_progress(self) -> None:
        """Copy running stages' progress into their rows, so `llpf status` shows it anywhere."""
        if self.board is None or time.time() - self.progress_recorded < PROGRESS_INTERVAL_S:
            return
        self.progress_recorded = time.time()
        try:
            snapshot = ray.get(self.board.snapshot.remote(), timeout=5)
        except (RayError, GetTimeoutError):
            return  # progress is a convenience; the stages' results are what matters
        with self.store.session() as session, session.begin():
            for flight in self.in_flight.values():
                state = snapshot.get(f"pair-{flight.pair_index}/{flight.kind}")
                if state is None:
                    continue
                row = records.stage(session, flight.pair_id, flight.kind)
                loss = state["loss"] if math.isfinite(state["loss"]) else None
                row.info = {
                    **(row.info or {}),
                    "progress": {
                        "iteration": state["iteration"],
                        "total": state["total"],
                        "loss": loss,
                    },
                }

    # -- scheduling ------------------------------------------------------------------------

    def _start(self) -> None:
        with self.store.session() as session, session.begin():
            experiment = session.get(Experiment, self.experiment_id)
            experiment.status = "running"
            experiment.started_at = experiment.started_at or now()
            stale = 0
            for pair in experiment.pairs:
                for row in records.stages_by_kind(session, pair.id).values():
                    if row.state in ("running", "cancelled"):  # left by a stopped driver
                        row.state, row.error = "pending", f"was {row.state}; run again"
                        stale += 1
                    elif row.state == "failed" and (row.info or {}).get("transient"):
                        row.state = "pending"
                        pair.status, pair.error = "pending", None
                        stale += 1
                if pair.status in ("succeeded", "failed"):
                    self.done_pairs[pair.id] = pair.status
            if stale:
                logger.warning(
                    "experiment %d: %d interrupted stages will run again",
                    self.experiment_id,
                    stale,
                )

    def _unfinished_pairs(self) -> list[int]:
        with self.store.session() as session:
            pairs = session.scalars(
                select(Pair).where(Pair.experiment_id == self.experiment_id).order_by(Pair.index)
            ).all()
            return [p.id for p in pairs if p.status not in ("succeeded", "failed")]

    def _pairs_in_flight_limit(self) -> int:
        configured = self.resources.max_pairs_in_flight
        if configured:
            return configured
        cpus = ray.cluster_resources().get("CPU", 1)
        return max(1, int(cpus // self.resources.num_cpus))

    def _context(self, pair: Pair) -> PairContext:
        resources = self.resources
        return PairContext(
            experiment_id=self.experiment_id,
            pair_index=pair.index,
            arch=self.config.arch,
            dataset=self.config.dataset,
            data_dir=self.config.data_dir,
            download=self.config.download,
            num_classes=self.config.num_classes,
            artifact_root=self.artifact_root,
            placement=Placement(resources.device, resources.num_cpus, resources.num_gpus),
            evaluation=self.config.evaluation,
            progress_board=self.board,
            fault_injection=self.config.fault_injection,
        )

    def _advance(self, pair_id: int) -> None:
        """Launch every stage of the pair whose inputs are ready; finish the pair if all done."""
        with self.store.session() as session, session.begin():
            pair = session.get(Pair, pair_id)
            states = {k: s.state for k, s in records.stages_by_kind(session, pair_id).items()}
            running = {f.kind for f in self.in_flight.values() if f.pair_id == pair_id}
            if "failed" in states.values():
                self._fail_pair(session, pair, states, running)
                return
            self.active_pairs.add(pair_id)
            for kind in self._ready(states):
                if kind not in running:
                    self._launch(session, pair, kind)
                    running.add(kind)
            if not running and all(s in ("succeeded", "skipped") for s in states.values()):
                self._complete_pair(session, pair)

    @staticmethod
    def _ready(states: dict[str, str]) -> list[str]:
        def done(kind: str) -> bool:
            return states[kind] in ("succeeded", "skipped")

        ready = [k for k in ("train_a", "train_b") if not done(k)]
        if done("train_a") and done("train_b"):
            ready += [k for k in ("linear", "m2o") if not done(k)]
        if done("m2o") and not done("m2m"):
            ready.append("m2m")
        if done("m2m") and not done("continuity"):
            ready.append("continuity")
        return ready

    def _launch(self, session: Any, pair: Pair, kind: str) -> None:
        context = self._context(pair)
        arguments = self._arguments(session, pair, kind, context)
        resources = self.resources
        options = {
            "name": f"{self.config.name}/exp-{self.experiment_id}/pair-{pair.index}/{kind}",
            "num_cpus": resources.num_cpus,
            "num_gpus": resources.num_gpus,
            "max_retries": resources.max_retries,
            "retry_exceptions": False,  # errors raised by llpf itself are not transient
        }
        reference = TASKS[kind].options(**options).remote(*arguments)
        self.in_flight[reference] = InFlight(pair.id, pair.index, kind)
        records.mark_running(session, pair, kind)
        logger.debug("launched %s", options["name"])

    def _arguments(self, session: Any, pair: Pair, kind: str, context: PairContext) -> tuple:
        config = self.config
        if kind in ("train_a", "train_b"):
            role = kind[-1]
            recipe = config.recipe_a if role == "a" else config.recipe_b
            return context, role, pair.seed_a if role == "a" else pair.seed_b, recipe
        modes = records.modes(session, pair.id)
        mode_a, mode_b = modes["a"].weights_uri, modes["b"].weights_uri
        seed = pair.seed_a * 1_000_003 + pair.seed_b  # path-finding seed, distinct per pair
        if kind == "linear":
            return context, mode_a, mode_b, config.linear, seed
        if kind == "m2o":
            return context, mode_a, mode_b, config.m2o, seed
        if kind == "m2m":
            info = records.stage(session, pair.id, "m2o").info or {}
            start_role = info.get("start_role", "a")
            start_uri = info.get("end_uri") or (mode_a if start_role == "a" else mode_b)
            destination = mode_b if start_role == "a" else mode_a
            return (
                context,
                start_uri,
                destination,
                start_role,
                config.m2m,
                config.phases,
                seed + 1,
            )
        uris = [row.weights_uri for row in records.ordered_points(session, pair.id)]
        return context, uris, mode_a, mode_b, config.continuity, seed + 2

    # -- results ---------------------------------------------------------------------------

    def _wait_and_record(self) -> None:
        if not self.in_flight:
            return
        ready, _ = ray.wait(
            list(self.in_flight), num_returns=len(self.in_flight), timeout=POLL_INTERVAL_S
        )
        for reference in ready:
            flight = self.in_flight.pop(reference)
            try:
                result = ray.get(reference)
            except (RayError, GetTimeoutError) as error:
                self._record_failure(flight, error)
            else:
                self._record_success(flight, result)
            self._advance(flight.pair_id)

    def _record_failure(self, flight: InFlight, error: Exception) -> None:
        reason = _failure_reason(error)
        # An error raised by llpf's own code (wrapped in RayTaskError) is deterministic: bad
        # input, a diverged loss. Anything else (a raylet, node or worker lost beyond Ray's
        # retries) is the infrastructure's, and `llpf resume` runs the stage again.
        transient = not isinstance(error, RayTaskError | TaskCancelledError)
        logger.error(
            "pair %d stage %s failed%s: %s",
            flight.pair_index,
            flight.kind,
            " (transient; `llpf resume` retries it)" if transient else "",
            reason,
        )
        with self.store.session() as session, session.begin():
            records.mark_finished(
                session,
                flight.pair_id,
                flight.kind,
                "failed",
                error=reason,
                info={"transient": transient},
            )

    def _record_success(self, flight: InFlight, result: Any) -> None:
        with self.store.session() as session, session.begin():
            kind = "train" if flight.kind.startswith("train") else flight.kind
            recorder = getattr(self, f"_record_{kind}")
            recorder(session, flight.pair_id, result)
        if self.board is not None:
            self.board.clear.remote(f"pair-{flight.pair_index}/{flight.kind}")
        logger.info(
            "pair %d: %s done in %.1fs",
            flight.pair_index,
            flight.kind,
            time.time() - flight.launched,
        )

    def _record_train(self, session: Any, pair_id: int, result: Any) -> None:
        records.record_mode(session, pair_id, result)
        records.mark_finished(
            session,
            pair_id,
            f"train_{result.role}",
            "succeeded",
            result.wall_seconds,
            info={"device": result.device, "steps": result.steps},
        )

    def _record_linear(self, session: Any, pair_id: int, result: Any) -> None:
        records.record_result(
            session,
            pair_id,
            {
                "linear_barrier": result.max_loss,
                "linear_losses": result.losses,
                "initial_distance": result.distance,
            },
        )
        records.mark_finished(
            session,
            pair_id,
            "linear",
            "succeeded",
            result.wall_seconds,
            info={"alphas": result.alphas, "barrier_above_ends": result.barrier},
        )

    def _record_m2o(self, session: Any, pair_id: int, result: Any) -> None:
        records.record_path_points(session, pair_id, result.points)
        info = {
            "start_role": result.start_role,
            "end_uri": result.end_uri,
            "iterations": result.iterations,
            "total_rounds": result.total_rounds,
            "resumed_from": result.resumed_from,
            "device": result.device,
            **result.info,
        }
        if result.skipped_reason:
            info["end_uri"] = None
            records.mark_finished(
                session, pair_id, "m2o", "skipped", 0.0, error=result.skipped_reason, info=info
            )
        else:
            records.mark_finished(
                session, pair_id, "m2o", "succeeded", result.wall_seconds, info=info
            )

    def _record_m2m(self, session: Any, pair_id: int, result: Any) -> None:
        records.record_path_points(session, pair_id, result.points)
        session.flush()
        records.assign_positions(session, pair_id, result.start_role)
        records.mark_finished(
            session,
            pair_id,
            "m2m",
            "succeeded",
            result.wall_seconds,
            info={
                "start_role": result.start_role,
                "iterations": result.iterations,
                "total_rounds": result.total_rounds,
                "resumed_from": result.resumed_from,
                "device": result.device,
                **result.info,
            },
        )

    def _record_continuity(self, session: Any, pair_id: int, result: Any) -> None:
        records.record_segments(session, pair_id, result.segments)
        records.record_result(
            session,
            pair_id,
            {
                "continuity_max_loss": max((s["max_loss"] for s in result.segments), default=None),
                "final_distance": result.final_distance,
            },
        )
        records.mark_finished(
            session,
            pair_id,
            "continuity",
            "succeeded",
            result.wall_seconds,
            info={"first_distance": result.first_distance},
        )

    def _complete_pair(self, session: Any, pair: Pair) -> None:
        stages = records.stages_by_kind(session, pair.id)
        points = records.ordered_points(session, pair.id)
        evaluated = [p.train_loss for p in points if p.train_loss is not None]
        # The path ends at the other mode by construction; how close M2M's last iterate came
        # to it says whether the search itself arrived (section 5, criterion 2).
        iterates = [p for p in points if p.stage == "m2m" and not p.is_destination]
        last_iterate = max(iterates, key=lambda p: p.iteration, default=None)
        pair.finished_at = now()
        wall = (pair.finished_at - records.as_utc(pair.started_at)).total_seconds()
        records.record_result(
            session,
            pair.id,
            {
                "path_max_train_loss": max(evaluated) if evaluated else None,
                "m2o_iterations": (stages["m2o"].info or {}).get("iterations", 0),
                "m2m_iterations": (stages["m2m"].info or {}).get("iterations", 0),
                "path_points": len(points),
                "last_iterate_distance": last_iterate.total_distance if last_iterate else None,
                "wall_seconds": wall,
            },
        )
        pair.status = "succeeded"
        self.active_pairs.discard(pair.id)
        self.done_pairs[pair.id] = "succeeded"
        logger.info("pair %d succeeded in %.1fs", pair.index, wall)

    def _fail_pair(
        self, session: Any, pair: Pair, states: dict[str, str], running: set[str]
    ) -> None:
        if running:
            return  # let the pair's other stages finish and be recorded first
        failed = [k for k, s in states.items() if s == "failed"]
        errors = [records.stage(session, pair.id, k).error for k in failed]
        pair.status, pair.error, pair.finished_at = (
            "failed",
            "; ".join(f"{k}: {e}" for k, e in zip(failed, errors, strict=False)),
            now(),
        )
        self.active_pairs.discard(pair.id)
        self.done_pairs[pair.id] = "failed"

    # -- cancellation and the end ----------------------------------------------------------

    def _cancel_requested(self) -> bool:
        with self.store.session() as session:
            return session.get(Experiment, self.experiment_id).status == "cancelling"

    def _cancel(self) -> str:
        for reference in list(self.in_flight):
            ray.cancel(reference, force=True)
        with self.store.session() as session, session.begin():
            for flight in self.in_flight.values():
                records.mark_finished(
                    session, flight.pair_id, flight.kind, "cancelled", error="cancelled by user"
                )
            experiment = session.get(Experiment, self.experiment_id)
            experiment.status, experiment.finished_at = "cancelled", now()
        self.in_flight.clear()
        logger.warning("experiment %d cancelled", self.experiment_id)
        return "cancelled"

    def _finish(self) -> str:
        failed = sum(1 for status in self.done_pairs.values() if status == "failed")
        status = (
            "succeeded" if failed == 0 else ("failed" if failed == self.total_pairs else "partial")
        )
        with self.store.session() as session, session.begin():
            experiment = session.get(Experiment, self.experiment_id)
            experiment.status, experiment.finished_at = status, now()
        return status


def _failure_reason(error: Exception) -> str:
    """One line saying why a stage failed: the root exception's type and message."""
    if isinstance(error, TaskCancelledError):
        return "cancelled"
    cause = error.cause if isinstance(error, RayTaskError) and error.cause else error
    message = str(cause).strip().splitlines()
    text = message[-1] if isinstance(cause, RayError) and message else " ".join(message)
    return f"{type(cause).__name__}: {text}"[:2000]
