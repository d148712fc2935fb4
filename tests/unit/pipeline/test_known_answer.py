"""The model's numerics: the shipped encoder computes its float reference's answers on the CPU
that runs the suite, and is built so that no x86 integer kernel can saturate on it."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import clip, known_answer
from pipeline.clip import ModelFileError, encoder_session, known_answer_result
from pipeline.imaging import neutralise
from pipeline.methods.model import detect_model, known_answers, resolve_model_path
from storage.seed import default_model_configuration
from testkit.images import noisy_photo

PARAMS = default_model_configuration().parameters.model_dump()
ENCODER = resolve_model_path(PARAMS["encoder_path"])


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return "unknown CPU"
    return "avx512_vnni" if "avx512_vnni" in flags.split() else "no avx512_vnni"


def test_shipped_encoder_agrees_with_its_float_reference_on_this_cpu():
    reference = known_answer.reference_path(ENCODER)
    assert reference.is_file(), "the shipped encoder must ship its known-answer reference"
    result = known_answer.check(encoder_session(str(ENCODER), PARAMS["encoder_sha256"]),
                                reference)
    assert result.samples >= 4
    # Tolerances live in the reference file (scripts/build_clip_encoder.py); state them here
    # too so a loosened file cannot pass silently.
    assert result.tolerance_cosine >= 0.93 and result.tolerance_abs <= 0.15
    assert result.ok, f"{result.summary()} on a CPU with {_cpu_flags()}"


def test_shipped_encoder_cannot_saturate_on_any_x86_kernel():
    # On a VNNI CPU even full-range s8 weights pass the check above: the construction is
    # what guarantees the answers on every other CPU.
    assert known_answer.saturation_risks(ENCODER) == []


def _matmul_integer_model(path, weights: np.ndarray) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "w"], ["y"])], "m",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, weights.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, weights.shape[1]])],
        initializer=[numpy_helper.from_array(weights, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


@pytest.mark.parametrize(("weights", "risky"), [
    (np.array([[-127, 5], [90, 127]], np.int8), True),      # full range: vpmaddubsw saturates
    (np.array([[-64, 5], [64, 12]], np.int8), False),       # reduce_range: ≤ 64 fits int16
    (np.array([[-65, 5], [3, 12]], np.int8), True),
    (np.array([[0, 255], [128, 3]], np.uint8), False),      # u8: the u8×u8 kernel widens
])
def test_saturation_risks_reads_the_weights(tmp_path, weights, risky):
    path = tmp_path / "m.onnx"
    _matmul_integer_model(path, weights)
    assert bool(known_answer.saturation_risks(path)) is risky


def _beside_shipped(tmp_path, name: str):
    """The shipped encoder under another name (a symlink), so a reference can sit beside it."""
    link = tmp_path / name
    link.symlink_to(ENCODER)
    return link


def test_a_model_that_misses_its_known_answers_is_refused_with_the_reason(tmp_path):
    link = _beside_shipped(tmp_path, "clip_miscomputed.onnx")
    inputs, outputs, min_cos, max_abs = known_answer.load_reference(
        known_answer.reference_path(ENCODER))
    # What a saturating kernel does to the features, in effect: the answers move.
    rng = np.random.default_rng(0)
    wrong = {k: v + rng.normal(0, float(np.abs(v).std()), v.shape).astype(v.dtype)
             for k, v in outputs.items()}
    known_answer.write_reference(known_answer.reference_path(link), inputs, wrong,
                                 min_cosine=min_cos, max_abs=max_abs)
    params = {**PARAMS, "encoder_path": str(link), "encoder_sha256": None}
    with pytest.raises(ModelFileError, match="fails its known-answer check on this CPU"):
        known_answers(params)
    # The method raises (the task records status=error with this reason), never a probability.
    with pytest.raises(ModelFileError, match=r"clip_miscomputed\.onnx fails its known-answer"):
        detect_model(neutralise(noisy_photo(rows=256, cols=256)), params)


def test_a_broken_reference_file_is_named(tmp_path):
    link = _beside_shipped(tmp_path, "clip_badref.onnx")
    known_answer.reference_path(link).write_bytes(b"not an npz")
    with pytest.raises(ModelFileError, match="known-answer check could not run"):
        encoder_session(str(link))


def test_the_check_runs_once_per_process_and_reports_its_figures(monkeypatch):
    calls = []
    real = known_answer.check
    monkeypatch.setattr(clip.known_answer, "check",
                        lambda *a: calls.append(1) or real(*a))
    clip._checked_session.cache_clear()
    try:
        first = known_answer_result(str(ENCODER), PARAMS["encoder_sha256"])
        second = known_answer_result(str(ENCODER), PARAMS["encoder_sha256"])
    finally:
        clip._checked_session.cache_clear()
    assert calls == [1] and first is second and first.ok
    assert set(known_answers(PARAMS)) == {"encoder", "model"}


def _matmul_integer(weights: np.ndarray, x: np.ndarray, *, zero_point=None) -> np.ndarray:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    inputs, inits = ["x", "w"], [numpy_helper.from_array(weights, "w")]
    if zero_point is not None:
        inputs += ["x_zero", "w_zero"]
        inits += [numpy_helper.from_array(np.array(0, np.uint8), "x_zero"),
                  numpy_helper.from_array(zero_point, "w_zero")]
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", inputs, ["y"])], "m",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [None, weights.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [None, weights.shape[1]])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0].astype(np.int64)


def test_the_shipped_weight_forms_multiply_exactly_on_this_cpu():
    """The mechanism, on whatever CPU runs the suite: with bright activations (u8 near 255),
    7-bit s8 weights and u8 weights give the exact integer products. (Full-range s8 weights
    give them too on a VNNI CPU, and do not without one: 137,631 off in 549,278 under
    `qemu-x86_64 -cpu Haswell`, MODEL_CARD.md.)"""
    rng = np.random.default_rng(0)
    x = rng.integers(200, 256, (4, 256)).astype(np.uint8)
    full = rng.integers(-127, 128, (256, 64)).astype(np.int8)
    seven_bit = np.clip(np.round(full * 63 / 127), -63, 63).astype(np.int8)
    as_u8 = (full.astype(np.int16) + 128).astype(np.uint8)
    exact = x.astype(np.int64) @ full.astype(np.int64)
    assert np.array_equal(_matmul_integer(seven_bit, x),
                          x.astype(np.int64) @ seven_bit.astype(np.int64))
    assert np.array_equal(_matmul_integer(as_u8, x, zero_point=np.array(128, np.uint8)), exact)


def test_a_missing_file_is_not_remembered_but_a_failed_check_is(tmp_path):
    late = tmp_path / "clip_late.onnx"
    with pytest.raises(ModelFileError, match="not found"):
        encoder_session(str(late))
    late.symlink_to(ENCODER)  # the operator puts the file in place: no restart needed
    assert encoder_session(str(late)) is not None
    # A refused file is refused again with a fresh exception (no traceback piles up).
    bad = _beside_shipped(tmp_path, "clip_refused.onnx")
    known_answer.reference_path(bad).write_bytes(b"not an npz")
    errors = []
    for _ in range(2):
        with pytest.raises(ModelFileError) as caught:
            encoder_session(str(bad))
        errors.append(caught.value)
    assert errors[0] is not errors[1] and str(errors[0]) == str(errors[1])
