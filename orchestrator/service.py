"""What the CLI's commands do with Ray: start or join it, submit jobs, run the driver."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

import ray
from rich.console import Console
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from orchestrator import records, reports
from orchestrator.config import ResolvedConfig, ResourceSettings, load_config, resolve
from orchestrator.display import ProgressDisplay
from orchestrator.pipeline import ExperimentRunner
from orchestrator.store.db import Store
from orchestrator.store.schema import Experiment
from workers.progress import ProgressBoard

logger = logging.getLogger(__name__)


class SubmitError(ValueError):
    """The experiment cannot be submitted (e.g. its resources can never be satisfied)."""


def open_store(db_url: str) -> Store:
    store = Store(db_url)
    store.ensure_schema()
    return store


def submit(
    config_path: Path | None,
    overrides: dict[str, Any],
    db_url: str,
    artifacts: str | None,
    address: str | None,
    dashboard: bool,
    console: Console,
) -> str:
    """Create the experiment (or find the identical one) and run it here or on a cluster.

    Returns the experiment's status: "succeeded", "partial", "failed", or "submitted" for a
    cluster job. Nothing is recorded when the configuration or its resources cannot work.
    """
    config = resolve(load_config(config_path, overrides))
    store = open_store(db_url)
    if address:
        experiment_id, created = _create_or_report(store, config, artifacts, console)
        if experiment_id is None:
            return "exists"
        if artifacts is None and created:
            logger.warning(
                "artifacts go to %s on this machine; on a multi-node cluster give "
                "--artifacts a location every node can reach (e.g. s3://...)",
                store.artifact_root_default(),
            )
        submit_job(store, experiment_id, db_url, address, console)
        return "submitted"

    start_local_ray(dashboard)
    try:
        resources = check_resources(config)  # before anything is recorded
        experiment_id, _ = _create_or_report(store, config, artifacts, console)
        if experiment_id is None:
            return "exists"
        status = run_driver(store, experiment_id, console, resources)
    finally:
        ray.shutdown()
    reports.show_results(db_url, experiment_id, "table", console)
    return status


def _create_or_report(
    store: Store, config: ResolvedConfig, artifacts: str | None, console: Console
) -> tuple[int | None, bool]:
    """The experiment to run: a new one, or an identical one that never ran to an end."""
    experiment_id, created = create_or_find(store, config, artifacts)
    if created:
        return experiment_id, True
    status = experiment_status(store, experiment_id)
    if status in ("pending", "submitted", "cancelled"):
        console.print(
            f"experiment {experiment_id} with this configuration exists ({status}); running it"
        )
        return experiment_id, False
    console.print(
        f"experiment {experiment_id} with this configuration already exists (status: {status}); "
        f"not submitting it again. Use `llpf resume {experiment_id}` to finish it or "
        f"`llpf results {experiment_id}`."
    )
    return None, False


def create_or_find(store: Store, config: ResolvedConfig, artifacts: str | None) -> tuple[int, bool]:
    with store.session() as session, session.begin():
        existing = records.find_experiment(session, config.fingerprint())
        if existing is not None:
            return existing.id, False
        root = artifacts or store.artifact_root_default()
        experiment = records.create_experiment(session, config, root)
        session.flush()
        logger.info(
            "experiment %d: %d pairs of %s on %s, artifacts in %s",
            experiment.id,
            config.pairs,
            config.arch,
            config.dataset,
            root,
        )
        return experiment.id, True


def experiment_status(store: Store, experiment_id: int) -> str:
    with store.session() as session:
        experiment = session.get(Experiment, experiment_id)
        if experiment is None:
            raise ValueError(f"no experiment {experiment_id} in {store.url}")
        return experiment.status


def start_local_ray(dashboard: bool = False) -> None:
    """An embedded Ray instance with explicit resources; never attaches to another cluster."""
    cpus = os.cpu_count() or 1
    gpus = _local_gpus()
    logger.info("starting an embedded Ray instance with %d CPUs and %d GPUs", cpus, gpus)
    ray.init(
        address="local",
        num_cpus=cpus,
        num_gpus=gpus,
        include_dashboard=dashboard,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # a broken CUDA install must not stop a CPU run
        return 0


def check_resources(config: ResolvedConfig) -> ResourceSettings:
    """The resources stages will ask for; fails fast when no node could ever grant them.

    With `device: auto`, GPUs asked for on a cluster that has none fall back to the CPU, with a
    warning; with `device: cpu` no GPU is held. Anything else no node can satisfy is an error
    naming the resources, rather than tasks that wait forever.
    """
    resources = config.resources
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    cluster_gpus = sum(node.get("GPU", 0) for node in nodes)
    if resources.num_gpus > 0 and (
        resources.device == "cpu" or (resources.device == "auto" and cluster_gpus == 0)
    ):
        if resources.device == "auto":
            logger.warning(
                "num_gpus=%g asked for, but the cluster has no GPU: stages run on "
                "the CPU (use --device cuda to require a GPU)",
                resources.num_gpus,
            )
        resources = resources.model_copy(update={"num_gpus": 0.0})
    need = {"CPU": resources.num_cpus, "GPU": resources.num_gpus}
    if any(all(node.get(k, 0) >= v for k, v in need.items() if v > 0) for node in nodes):
        return resources
    largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
    raise SubmitError(
        f"no node can run a stage needing num_cpus={need['CPU']:g}, num_gpus={need['GPU']:g}; "
        f"the largest node has CPU={largest.get('CPU', 0):g}, GPU={largest.get('GPU', 0):g} "
        "(lower --num-cpus/--num-gpus, or use --device cpu)"
    )


def run_driver(
    store: Store, experiment_id: int, console: Console, resources: ResourceSettings | None = None
) -> str:
    board = ProgressBoard.options(
        name=f"llpf-progress-{experiment_id}-{uuid.uuid4().hex[:6]}"
    ).remote()
    runner = ExperimentRunner(store, experiment_id, board, resources=resources)
    try:
        with ProgressDisplay(board, runner.total_pairs) as display:
            runner.on_update = display.update
            status = runner.run()
    except KeyboardInterrupt:
        console.print(
            f"interrupted: experiment {experiment_id} keeps what it recorded; "
            f"`llpf resume {experiment_id}` finishes it"
        )
        raise
    console.print(f"experiment {experiment_id}: {status}")
    return status


def run_existing(
    experiment_id: int,
    db_url: str,
    address: str | None,
    console: Console,
    resources: dict[str, Any] | None = None,
) -> str:
    """The Ray job entrypoint: join the cluster (or start one) and run the driver.

    `resources` overrides the stored resources (they are not part of an experiment's identity).
    """
    store = open_store(db_url)
    status = experiment_status(store, experiment_id)
    if status == "succeeded":
        console.print(f"experiment {experiment_id} already succeeded; nothing to run")
        return status
    with store.session() as session:
        config = ResolvedConfig.model_validate(session.get(Experiment, experiment_id).config)
    if resources:
        merged = {**config.resources.model_dump(), **resources}
        config = config.model_copy(update={"resources": ResourceSettings.model_validate(merged)})
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        start_local_ray()
    try:
        return run_driver(store, experiment_id, console, check_resources(config))
    finally:
        ray.shutdown()


def resume(
    experiment_id: int,
    db_url: str,
    address: str | None,
    console: Console,
    resources: dict[str, Any] | None = None,
) -> str:
    """Finish an experiment whose driver stopped: locally, or as a new Ray job."""
    store = open_store(db_url)
    status = experiment_status(store, experiment_id)
    if status == "succeeded":
        console.print(f"experiment {experiment_id} already succeeded; nothing to resume")
        return status
    if address:
        submit_job(store, experiment_id, db_url, address, console)
        return "submitted"
    status = run_existing(experiment_id, db_url, None, console, resources)
    reports.show_results(db_url, experiment_id, "table", console)
    return status


def submit_job(
    store: Store, experiment_id: int, db_url: str, address: str, console: Console
) -> None:
    """Submit `llpf run EXPERIMENT` as a Ray job (Jobs API) and return at once."""
    console.print(f"Ray address: {address}")
    client = job_client(address)
    # The database URL (which may hold a password) travels as an environment variable of the
    # job, which `llpf run` reads as LLPF_DB_URL, rather than on its command line.
    job_id = _with_retries(
        client.submit_job,
        entrypoint=f"llpf run {experiment_id} --address auto",
        runtime_env={"env_vars": {"LLPF_DB_URL": db_url}},
        submission_id=f"llpf-{experiment_id}-{uuid.uuid4().hex[:8]}",
        metadata={"llpf_experiment": str(experiment_id)},
    )
    with store.session() as session, session.begin():
        experiment = session.get(Experiment, experiment_id)
        experiment.ray_address, experiment.ray_job_id = address, job_id
        if experiment.status == "pending":
            experiment.status = "submitted"
    console.print(f"experiment {experiment_id} submitted as Ray job {job_id}")


def _dashboard_not_ready(error: BaseException) -> bool:
    text = str(error)
    return (
        isinstance(error, ConnectionError)
        or "try again later" in text
        or ("Failed to connect" in text)
    )


@retry(
    retry=retry_if_exception(_dashboard_not_ready),
    stop=stop_after_delay(90),
    wait=wait_exponential(multiplier=1, max=10),
    reraise=True,
)
def _with_retries(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the Jobs API, retrying while the head's dashboard or job agent is still starting."""
    return call(*args, **kwargs)


def job_client(address: str) -> Any:
    """A Ray Jobs API client for `address` (see `orchestrator.cli.use_ray_token_if_present`)."""
    from ray.job_submission import JobSubmissionClient

    return _with_retries(JobSubmissionClient, address)


def cancel(experiment_id: int, db_url: str, address: str | None, console: Console) -> None:
    """Ask the driver to stop; stop the Ray job too when the experiment was submitted as one."""
    store = open_store(db_url)
    with store.session() as session, session.begin():
        experiment = session.get(Experiment, experiment_id)
        if experiment is None:
            raise ValueError(f"no experiment {experiment_id} in {store.url}")
        if experiment.status in ("succeeded", "failed", "partial", "cancelled"):
            console.print(f"experiment {experiment_id} is already {experiment.status}")
            return
        experiment.status = "cancelling"
        job_id, job_address = experiment.ray_job_id, address or experiment.ray_address
    if job_id and job_address:
        job_client(job_address).stop_job(job_id)
    console.print(f"experiment {experiment_id}: cancellation requested")


def logs(experiment_id: int, db_url: str, address: str | None, console: Console) -> None:
    store = open_store(db_url)
    with store.session() as session:
        experiment = session.get(Experiment, experiment_id)
        if experiment is None:
            raise ValueError(f"no experiment {experiment_id} in {store.url}")
        job_id, job_address = experiment.ray_job_id, address or experiment.ray_address
    if job_id and job_address:
        console.print(job_client(job_address).get_job_logs(job_id), markup=False)
        return
    reports.show_errors(db_url, experiment_id, console)
