"""Path-finding throughput: epoch-equivalents per second, and where the rest of the time goes.

Prints two tables:

1. The core M2M loop alone (no Ray, no database): epoch-equivalents of training per second of
   wall time (training images processed / training-set size / seconds) and the split of the
   stage's wall time into training, recording (evaluation, distances, storing weights) and the
   rest (Move, VarianceCorrection, bookkeeping).
2. The same M2M stage run through the whole pipeline (`llpf submit` machinery: Ray, the artifact
   store, SQLite): the pair's wall time against the time the M2M stage spent training, i.e. the
   share of wall time spent outside training, Ray and database included.

Usage:
    python benchmarks/bench_path_finding.py                    # LeNet-5 on digits, CPU
    python benchmarks/bench_path_finding.py --device cuda --arch resnet18 --dataset cifar10 \
        --data-dir /data --batch-size 256 --iterations 200

On a GPU the activity split is approximate: kernels run asynchronously and are charged to
whichever activity waits for them; the total and the epoch rate are exact.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from llpf_core.data import load_dataset
from llpf_core.m2m import find_m2m_path
from llpf_core.models import build_model
from llpf_core.path import NullSink
from llpf_core.settings import EvaluationSettings, M2MSettings, PhaseSpec


def core_benchmark(args: argparse.Namespace) -> dict[str, float]:
    device = torch.device(args.device)
    data = load_dataset(args.dataset, args.data_dir).to(device)
    torch.manual_seed(0)
    start = build_model(args.arch, num_classes=data.num_classes).to(device).state_dict()
    torch.manual_seed(1)
    model = build_model(args.arch, num_classes=data.num_classes).to(device)
    destination = {k: v.clone() for k, v in model.state_dict().items()}
    settings = M2MSettings(
        lr=1e-3,
        batch_size=args.batch_size,
        loss_threshold=None,
        max_rounds=args.rounds,
        store_interval=args.store_interval,
        eval_interval=args.eval_interval,
    )
    phases = [PhaseSpec(name="all", layers=["*"], iterations=args.iterations, step_a=1e-3)]
    evaluation = EvaluationSettings(norm_recalibration_batches=args.recalibration_batches)

    warmup = [phases[0].model_copy(update={"iterations": 2})]
    find_m2m_path(model, start, destination, data, settings, warmup, NullSink(), 0, evaluation)
    if device.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    outcome = find_m2m_path(
        model, start, destination, data, settings, phases, NullSink(), 0, evaluation
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - began

    seconds = outcome.info["seconds"]
    epochs = outcome.info["train_samples"] / len(data.train_y)
    train, record = seconds.get("train", 0.0), seconds.get("record", 0.0)
    return {
        "wall_seconds": wall,
        "epoch_equivalents": epochs,
        "epochs_per_second": epochs / wall,
        "train_share": train / wall,
        "record_share": record / wall,
        "other_share": max(wall - train - record, 0.0) / wall,
    }


def pipeline_benchmark(args: argparse.Namespace) -> dict[str, float]:
    """One pair through Ray and SQLite, modes trained briefly; M2M as in the core benchmark."""
    import ray

    from orchestrator.config import ExperimentConfig, resolve
    from orchestrator.service import create_or_find, open_store, run_driver, start_local_ray
    from orchestrator.store.schema import Pair, Stage

    workdir = Path(tempfile.mkdtemp(prefix="llpf-bench-"))
    config = resolve(
        ExperimentConfig(
            name="bench",
            arch=args.arch,
            dataset=args.dataset,
            data_dir=args.data_dir,
            pairs=1,
            recipe_a={"name": "bench", "epochs": 2, "lr": 0.05, "batch_size": 64},
            m2m={
                "phases": [
                    {"name": "all", "layers": ["*"], "iterations": args.iterations, "step_a": 1e-3}
                ],
                "loss_threshold": None,
                "max_rounds": args.rounds,
                "batch_size": args.batch_size,
                "store_interval": args.store_interval,
                "eval_interval": args.eval_interval,
            },
            continuity={"enabled": True, "samples_per_segment": 2, "train_subset": 64},
            linear={"samples": 2},
            resources={
                "device": "cpu" if args.device == "cpu" else "auto",
                "num_gpus": 0 if args.device == "cpu" else 1,
            },
        )
    )
    store = open_store(f"sqlite:///{workdir / 'bench.db'}")
    experiment_id, _ = create_or_find(store, config, str(workdir / "artifacts"))
    start_local_ray(config)
    try:
        from rich.console import Console

        run_driver(store, experiment_id, Console(quiet=True))
    finally:
        ray.shutdown()
    with store.session() as session:
        m2m = session.query(Stage).filter(Stage.kind == "m2m").one()
        pair = session.query(Pair).one()
        pair_wall = (pair.finished_at - pair.started_at).total_seconds()
        train = m2m.info["seconds"].get("train", 0.0)
        return {
            "m2m_stage_wall_seconds": m2m.wall_seconds,
            "m2m_train_seconds": train,
            "m2m_outside_training_share": 1 - train / m2m.wall_seconds,
            "pair_wall_seconds": pair_wall,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="lenet5")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5, help="training batches per iteration")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--store-interval", type=int, default=1)
    parser.add_argument("--eval-interval", type=int, default=1)
    parser.add_argument("--recalibration-batches", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(
        f"# {args.arch} on {args.dataset}, {args.device}, {args.threads} thread(s): "
        f"{args.iterations} M2M iterations x {args.rounds} batches of {args.batch_size}, "
        f"store every {args.store_interval}, evaluate every {args.eval_interval} stored"
    )
    core = core_benchmark(args)
    print("\ncore M2M loop")
    for key, value in core.items():
        print(f"  {key:<28} {value:10.3f}")
    if not args.skip_pipeline:
        pipeline = pipeline_benchmark(args)
        print("\nthrough Ray, the artifact store and SQLite (one pair)")
        for key, value in pipeline.items():
            print(f"  {key:<28} {value:10.3f}")


if __name__ == "__main__":
    main()
