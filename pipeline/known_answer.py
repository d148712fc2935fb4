"""Known-answer checks: does this CPU compute this model file's answers?

An integer-quantised ONNX graph runs on whatever kernel onnxruntime picks for the CPU, and
not every kernel computes the same thing: without AVX-512 VNNI, the u8×s8 kernel sums pairs
of products in saturating int16 (``vpmaddubsw``), so a full-range int8 weight gives wrong
features while the file loads and runs without a word. A model file may ship a reference
beside it, ``<file>.kat.npz``, holding fixed inputs and the outputs computed in float
(dequantised weights, float math: never by the kernel under test). Each process that loads the
file runs it once and compares (:func:`check`); a mismatch is a :class:`KnownAnswerError`
that names it.

The reference file holds ``input.<name>`` arrays (the graph inputs), ``output.<name>`` arrays
(the expected outputs), and the tolerances ``min_cosine`` (per sample, each output flattened)
and ``max_abs`` (largest absolute difference, relative to the reference's largest magnitude).

:func:`saturation_risks` reads a graph's construction: an integer matmul whose weights are s8
beyond the 7-bit range can saturate on some x86 kernel, whichever CPU runs the check now.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Deferred imports: onnx (a build-time tool) loads only when a graph is checked.

KAT_SUFFIX = ".kat.npz"
_INPUT, _OUTPUT = "input.", "output."
_SEVEN_BIT = 64  # |s8 weight| ≤ 64: 2 × 255 × 64 = 32,640 fits int16 (onnxruntime's reduce_range)


class KnownAnswerError(RuntimeError):
    """The model computes answers that differ from its shipped float reference."""


@dataclass(frozen=True)
class KnownAnswer:
    """The outcome of one check: the worst agreement over the reference samples."""

    reference: Path
    samples: int
    min_cosine: float
    max_abs: float  # relative to the reference's largest magnitude
    tolerance_cosine: float
    tolerance_abs: float

    @property
    def ok(self) -> bool:
        return self.min_cosine >= self.tolerance_cosine and self.max_abs <= self.tolerance_abs

    def summary(self) -> str:
        return (f"{self.samples} reference inputs, min cosine {self.min_cosine:.5f} "
                f"(≥ {self.tolerance_cosine}), max |Δ| {self.max_abs:.4f} of the reference's "
                f"range (≤ {self.tolerance_abs})")


def reference_path(model: Path) -> Path:
    """Where a model file's known-answer reference lives: ``<file>.kat.npz`` beside it."""
    return model.with_name(model.name + KAT_SUFFIX)


def write_reference(path: Path, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
                    *, min_cosine: float, max_abs: float, note: str = "") -> None:
    np.savez_compressed(
        path, **{_INPUT + k: v for k, v in inputs.items()},
        **{_OUTPUT + k: v for k, v in outputs.items()},
        min_cosine=np.float64(min_cosine), max_abs=np.float64(max_abs), note=np.str_(note))


def load_reference(path: Path) -> tuple[dict, dict, float, float]:
    with np.load(path, allow_pickle=False) as data:
        inputs = {k[len(_INPUT):]: data[k] for k in data.files if k.startswith(_INPUT)}
        outputs = {k[len(_OUTPUT):]: data[k] for k in data.files if k.startswith(_OUTPUT)}
        return inputs, outputs, float(data["min_cosine"]), float(data["max_abs"])


def agreement(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(min per-sample cosine, max |Δ| relative to max |want|) of two (B, ...) arrays."""
    g = np.asarray(got, np.float64).reshape(len(want), -1)
    w = np.asarray(want, np.float64).reshape(len(want), -1)
    if g.shape != w.shape:
        raise KnownAnswerError(f"output shape {np.shape(got)} differs from the reference's "
                               f"{np.shape(want)}")
    if not np.isfinite(g).all():
        return -1.0, float("inf")
    norms = np.linalg.norm(g, axis=1) * np.linalg.norm(w, axis=1)
    cosine = (g * w).sum(axis=1) / np.maximum(norms, 1e-30)
    scale = max(float(np.abs(w).max()), 1e-30)
    return float(cosine.min()), float(np.abs(g - w).max() / scale)


def check(session, reference: Path) -> KnownAnswer:
    """Run ``session`` on the reference inputs; compare every stored output."""
    inputs, outputs, tol_cos, tol_abs = load_reference(reference)
    names = list(outputs)
    samples = len(next(iter(inputs.values())))
    # One sample per run, as the product runs images: a dynamically quantised graph computes
    # its activation scales over the whole batch.
    runs = [session.run(names, {k: v[i:i + 1] for k, v in inputs.items()})
            for i in range(samples)]
    worst_cos, worst_abs = 1.0, 0.0
    for j, name in enumerate(names):
        cos, dev = agreement(np.concatenate([r[j] for r in runs]), outputs[name])
        worst_cos, worst_abs = min(worst_cos, cos), max(worst_abs, dev)
    return KnownAnswer(reference, samples, worst_cos, worst_abs, tol_cos, tol_abs)


def saturation_risks(model_path: Path) -> list[str]:
    """Integer matmuls whose weights can saturate a u8×s8 kernel without VNNI.

    Safe: u8 weights (onnxruntime takes its u8×u8 kernel, which widens to 16 bits before
    multiplying), or s8 weights within the 7-bit range (``reduce_range``). Needs ``onnx``.
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(model_path))
    inits = {i.name: i for i in model.graph.initializer}
    risks = []
    for node in model.graph.node:
        if node.op_type not in ("MatMulInteger", "ConvInteger", "QLinearMatMul",
                                "DynamicQuantizeMatMul", "MatMulIntegerToFloat"):
            continue
        weight = inits.get(node.input[3] if node.op_type == "QLinearMatMul" else node.input[1])
        if weight is None or weight.data_type != TensorProto.INT8:
            continue
        values = numpy_helper.to_array(weight)
        if values.min() < -_SEVEN_BIT or values.max() > _SEVEN_BIT:
            risks.append(f"{node.name or node.output[0]}: s8 weights in "
                         f"[{int(values.min())}, {int(values.max())}]")
    return risks
