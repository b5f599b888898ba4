"""Export the test-time embedder (images [N, 3, H, W] -> bn_feat [N, D]) as TorchScript or ONNX (saved
embeddings: ``reid_robust.evaluation.report.save_features``).

Exports run on the CPU (a traced TorchScript file is tied to the device it was traced on).

TorchScript files are traced (``torch.jit.trace``); ONNX files use torch's TorchScript-based exporter
(``dynamo=False``, which needs only ``onnx``) with a dynamic batch axis, input ``images`` and output
``embeddings``.  Every file is written through :func:`reid_robust.atomic.atomic_write` (a temporary name in
the target folder, fsync, rename), so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from reid_robust.atomic import atomic_write

EXPORT_FORMATS = ("torchscript", "onnx")
_SUFFIX_FORMATS = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".torchscript": "torchscript"}


class TestTimeEmbedder(nn.Module):
    """Wraps a model returning a dict of outputs: images [N, 3, H, W] -> ``outputs[output]`` [N, D]."""

    __test__ = False  # not a pytest class despite the name

    def __init__(self, model: nn.Module, output: str = "bn_feat"):
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)[self.output]


@contextlib.contextmanager
def _eval_embedder(model: nn.Module) -> Iterator[TestTimeEmbedder]:
    """The model in eval mode wrapped as an embedder; its previous train/eval mode is restored after."""
    devices = {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()}
    if devices - {"cpu"}:
        raise ValueError(f"export runs on the CPU; move the model there first (model.cpu()), found {sorted(devices)}")
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*deprecated.*", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX.*", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            yield TestTimeEmbedder(model).eval()
    finally:
        model.train(was_training)


def _check_example(example: torch.Tensor) -> torch.Tensor:
    if not isinstance(example, torch.Tensor) or example.dim() != 4 or example.shape[1] != 3:
        shape = tuple(example.shape) if isinstance(example, torch.Tensor) else type(example).__name__
        raise ValueError(f"example must be an image batch [N, 3, H, W], got {shape}")
    return example.detach().float().cpu()


def export_torchscript(model: nn.Module, path: str | os.PathLike, example: torch.Tensor) -> Path:
    """Trace the embedder on ``example`` [N, 3, H, W] and save it to ``path`` (atomically); returns the path."""
    example = _check_example(example)
    with _eval_embedder(model) as embedder, torch.no_grad():
        traced = torch.jit.trace(embedder, example, check_trace=False)
    atomic_write(path, lambda fh: torch.jit.save(traced, fh))
    return Path(path)


def export_onnx(model: nn.Module, path: str | os.PathLike, example: torch.Tensor, opset: int = 17) -> Path:
    """Export the embedder to ONNX at ``path`` (atomically): input ``images``, output ``embeddings``,
    both with a dynamic batch axis; returns the path."""
    example = _check_example(example)
    with _eval_embedder(model) as embedder, torch.no_grad():
        atomic_write(path, lambda fh: torch.onnx.export(
            embedder,
            (example,),
            fh,  # type: ignore[arg-type]  # the TorchScript-based exporter (dynamo=False) writes to file objects
            dynamo=False,
            input_names=["images"],
            output_names=["embeddings"],
            dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
            opset_version=opset,
        ))
    return Path(path)


def export_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """``fmt`` if given, else the format implied by the suffix of ``path`` (.onnx, .pt, .ts, .torchscript)."""
    if fmt is None:
        suffix = Path(path).suffix.lower()
        if suffix not in _SUFFIX_FORMATS:
            raise ValueError(
                f"cannot tell the export format of {os.fspath(path)!r} from its suffix; "
                f"pass fmt= one of {', '.join(EXPORT_FORMATS)}"
            )
        return _SUFFIX_FORMATS[suffix]
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    return fmt


def run_exported(path: str | os.PathLike, images: torch.Tensor, fmt: str | None = None) -> np.ndarray:
    """Embeddings [N, D] (float32) of ``images`` [N, 3, H, W] computed by the exported file at ``path``."""
    fmt = export_format(path, fmt)
    images = _check_example(images)
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*deprecated.*", category=FutureWarning)
            loaded = torch.jit.load(os.fspath(path), map_location="cpu")
        with torch.no_grad():
            return loaded(images).numpy()
    import onnxruntime  # optional dependency: the "onnx" extra

    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    return session.run(["embeddings"], {"images": images.numpy()})[0]


@dataclass(frozen=True)
class ExportCheck:
    """Result of comparing an exported embedder with the PyTorch model on the same images."""

    format: str
    batch_size: int
    max_abs_diff: float
    atol: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.atol

    def __str__(self) -> str:
        verdict = "OK" if self.ok else "MISMATCH"
        return (
            f"{self.format} export check {verdict}: max |exported - pytorch| = {self.max_abs_diff:.3g} "
            f"(atol {self.atol:g}) on a batch of {self.batch_size}"
        )


def check_export(
    model: nn.Module, path: str | os.PathLike, example: torch.Tensor, atol: float = 1e-4, fmt: str | None = None
) -> ExportCheck:
    """Run the exported file and the model (eval mode, ``bn_feat``) on ``example``; compare the embeddings.

    Returns an ``ExportCheck`` (``.ok`` is ``max_abs_diff <= atol``); a shape mismatch counts as infinite
    difference.
    """
    fmt = export_format(path, fmt)
    example = _check_example(example)
    exported = run_exported(path, example, fmt)
    with _eval_embedder(model) as embedder, torch.no_grad():
        reference = embedder(example).numpy()
    if exported.shape != reference.shape:
        diff = float("inf")
    else:
        diff = float(np.abs(exported.astype(np.float64) - reference).max()) if reference.size else 0.0
    return ExportCheck(format=fmt, batch_size=int(example.shape[0]), max_abs_diff=diff, atol=atol)

