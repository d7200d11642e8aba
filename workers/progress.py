"""Live progress of running stages: a small Ray actor the driver polls, plus Ray metrics.

Workers push throttled updates (iteration, loss, distance); the driver reads a snapshot to draw
its progress bars. The same numbers are exported as Ray metrics, so a cluster's dashboard (with
Prometheus/Grafana) shows every stage's iteration, training loss, rounds and distance.
"""

from __future__ import annotations

import time
from typing import Any

import ray
from ray.util import metrics


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Latest progress per stage key ("pair-3/m2m"); cheap to call, never blocks a worker."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[str, Any]] = {}

    def update(self, key: str, payload: dict[str, Any]) -> None:
        self.latest[key] = payload

    def clear(self, key: str) -> None:
        self.latest.pop(key, None)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return dict(self.latest)


_GAUGES: dict[str, metrics.Gauge] = {}


def _gauge(name: str, description: str) -> metrics.Gauge:
    if name not in _GAUGES:
        _GAUGES[name] = metrics.Gauge(
            name, description=description, tag_keys=("experiment", "pair", "stage")
        )
    return _GAUGES[name]


class ProgressReporter:
    """Sends a stage's progress to the board and to Ray metrics, at most every `interval_s`."""

    def __init__(
        self, board: Any | None, experiment: int, pair: int, stage: str, interval_s: float = 0.5
    ) -> None:
        self.board = board
        self.key = f"pair-{pair}/{stage}"
        self.tags = {"experiment": str(experiment), "pair": str(pair), "stage": stage}
        self.interval_s = interval_s
        self.last_sent = 0.0
        self.started = time.time()

    def __call__(
        self,
        iteration: int,
        total: int,
        loss: float,
        distance: float = float("nan"),
        rounds: int | None = None,
    ) -> None:
        now = time.time()
        if now - self.last_sent < self.interval_s and iteration < total:
            return
        self.last_sent = now
        payload = {
            "iteration": iteration,
            "total": total,
            "loss": loss,
            "distance": distance,
            "started": self.started,
            "updated": now,
        }
        if self.board is not None:
            self.board.update.remote(self.key, payload)
        if ray.is_initialized():
            _gauge("llpf_stage_iteration", "iteration of the running stage").set(
                iteration, self.tags
            )
            _gauge("llpf_stage_train_loss", "rolling training loss").set(loss, self.tags)
            _gauge("llpf_stage_distance", "L2 distance to the destination").set(distance, self.tags)
            if rounds is not None:
                _gauge("llpf_stage_rounds", "training rounds of the last iteration").set(
                    rounds, self.tags
                )
