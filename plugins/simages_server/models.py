"""Shared plumbing for the user's own ONNX models: file checks, digests, sessions, clear errors.

Every problem with a model file becomes a ``ModelError`` that names the file and
what was wrong with it, so ``simages-server`` can print one line instead of a
traceback from onnxruntime.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ModelError(ValueError):
    """A model folder or file is missing, malformed, or does not have the expected inputs/outputs."""


@dataclass(frozen=True)
class ModelFile:
    """One model file as an index records it: where it was, and what it was (its content digest)."""

    path: str
    sha256: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "sha256": self.sha256}

    @classmethod
    def of(cls, path: Path) -> ModelFile:
        return cls(str(path.resolve()), file_digest(path))


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in chunks: a CLIP export is hundreds of MB."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ModelError(f"{what} not found: {path}")
    return path


def open_session(path: Path, what: str) -> Any:
    """An onnxruntime session on CPU; nothing is ever downloaded."""
    require_file(path, what)
    try:
        import onnxruntime
    except ImportError:  # optional dependency
        raise ModelError(
            f"onnxruntime is needed to run {path}: pip install 'simages-plugins[onnx]'"
        ) from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # its warnings about unused initializers are noise to a user
    # Idle inference threads sleep instead of spinning: while the model waits for the next batch, the
    # indexing workers that decode and preprocess need those cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for any bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{what} {path} is not a loadable ONNX model: {first}") from None


def check_signature(
    session: Any, path: Path, what: str, *, input_rank: int, output_ranks: tuple[int, ...]
) -> None:
    """One input of ``input_rank`` and a first output of one of ``output_ranks``, or a ModelError."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise ModelError(f"{what} {path} must have exactly one input, it has {len(inputs)} ({names})")
    if len(inputs[0].shape) != input_rank:
        raise ModelError(
            f"{what} {path}: input {inputs[0].name!r} has rank {len(inputs[0].shape)} "
            f"(shape {inputs[0].shape}), expected rank {input_rank}"
        )
    if not outputs or len(outputs[0].shape) not in output_ranks:
        shape = outputs[0].shape if outputs else None
        expected = " or ".join(str(r) for r in output_ranks)
        raise ModelError(f"{what} {path}: output has shape {shape}, expected rank {expected}")
