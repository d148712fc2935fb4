"""Which view of an image should the CLIP probe read? Leave-one-source-out, side by side.

Each corpus image's neutral view (centre crop ≤ 1024, JPEG q90) is shown to the shipped encoder
as: CLIP's own view (short side to 224, centre crop: what the product reads), its mirror image,
the whole view squashed to 224 × 224, a tighter crop (short side to 288, centre 224), and five
224 × 224 crops at native resolution (no resize: generator traces in fine detail survive).
The same probe as the shipped one (linear SVM, C = 0.0003, trained per held-out source) is
fitted on each view or combination; the table gives the LOSO AUC, the TPR at 5 % FPR and the
share of AI caught at the lowest threshold that keeps every real source ≤ 5 % called AI (the
shipped selection rule, scripts/train_model.py). Figures: pipeline/assets/MODEL_CARD.md.

    python scripts/compare_views.py [--corpus ../shared/corpus] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.clip import (  # noqa: E402
    CLIP_MEAN,
    CLIP_SIDE,
    CLIP_STD,
    clip_input,
    embed,
    encoder_session,
)
from pipeline.decode import InvalidImage, decode_image  # noqa: E402
from pipeline.imaging import neutralise  # noqa: E402
from pipeline.metrics import roc_auc, tpr_at_fpr  # noqa: E402
from scripts.train_model import ENCODER, ENCODER_OUTPUT  # noqa: E402
from scripts.training import stacking  # noqa: E402
from scripts.training.corpus import load_rows  # noqa: E402
from scripts.training.probe import fit_probe, probe_logit  # noqa: E402

VIEWS = ("clip", "mirror", "squash", "tight", "native centre", "native 1", "native 2",
         "native 3", "native 4")
C = 0.0003


def _normalised(pixels: np.ndarray) -> np.ndarray:
    x = (pixels.astype(np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def _native(view: np.ndarray, cy: int, cx: int) -> np.ndarray:
    """A 224 px crop at native resolution centred near (cy, cx); CLIP's view if too small."""
    h, w = view.shape[:2]
    if min(h, w) < CLIP_SIDE:
        return clip_input(view)
    half = CLIP_SIDE // 2
    top, left = int(np.clip(cy - half, 0, h - CLIP_SIDE)), int(np.clip(cx - half, 0, w - CLIP_SIDE))
    return _normalised(view[top:top + CLIP_SIDE, left:left + CLIP_SIDE])


def _views(rgb: np.ndarray) -> list[np.ndarray]:
    v = neutralise(rgb)
    h, w = v.shape[:2]
    clip = clip_input(v)
    squash = np.asarray(Image.fromarray(v).resize((CLIP_SIDE, CLIP_SIDE),
                                                  Image.Resampling.BICUBIC))
    margin = (288 - CLIP_SIDE) // 2
    tight = clip_input(v, side=288)[:, margin:margin + CLIP_SIDE, margin:margin + CLIP_SIDE]
    return [clip, np.ascontiguousarray(clip[:, :, ::-1]), _normalised(squash),
            np.ascontiguousarray(tight), _native(v, h // 2, w // 2),
            _native(v, h // 4, w // 4), _native(v, h // 4, 3 * w // 4),
            _native(v, 3 * h // 4, w // 4), _native(v, 3 * h // 4, 3 * w // 4)]


def _features(path: str) -> np.ndarray | None:
    try:
        rgb = decode_image(Path(path).read_bytes(), max_pixels=100_000_000).rgb
    except (InvalidImage, OSError):
        return None
    session = encoder_session(str(ENCODER))
    names = ENCODER_OUTPUT.split(",")
    # One view per run, as the product runs it (dynamic quantisation: see pipeline/clip.py).
    out = [embed(session, x[None], outputs=names) for x in _views(rgb)]
    return np.stack([np.concatenate([o[n] for n in names], axis=1)[0] for o in out])


def held_out(train: np.ndarray, test: np.ndarray, y, sources, ok) -> np.ndarray:
    """Mean held-out decision value over the test views; the probe trained on the train views."""
    out = np.full(len(y), np.nan)
    for source in np.unique(sources[ok]):
        te, tr = ok & (sources == source), ok & (sources != source)
        k = train.shape[1]
        model = fit_probe(train[tr].reshape(-1, train.shape[2]), np.repeat(y[tr], k), C=C,
                          kind="svm")
        out[te] = probe_logit(model, test[te].reshape(-1, test.shape[2])
                              ).reshape(te.sum(), -1).mean(axis=1)
    return out


def caught_at_source_bound(scores, y, groups, ok) -> float:
    """AI caught at the lowest threshold where every real group stays ≤ 5 % called AI."""
    real_groups = np.unique(groups[ok & (y == 0)])
    for threshold in np.sort(scores[ok]):
        if max((scores[ok & (groups == g) & (y == 0)] >= threshold).mean()
               for g in real_groups) <= 0.05:  # the shipped bound
            return float((scores[ok & (y == 1)] >= threshold).mean())
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rows = load_rows(args.corpus)
    with ProcessPoolExecutor(args.workers) as pool:
        feats = list(pool.map(_features, [str(r.path) for r in rows], chunksize=4))
    ok = np.array([f is not None for f in feats])
    width = next(f for f in feats if f is not None).shape
    F = np.stack([f if f is not None else np.zeros(width, np.float32) for f in feats])
    y = np.array([r.label for r in rows])
    sources = np.array([r.source for r in rows])
    groups = stacking.real_source_groups(sources, y)
    v = {name: F[:, [i]] for i, name in enumerate(VIEWS)}
    natives = F[:, 4:9]
    candidates = {
        "clip (shipped)": (v["clip"], v["clip"]),
        "squash": (v["squash"], v["squash"]),
        "tight": (v["tight"], v["tight"]),
        "native centre": (v["native centre"], v["native centre"]),
        "5 native crops (mean)": (natives, natives),
        "clip + native centre, side by side":
            (np.concatenate([v["clip"], v["native centre"]], 2),) * 2,
        "clip trained, clip + mirror averaged":
            (v["clip"], np.concatenate([v["clip"], v["mirror"]], 1)),
        "clip + mirror + squash, trained and averaged": (F[:, :3], F[:, :3]),
    }
    print(f"{len(rows)} images ({int(y.sum())} AI), {int(ok.sum())} decoded; "
          f"encoder {ENCODER.name}")
    print("| view | LOSO AUC | TPR at 5 % FPR | AI caught, every real source ≤ 5 % |")
    print("|---|---|---|---|")
    for name, (train, test) in candidates.items():
        s = held_out(train, test, y, sources, ok)
        print(f"| {name} | {roc_auc(y[ok], s[ok]):.3f} | {tpr_at_fpr(y[ok], s[ok], fpr=0.05):.2f} "
              f"| {caught_at_source_bound(s, y, groups, ok):.2f} |", flush=True)


if __name__ == "__main__":
    main()
