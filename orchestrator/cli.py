"""The `llpf` command line: submit experiments, watch them, read their results."""

from __future__ import annotations

import logging
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from llpf_core.data import DatasetError
from llpf_core.errors import LLPFError
from llpf_core.models import ArchitectureError
from orchestrator import reports
from orchestrator.config import ConfigError
from orchestrator.store.db import DEFAULT_DB_URL, StoreError

logger = logging.getLogger(__name__)

app = typer.Typer(
    help="Low-Loss Path Finding: connect independently trained modes, on Ray, recorded in SQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")

console = Console()
errors = Console(stderr=True)

DbOption = Annotated[
    str,
    typer.Option("--db", envvar="LLPF_DB_URL", help="SQLAlchemy URL of the results database."),
]
AddressOption = Annotated[
    str | None,
    typer.Option(
        "--address",
        envvar="RAY_ADDRESS",
        help="Ray dashboard address (http://HEAD:8265) to submit to as a Ray job; "
        "default: an embedded local Ray instance.",
    ),
]


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


def configure_logging(verbose: bool) -> None:
    """Only the CLI configures output: rich on a terminal, plain lines otherwise."""
    level = logging.DEBUG if verbose else logging.INFO
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=errors, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for package in ("llpf_core", "workers", "orchestrator"):
        logging.getLogger(package).setLevel(level)


def use_ray_token_if_present() -> None:
    """Authenticate to token-protected Ray clusters where a token is at hand.

    Ray clusters started with `ray start` use token authentication by default and keep the token
    in ~/.ray/auth_token (or RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH), but a client only sends it
    under RAY_AUTH_MODE=token, which Ray reads once, when it is first imported. Where the user
    has chosen no mode and a token exists, choose "token" before Ray is imported; once Ray is
    imported, changing the mode would only make its Python and C++ halves disagree.
    """
    if "ray" in sys.modules:
        return
    token_path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")).expanduser()
    has_token = bool(os.environ.get("RAY_AUTH_TOKEN")) or token_path.is_file()
    if "RAY_AUTH_MODE" not in os.environ and has_token:
        os.environ["RAY_AUTH_MODE"] = "token"


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug output.")] = False,
) -> None:
    configure_logging(verbose)
    use_ray_token_if_present()


