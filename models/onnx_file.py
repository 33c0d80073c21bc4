"""An ONNX file of either Vigil model: its checksum, the model card in its metadata, and one onnxruntime session.

Shared by the triage runtime (:mod:`models.triage.onnx`) and the chest X-ray runtime (:mod:`models.imaging.onnx`),
so that both check a file, read its card and configure onnxruntime the same way. Needs onnxruntime (and onnx to
write a card), never torch.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from models.errors import ModelArtifactError
from models.model_card import CARD_METADATA_KEY, ModelCard

__all__ = ["default_threads", "open_onnx_model", "sha256_file", "write_card_metadata"]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_card_metadata(path: Path, card: ModelCard) -> None:
    """Put the model card into an ONNX file's metadata (replacing any), check the model and save it."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key = CARD_METADATA_KEY
    entry.value = card.to_json()
    proto.producer_name = "vigil"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def default_threads() -> int:
    """Threads for one onnxruntime session: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def open_onnx_model(
    path: Path, *, threads: int | None = None, expected_sha256: str | None = None
) -> tuple[Any, ModelCard, str]:
    """Check an ONNX file, open one onnxruntime session on it and read its model card.

    Returns (session, card, sha256). Shared by every Vigil model runtime.

    Raises
    ------
    ModelArtifactError
        Missing file, checksum mismatch, a file onnxruntime cannot load, or no model card in its metadata.
    """
    import onnxruntime as ort

    if not path.is_file():
        raise ModelArtifactError(f"ONNX model file not found: {path}")
    sha256 = sha256_file(path)
    if expected_sha256 is not None and expected_sha256 != sha256:
        raise ModelArtifactError(
            f"ONNX model checksum mismatch for {path.name}: expected {expected_sha256[:12]}..., got {sha256[:12]}..."
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    # Idle intra-op threads would otherwise spin for a while after every run: in a service they burn the CPU
    # that the next request (and the other workers) need. Measured in docs/serving_benchmark.md.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for a corrupt file
        raise ModelArtifactError(f"ONNX model {path.name} could not be loaded: {type(exc).__name__}") from exc
    meta = session.get_modelmeta().custom_metadata_map
    if CARD_METADATA_KEY not in meta:
        raise ModelArtifactError(f"ONNX model {path.name} has no '{CARD_METADATA_KEY}' metadata")
    return session, ModelCard.from_json(meta[CARD_METADATA_KEY]), sha256
