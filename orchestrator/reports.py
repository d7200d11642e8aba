"""Read-only views for the CLI: status, results, models and phases, as table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from orchestrator.store.db import Store
from orchestrator.store.schema import Experiment, Pair, PairResult, Stage

RESULT_KEYS = (
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
    "last_iterate_distance",
    "m2o_iterations",
    "m2m_iterations",
    "path_points",
    "wall_seconds",
)


def _store(db_url: str) -> Store:
    store = Store(db_url)
    if not store.has_schema():
        raise ValueError(
            f"database {db_url!r} has no llpf tables yet; run `llpf submit` or "
            "`llpf db upgrade` first"
        )
    return store


def emit(
    rows: list[dict[str, Any]], columns: list[str], fmt: str, console: Console, title: str = ""
) -> None:
    """Print rows as a rich table, a JSON array, or CSV with a header."""
    if fmt == "json":
        console.print_json(json.dumps(rows, default=str)) if rows else console.print("[]")
        return
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        console.out(buffer.getvalue().rstrip("\n"))
        return
    table = Table(title=title or None)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    if console.is_terminal:
        console.print(table)
    else:  # piped output has no width to fit: keep every column readable
        Console(file=console.file, width=max(console.width, 200)).print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def result_rows(db_url: str, experiment_id: int | None) -> list[dict[str, Any]]:
    store = _store(db_url)
    with store.session() as session:
        query = select(Pair, PairResult).outerjoin(PairResult, PairResult.pair_id == Pair.id)
        if experiment_id is not None:
            _require(session, experiment_id, db_url)
            query = query.where(Pair.experiment_id == experiment_id)
        rows = []
        for pair, result in session.execute(query.order_by(Pair.experiment_id, Pair.index)):
            row = {
                "experiment": pair.experiment_id,
                "pair": pair.index,
                "status": pair.status,
                "seed_a": pair.seed_a,
                "seed_b": pair.seed_b,
            }
            for key in RESULT_KEYS[5:]:
                row[key] = getattr(result, key) if result is not None else None
            if pair.error:
                row["error"] = pair.error
            rows.append(row)
        return rows


def _require(session: Any, experiment_id: int, db_url: str) -> Experiment:
    experiment = session.get(Experiment, experiment_id)
    if experiment is None:
        raise ValueError(f"no experiment {experiment_id} in {db_url}")
    return experiment


def show_results(db_url: str, experiment_id: int | None, fmt: str, console: Console) -> None:
    emit(result_rows(db_url, experiment_id), list(RESULT_KEYS), fmt, console, "results")


def show_status(db_url: str, experiment_id: int | None, fmt: str, console: Console) -> None:
    store = _store(db_url)
    with store.session() as session:
        if experiment_id is None:
            experiments = session.scalars(select(Experiment).order_by(Experiment.id)).all()
            rows = [_experiment_row(session, e) for e in experiments]
            columns = [
                "experiment",
                "name",
                "status",
                "arch",
                "dataset",
                "pairs",
                "succeeded",
                "failed",
                "running",
                "created",
                "job",
            ]
            emit(rows, columns, fmt, console, "experiments")
            return
        experiment = _require(session, experiment_id, db_url)
        rows = []
        for pair in experiment.pairs:
            row: dict[str, Any] = {"pair": pair.index, "status": pair.status}
            for stage in session.scalars(select(Stage).where(Stage.pair_id == pair.id)):
                progress = (stage.info or {}).get("progress") if stage.state == "running" else None
                row[stage.kind] = (
                    stage.state
                    + (f" {progress['iteration']}/{progress['total']}" if progress else "")
                    + (f" x{stage.attempts}" if stage.attempts > 1 else "")
                )
            if pair.error:
                row["error"] = pair.error
            rows.append(row)
        columns = ["pair", "status", "train_a", "train_b", "linear", "m2o", "m2m", "continuity"]
        emit(
            rows,
            columns + (["error"] if fmt != "table" else []),
            fmt,
            console,
            f"experiment {experiment.id} ({experiment.status})",
        )


def _experiment_row(session: Any, experiment: Experiment) -> dict[str, Any]:
    statuses = [p.status for p in experiment.pairs]
    return {
        "experiment": experiment.id,
        "name": experiment.name,
        "status": experiment.status,
        "arch": experiment.config.get("arch"),
        "dataset": experiment.config.get("dataset"),
        "pairs": len(statuses),
        "succeeded": statuses.count("succeeded"),
        "failed": statuses.count("failed"),
        "running": statuses.count("running"),
        "created": experiment.created_at.strftime("%Y-%m-%d %H:%M"),
        "job": experiment.ray_job_id,
    }


def show_errors(db_url: str, experiment_id: int, console: Console) -> None:
    store = _store(db_url)
    with store.session() as session:
        experiment = _require(session, experiment_id, db_url)
        rows = []
        for pair in experiment.pairs:
            for stage in session.scalars(select(Stage).where(Stage.pair_id == pair.id)):
                if stage.error:
                    rows.append(
                        {
                            "pair": pair.index,
                            "stage": stage.kind,
                            "state": stage.state,
                            "attempts": stage.attempts,
                            "message": stage.error,
                        }
                    )
    if not rows:
        console.print(
            f"experiment {experiment_id} has no Ray job and no recorded stage errors; "
            "worker logs of a local run are in Ray's session directory "
            "(/tmp/ray/session_latest/logs)"
        )
        return
    emit(rows, ["pair", "stage", "state", "attempts", "message"], "table", console, "messages")


def show_models(fmt: str, console: Console) -> None:
    from llpf_core.data import dataset_spec
    from llpf_core.models import architecture_names, build_model, get_arch, parameter_count
    from llpf_core.recipes import RECIPES

    rows = []
    for name in architecture_names():
        spec = get_arch(name)
        dataset = spec.datasets[0]
        model = build_model(name, num_classes=dataset_spec(dataset).num_classes)
        recipe = RECIPES[spec.recipe_for(dataset)]
        rows.append(
            {
                "name": name,
                "params": parameter_count(model),
                "datasets": list(spec.datasets),
                "recipe": recipe.name,
                "preset": spec.preset_for(dataset) or "fdf",
                "description": spec.description,
            }
        )
    if fmt == "table":
        for row in rows:
            row["datasets"] = ", ".join(row["datasets"])
            row["params"] = f"{row['params']:,}"
    emit(
        rows,
        ["name", "params", "datasets", "recipe", "preset", "description"],
        fmt,
        console,
        "architectures",
    )


def show_phases(
    arch: str | None,
    preset_name: str | None,
    dataset: str | None,
    fmt: str,
    console: Console,
    config_path: Any = None,
) -> None:
    """The resolved M2M phases of an architecture, or of an experiment configuration file."""
    from llpf_core.models import build_model
    from llpf_core.phases import phase_layers
    from llpf_core.settings import Recipe
    from orchestrator.config import load_config, resolve

    fields: dict[str, Any] = {"arch": arch, "preset": preset_name, "dataset": dataset}
    loaded = load_config(config_path, fields)
    if ":" in loaded.arch and loaded.recipe_a is None:  # phases do not depend on a recipe
        loaded = loaded.model_copy(update={"recipe_a": Recipe()})
    config = resolve(loaded.model_copy(update={"data_dir": loaded.data_dir or "."}))
    arch = config.arch
    model = build_model(arch, num_classes=config.num_classes)
    rows = []
    for index, phase in enumerate(config.phases, start=1):
        names = phase_layers(model, phase)
        rows.append(
            {
                "phase": index,
                "name": phase.name,
                "groups": list(phase.layers),
                "exclude": list(phase.exclude),
                "parameters": names,
                "parameter_count": len(names),
                "iterations": phase.iterations,
                "step_f": phase.step_f,
                "step_a": phase.step_a,
                "step_c": phase.step_c,
            }
        )
    if fmt == "json":
        emit([{"arch": arch, "preset": config.preset, "phases": rows}], [], fmt, console)
        return
    if fmt == "table":
        for row in rows:
            row["groups"] = ", ".join(row["groups"]) + (
                f" (except {', '.join(row['exclude'])})" if row["exclude"] else ""
            )
            row["parameters"] = f"{row['parameter_count']} tensors"
    emit(
        rows,
        ["phase", "name", "groups", "parameters", "iterations", "step_f", "step_a", "step_c"],
        fmt,
        console,
        f"{arch}: preset {config.preset}",
    )
