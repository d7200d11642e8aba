"""Progress while an experiment runs: rich bars on a terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

import ray
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

logger = logging.getLogger(__name__)

PLAIN_INTERVAL_S = 10.0


class ProgressDisplay:
    """Polls the workers' progress board and shows one bar per running stage and per experiment."""

    def __init__(self, board: Any, total_pairs: int, console: Console | None = None) -> None:
        self.board = board
        self.console = console or _logging_console()
        self.interactive = self.console.is_terminal and sys.stderr.isatty()
        self.total_pairs = total_pairs
        self.progress: Progress | None = None
        self.bars: dict[str, Any] = {}
        self.last_plain = 0.0
        self.overall = None

    def __enter__(self) -> ProgressDisplay:
        if self.interactive:
            self.progress = Progress(
                TextColumn("{task.description:<24}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.overall = self.progress.add_task("pairs", total=self.total_pairs, loss="", rate="")
        return self

    def __exit__(self, *_: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, runner: Any) -> None:
        """Refresh from the board; called by the runner after each poll."""
        try:
            snapshot = ray.get(self.board.snapshot.remote(), timeout=2)
        except Exception:  # the display must never stop the experiment
            return
        done = len(runner.done_pairs)
        if self.progress is not None:
            self._update_bars(snapshot, done)
        elif time.time() - self.last_plain >= PLAIN_INTERVAL_S:
            self.last_plain = time.time()
            self._log_plain(snapshot, done)

    def _update_bars(self, snapshot: dict[str, dict[str, Any]], done: int) -> None:
        assert self.progress is not None
        self.progress.update(self.overall, completed=done)
        for key in list(self.bars):
            if key not in snapshot:
                self.progress.remove_task(self.bars.pop(key))
        for key, state in sorted(snapshot.items()):
            fields = {"loss": _fmt(state["loss"]), "rate": _rate(state)}
            if key not in self.bars:
                self.bars[key] = self.progress.add_task(key, total=state["total"], **fields)
            self.progress.update(
                self.bars[key], completed=state["iteration"], total=state["total"], **fields
            )

    def _log_plain(self, snapshot: dict[str, dict[str, Any]], done: int) -> None:
        logger.info("pairs finished: %d/%d", done, self.total_pairs)
        for key, state in sorted(snapshot.items()):
            logger.info(
                "  %s: %d/%d  loss %s  %s",
                key,
                state["iteration"],
                state["total"],
                _fmt(state["loss"]),
                _rate(state),
            )


def _logging_console() -> Console:
    """The console the CLI's log handler writes to, so that log lines print above the bars."""
    from rich.logging import RichHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, RichHandler):
            return handler.console
    return Console(stderr=True)


def _fmt(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _rate(state: dict[str, Any]) -> str:
    elapsed = max(state["updated"] - state["started"], 1e-9)
    return f"{state['iteration'] / elapsed:.1f} it/s"
