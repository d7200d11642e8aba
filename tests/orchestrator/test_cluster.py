"""A driver that dies and is resumed, a Ray cluster started with `ray start`, PostgreSQL.

These tests run the `llpf` console script in subprocesses, as a user would, and assert on the
database rows.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from orchestrator.store.db import Store
from orchestrator.store.schema import ContinuitySegment, Experiment, Mode, PathPointRow, Stage

pytestmark = pytest.mark.slow

sys.path.insert(0, os.path.dirname(__file__))
from test_pipeline_ray import TINY  # noqa: E402

LLPF = [sys.executable, "-m", "orchestrator.cli"]


def _config(tmp_path, **changes):
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return str(path)


def _llpf(*args, timeout=300):
    return subprocess.run([*LLPF, *args], capture_output=True, text=True, timeout=timeout)


def _wait_for(predicate, timeout_s, interval_s=0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False


def _count(store, model, **where):
    with store.session() as session:
        query = select(func.count()).select_from(model)
        for key, value in where.items():
            query = query.where(getattr(model, key) == value)
        return session.scalar(query)


def test_resume_after_the_driver_is_killed_finishes_without_duplicates(tmp_path):
    db = f"sqlite:///{tmp_path / 'llpf.db'}"
    driver = subprocess.Popen(
        [*LLPF, "submit", "--config", _config(tmp_path), "--db", db],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    store_ready = _wait_for(lambda: os.path.exists(tmp_path / "llpf.db"), 60)
    assert store_ready
    store = Store(db)

    def m2m_running() -> bool:
        try:
            return _count(store, Stage, kind="m2m", state="running") > 0
        except OperationalError:  # the driver is still creating the tables
            return False

    assert _wait_for(m2m_running, 240)
    with store.session() as session:
        done_before = {
            (s.pair_id, s.kind)
            for s in session.scalars(select(Stage))
            if s.state in ("succeeded", "skipped")
        }
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray instance it started
    driver.wait()

    resumed = _llpf("resume", "1", "--db", db)
    assert resumed.returncode == 0, resumed.stderr
    with store.session() as session:
        assert session.scalars(select(Experiment)).one().status == "succeeded"
        stages = session.scalars(select(Stage)).all()
        assert {s.state for s in stages} <= {"succeeded", "skipped"}
        assert max(s.attempts for s in stages if s.kind == "m2m") == 2  # stale, then rerun
        finished_early = [s for s in stages if (s.pair_id, s.kind) in done_before]
        assert finished_early and all(s.attempts <= 1 for s in finished_early)  # not rerun
    assert _count(store, Mode) == 4
    assert _count(store, PathPointRow) == 2 * 8
    assert _count(store, ContinuitySegment) == 2 * 7


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ray_head():
    """A single-node Ray cluster started the way a lab starts its head node.

    It gets a temporary directory of its own, so that tearing it down stops its processes and
    no other Ray instance on the machine (`ray stop` would stop them all).
    """
    import tempfile
    import uuid

    import psutil

    temp_dir = os.path.join(tempfile.gettempdir(), f"llpfray-{uuid.uuid4().hex[:8]}")
    port, dashboard = _free_port(), _free_port()
    start = subprocess.run(
        [
            "ray",
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            f"--temp-dir={temp_dir}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--disable-usage-stats",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if start.returncode != 0:
        pytest.fail(f"ray start failed: {start.stderr[-2000:]}")
    yield f"http://127.0.0.1:{dashboard}"

    mine = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(temp_dir in part for part in (p.info["cmdline"] or []))
    ]
    for process in mine:
        process.terminate()
    _, alive = psutil.wait_procs(mine, timeout=15)
    for process in alive:
        process.kill()


def test_submit_to_a_ray_cluster_runs_as_a_job(tmp_path, ray_head):
    db = f"sqlite:///{tmp_path / 'llpf.db'}"
    submitted = _llpf(
        "submit",
        "--config",
        _config(tmp_path, pairs=1),
        "--db",
        db,
        "--address",
        ray_head,
        timeout=120,
    )
    assert submitted.returncode == 0, submitted.stderr
    assert f"Ray address: {ray_head}" in submitted.stdout
    assert "submitted as Ray job llpf-1-" in submitted.stdout

    store = Store(db)
    with store.session() as session:
        job_id = session.scalars(select(Experiment.ray_job_id)).one()
    assert job_id.startswith("llpf-1-")

    def finished():
        status = _llpf("status", "--db", db, "--format", "json")
        return json.loads(status.stdout)[0]["status"] in ("succeeded", "failed", "partial")

    assert _wait_for(finished, 300, 2)
    rows = json.loads(_llpf("results", "1", "--db", db, "--format", "json").stdout)
    assert rows[0]["status"] == "succeeded" and rows[0]["final_distance"] == 0.0
    logs = _llpf("logs", "1", "--db", db)
    assert logs.returncode == 0 and "experiment 1: succeeded" in logs.stdout


def test_the_same_experiment_runs_on_postgresql(tmp_path, postgres_url):
    run = _llpf(
        "submit",
        "--config",
        _config(tmp_path, pairs=1),
        "--db",
        postgres_url,
        "--artifacts",
        f"file://{tmp_path / 'artifacts'}",
    )
    assert run.returncode == 0, run.stderr
    rows = json.loads(_llpf("results", "--db", postgres_url, "--format", "json").stdout)
    assert len(rows) == 1 and rows[0]["status"] == "succeeded"
    store = Store(postgres_url)
    assert _count(store, PathPointRow) == 8
    assert (tmp_path / "artifacts" / "experiment-1" / "pair-0" / "mode-a.safetensors").exists()
