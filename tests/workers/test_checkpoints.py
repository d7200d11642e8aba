"""The artifact store's integrity checks and the stage checkpoints built on them."""

from __future__ import annotations

import pytest
import torch

from llpf_core.artifacts import ArtifactStore, CorruptArtifactError
from llpf_core.settings import EvaluationSettings
from workers.runtime import Placement
from workers.stages import CheckpointingSink, PairContext


def _context(root: str) -> PairContext:
    return PairContext(
        experiment_id=1,
        pair_index=0,
        arch="lenet5",
        dataset="digits",
        data_dir=None,
        download=False,
        num_classes=10,
        artifact_root=root,
        placement=Placement(),
        evaluation=EvaluationSettings(),
    )


def test_weights_round_trip_with_their_hash(tmp_path):
    store = ArtifactStore(str(tmp_path))
    state = {"w": torch.arange(6.0).view(2, 3), "n": torch.tensor(3)}
    uri, digest = store.save_weights("a/w.safetensors", state)
    assert uri == f"{tmp_path}/a/w.safetensors"
    loaded = store.load_weights(uri, digest)
    assert torch.equal(loaded["w"], state["w"]) and torch.equal(loaded["n"], state["n"])
    assert not list(tmp_path.glob("a/*.tmp-*"))  # written under a temporary name, then renamed


def test_a_changed_artifact_is_detected(tmp_path):
    store = ArtifactStore(f"file://{tmp_path}")  # any fsspec URI
    uri, _ = store.save_weights("w.safetensors", {"w": torch.ones(4)})
    path = tmp_path / "w.safetensors"
    payload = bytearray(path.read_bytes())
    payload[-1] ^= 0xFF
    path.write_bytes(bytes(payload))
    with pytest.raises(CorruptArtifactError, match="does not match"):
        store.load_weights(uri)


def test_a_corrupted_checkpoint_is_never_loaded_and_the_previous_one_is_used(tmp_path):
    sink = CheckpointingSink(_context(str(tmp_path)), "m2m")
    for iteration in (5, 10):
        sink.checkpoint("m2m", iteration, {"iteration": iteration, "w": torch.full((3,), 1.0)})
    newest = tmp_path / "experiment-1/pair-0/m2m/checkpoints/ckpt-0000010.pt"
    newest.write_bytes(newest.read_bytes()[:-7])  # truncated, as by a crash or a bad disk

    state = sink.latest_valid_checkpoint()
    assert state is not None and state["iteration"] == 5


def test_with_only_corrupted_checkpoints_the_stage_restarts(tmp_path):
    sink = CheckpointingSink(_context(str(tmp_path)), "m2o")
    sink.checkpoint("m2o", 5, {"iteration": 5})
    (tmp_path / "experiment-1/pair-0/m2o/checkpoints/ckpt-0000005.pt.sha256").write_text("0" * 64)
    assert sink.latest_valid_checkpoint() is None


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    sink = CheckpointingSink(_context(str(tmp_path)), "m2m")
    for iteration in (1, 2, 3, 4):
        sink.checkpoint("m2m", iteration, {"iteration": iteration})
    assert [k.rsplit("/", 1)[-1] for k in sink.checkpoints()] == [
        "ckpt-0000003.pt",
        "ckpt-0000004.pt",
    ]
    sink.clear_checkpoints()
    assert sink.checkpoints() == []
