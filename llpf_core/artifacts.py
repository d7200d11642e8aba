"""The artifact store: model weights and stage checkpoints, on any fsspec filesystem.

Weights never go into the database; they live here, under a root that is a local directory by
default or any URI fsspec understands (`s3://bucket/llpf`, `gs://...`, `file:///nfs/llpf`).
Weights are safetensors files; checkpoints (which also hold optimizer and random-generator
state) are torch files read back with `weights_only=True`. Every file is written under a
temporary name and then renamed, and its SHA-256 is written beside it, so that a reader never
sees a half-written file and can tell a damaged one from a good one.
"""

from __future__ import annotations

import hashlib
import io
import logging
import posixpath
import uuid
from typing import Any

import fsspec
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor

from llpf_core.errors import LLPFError

logger = logging.getLogger(__name__)


class CorruptArtifactError(LLPFError):
    """An artifact's content does not match its recorded SHA-256, or cannot be parsed."""


class ArtifactStore:
    """Files under `root` (a path or fsspec URI), addressed by relative keys like `a/b.pt`."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self.fs, self.base = fsspec.core.url_to_fs(self.root)

    def uri(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _path(self, key_or_uri: str) -> str:
        if key_or_uri.startswith(self.root + "/"):
            key_or_uri = key_or_uri[len(self.root) + 1 :]
        return posixpath.join(self.base, key_or_uri)

    def write_bytes(self, key: str, payload: bytes) -> tuple[str, str]:
        """Atomically write `payload` at `key`, with its hash beside it. Returns (uri, sha256)."""
        digest = hashlib.sha256(payload).hexdigest()
        path = self._path(key)
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        with self.fs.open(temporary, "wb") as handle:
            handle.write(payload)
        self.fs.mv(temporary, path)
        with self.fs.open(f"{path}.sha256", "w") as handle:
            handle.write(digest)
        return self.uri(key), digest

    def read_bytes(self, key_or_uri: str, expected_sha256: str | None = None) -> bytes:
        """Read an artifact, checking it against `expected_sha256` or the hash stored beside it.

        Raises CorruptArtifactError on a mismatch or a missing hash, FileNotFoundError if absent.
        """
        path = self._path(key_or_uri)
        with self.fs.open(path, "rb") as handle:
            payload = handle.read()
        expected = expected_sha256 or self._stored_hash(path)
        actual = hashlib.sha256(payload).hexdigest()
        if expected != actual:
            raise CorruptArtifactError(
                f"{key_or_uri}: content hash {actual[:12]} does not match the recorded "
                f"{str(expected)[:12]}"
            )
        return payload

    def _stored_hash(self, path: str) -> str | None:
        try:
            with self.fs.open(f"{path}.sha256", "r") as handle:
                return handle.read().strip()
        except FileNotFoundError:
            return None

    def save_weights(self, key: str, state: dict[str, Tensor]) -> tuple[str, str]:
        """Write a state dict as safetensors (CPU, contiguous copies). Returns (uri, sha256)."""
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in state.items()}
        return self.write_bytes(key, save_safetensors(tensors))

    def load_weights(
        self, key_or_uri: str, expected_sha256: str | None = None
    ) -> dict[str, Tensor]:
        """Read a safetensors state dict, verified against its hash."""
        payload = self.read_bytes(key_or_uri, expected_sha256)
        try:
            return load_safetensors(payload)
        except Exception as error:  # safetensors raises its own error types
            raise CorruptArtifactError(f"{key_or_uri}: not a safetensors file ({error})") from error

    def save_object(self, key: str, state: dict[str, Any]) -> tuple[str, str]:
        """Write a checkpoint (tensors, numbers, strings, lists, dicts) as a torch file."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return self.write_bytes(key, buffer.getvalue())

    def load_object(self, key_or_uri: str, expected_sha256: str | None = None) -> dict[str, Any]:
        """Read a checkpoint with `weights_only=True`, verified against its hash."""
        payload = self.read_bytes(key_or_uri, expected_sha256)
        try:
            return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        except Exception as error:  # unpickling errors of every kind mean the same here
            raise CorruptArtifactError(
                f"{key_or_uri}: not a readable checkpoint ({error})"
            ) from error

    def list(self, prefix: str) -> list[str]:
        """Keys of the artifacts under `prefix` (hash files and temporaries excluded), sorted."""
        path = self._path(prefix)
        if not self.fs.exists(path):
            return []
        keys = []
        for entry in self.fs.ls(path, detail=False):
            name = posixpath.basename(entry.rstrip("/"))
            if name.endswith(".sha256") or ".tmp-" in name:
                continue
            keys.append(posixpath.join(prefix, name))
        return sorted(keys)

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._path(key))

    def delete(self, key: str) -> None:
        path = self._path(key)
        for target in (path, f"{path}.sha256"):
            if self.fs.exists(target):
                self.fs.rm(target)