@app.command()
def submit(
    config: Annotated[Path | None, typer.Option("--config", help="YAML or TOML file.")] = None,
    arch: Annotated[str | None, typer.Option(help="Architecture (see `llpf models`).")] = None,
    dataset: Annotated[str | None, typer.Option(help="digits, mnist, cifar10, cifar100.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Directory holding the dataset.")] = None,
    download: Annotated[bool | None, typer.Option(help="Download the dataset if missing.")] = None,
    pairs: Annotated[int | None, typer.Option(help="Number of mode pairs.")] = None,
    seed: Annotated[int | None, typer.Option(help="Base seed; pair i uses 2i and 2i+1.")] = None,
    recipe: Annotated[str | None, typer.Option(help="Recipe of mode A (name or file).")] = None,
    recipe_b: Annotated[str | None, typer.Option(help="Recipe of mode B (default: A's).")] = None,
    preset: Annotated[str | None, typer.Option(help="Path-finding preset.")] = None,
    name: Annotated[str | None, typer.Option(help="Experiment name.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    num_cpus: Annotated[float | None, typer.Option(help="CPUs per stage.")] = None,
    num_gpus: Annotated[
        float | None, typer.Option(help="GPUs per stage (fractions share).")
    ] = None,
    db: DbOption = DEFAULT_DB_URL,
    artifacts: Annotated[
        str | None,
        typer.Option(
            help="Artifact store root (directory or fsspec URI); default: beside the database."
        ),
    ] = None,
    address: AddressOption = None,
    dashboard: Annotated[bool, typer.Option(help="Start the Ray dashboard locally.")] = False,
) -> None:
    """Train mode pairs and connect each with a low-loss path (M2O, then M2M), then check it.

    With no options this runs the embedded default: 2 LeNet-5 pairs on scikit-learn's bundled
    digits, on a local Ray instance, recorded in ./llpf.db.
    """
    from orchestrator import service

    resources = {
        k: v
        for k, v in {"device": device, "num_cpus": num_cpus, "num_gpus": num_gpus}.items()
        if v is not None
    }
    overrides: dict[str, Any] = {
        "arch": arch,
        "dataset": dataset,
        "data_dir": data_dir,
        "download": download,
        "pairs": pairs,
        "base_seed": seed,
        "recipe_a": recipe,
        "recipe_b": recipe_b,
        "preset": preset,
        "name": name,
        "resources": resources or None,
    }
    with _user_errors():
        status = service.submit(config, overrides, db, artifacts, address, dashboard, console)
    _exit_for(status)


@app.command()
def run(
    experiment: Annotated[int, typer.Argument(help="Experiment id.")],
    db: DbOption = DEFAULT_DB_URL,
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster to join ('auto' inside a Ray job); default: embedded."),
    ] = None,
) -> None:
    """Run (or continue) an experiment already in the database: the Ray job entrypoint."""
    from orchestrator import service

    with _user_errors():
        status = service.run_existing(experiment, db, address, console)
    _exit_for(status)


@app.command()
def resume(
    experiment: Annotated[int, typer.Argument(help="Experiment id.")],
    db: DbOption = DEFAULT_DB_URL,
    address: AddressOption = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    num_cpus: Annotated[float | None, typer.Option(help="CPUs per stage.")] = None,
    num_gpus: Annotated[float | None, typer.Option(help="GPUs per stage.")] = None,
) -> None:
    """Finish an interrupted experiment: stale stages run again, finished ones are skipped.

    Resources may differ from the first run's; they are not part of the experiment's identity.
    """
    from orchestrator import service

    resources = {
        k: v
        for k, v in {"device": device, "num_cpus": num_cpus, "num_gpus": num_gpus}.items()
        if v is not None
    }
    with _user_errors():
        status = service.resume(experiment, db, address, console, resources)
    _exit_for(status)


@app.command()
def status(
    experiment: Annotated[int | None, typer.Argument(help="Experiment id (default: all).")] = None,
    db: DbOption = DEFAULT_DB_URL,
    format: Annotated[Format, typer.Option("--format")] = Format.table,
) -> None:
    """Experiments, or one experiment's pairs and the state of each stage."""
    with _user_errors():
        reports.show_status(db, experiment, format.value, console)


@app.command()
def results(
    experiment: Annotated[int | None, typer.Argument(help="Experiment id (default: all).")] = None,
    db: DbOption = DEFAULT_DB_URL,
    format: Annotated[Format, typer.Option("--format")] = Format.table,
) -> None:
    """One row per pair: barrier, path and continuity losses, distances, iterations, time."""
    with _user_errors():
        reports.show_results(db, experiment, format.value, console)


@app.command()
def models(format: Annotated[Format, typer.Option("--format")] = Format.table) -> None:
    """Every architecture with its parameter count, datasets, default recipe and preset."""
    with _user_errors():
        reports.show_models(format.value, console)


@app.command()
def phases(
    arch: Annotated[str | None, typer.Option(help="Architecture (see `llpf models`).")] = None,
    preset: Annotated[str | None, typer.Option(help="Preset (default: the arch's).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset (sets the class count).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML or TOML file.")] = None,
    format: Annotated[Format, typer.Option("--format")] = Format.table,
) -> None:
    """The M2M phases an experiment would run: layer groups, parameters, T, step sizes."""
    with _user_errors():
        reports.show_phases(arch, preset, dataset, format.value, console, config)


@app.command()
def logs(
    experiment: Annotated[int, typer.Argument(help="Experiment id.")],
    db: DbOption = DEFAULT_DB_URL,
    address: AddressOption = None,
) -> None:
    """The Ray job's log of a submitted experiment, or the recorded stage errors."""
    from orchestrator import service

    with _user_errors():
        service.logs(experiment, db, address, console)


@app.command()
def cancel(
    experiment: Annotated[int, typer.Argument(help="Experiment id.")],
    db: DbOption = DEFAULT_DB_URL,
    address: AddressOption = None,
) -> None:
    """Stop an experiment: running stages are cancelled, recorded results are kept."""
    from orchestrator import service

    with _user_errors():
        service.cancel(experiment, db, address, console)


@db_app.command("upgrade")
def db_upgrade(db: DbOption = DEFAULT_DB_URL) -> None:
    """Create or migrate the database schema to the newest version."""
    from orchestrator.store.db import Store, safe_url
    from orchestrator.store.migrate import current

    with _user_errors():
        store = Store(db)
        store.ensure_schema()
        console.print(f"database {safe_url(store.url)} is at revision {current(store.engine)}")


def _exit_for(status: str) -> None:
    """Exit code 1 when pairs failed, so that scripts can tell; 0 otherwise."""
    if status in ("failed", "partial"):
        errors.print(f"some pairs failed (experiment {status}); see `llpf status` for reasons")
        raise typer.Exit(code=1)


class _user_errors:
    """Turn expected errors into one line on stderr and exit code 2."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, _tb: Any) -> bool:
        if error is None or isinstance(error, typer.Exit | KeyboardInterrupt | SystemExit):
            return False
        expected = (
            UserError,
            ConfigError,
            StoreError,
            ArchitectureError,
            DatasetError,
            LLPFError,
            ValueError,
            FileNotFoundError,
        )
        if isinstance(error, expected):
            message = str(error).strip().replace("\n", " ")
            errors.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(code=2)
        return False


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    app()


if __name__ == "__main__":
    main()
