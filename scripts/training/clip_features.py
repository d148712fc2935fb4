"""CLIP block features of every corpus image and its augmented views, cached on disk."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from pipeline.clip import clip_input, embed, encoder_session, sha256_of
from pipeline.decode import InvalidImage, decode_image
from scripts.training.views import views

# The encoder file of this pool worker, set by the pool's initializer.
_WORKER: dict[str, str] = {}


def _init(encoder: str) -> None:
    _WORKER["encoder"] = encoder


def _one(args):
    path, key, n_aug, n_edit = args
    try:
        rgb = decode_image(Path(path).read_bytes(), max_pixels=100_000_000).rgb
    except (InvalidImage, OSError) as exc:
        return key, None, str(exc)
    # One view per run, as the product runs it: the encoder is dynamically quantised (its
    # activation scales are computed over the whole batch), so a view's features depend on
    # the other views in its batch; batches of 4 shifted them (cosine 0.993 against batch 1).
    session = encoder_session(_WORKER["encoder"])
    per_view = [embed(session, clip_input(v)[None])
                for v in views(rgb, key=key, n_augmented=n_aug, n_edited=n_edit)]
    return key, {n: np.concatenate([f[n] for f in per_view]) for n in per_view[0]}, None


def extract(rows, *, encoder: Path, n_augmented: int, cache: Path, workers: int = 2,
            n_edited: int = 0):
    """``{block: (n_images, 1 + n_augmented + n_edited, D)}`` for the decodable rows, plus
    failures.

    Cached in ``cache``, an .npz keyed by the rows' file names, the view counts and the
    encoder file's SHA-256: features of another encoder (a rebuilt or re-quantised file) are
    never reused.
    """
    keys = [r.file for r in rows]
    encoder_sha = sha256_of(encoder)
    blocks, ok = {}, np.zeros(len(rows), bool)
    if cache.is_file():
        data = np.load(cache, allow_pickle=False)
        if (list(data["keys"]) == keys and data["n_augmented"] == n_augmented
                and "encoder_sha256" in data.files and str(data["encoder_sha256"]) == encoder_sha
                and int(data["n_edited"]) == n_edited):
            blocks = {k: data[k] for k in data.files if k.startswith("block")}
            ok = data["ok"].copy()
    todo = [i for i in range(len(rows)) if not ok[i]]  # new rows, or ones that failed before
    jobs = [(str(rows[i].path), rows[i].file, n_augmented, n_edited) for i in todo]
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(str(encoder),)) as pool:
        results = list(pool.map(_one, jobs, chunksize=1))
    errors = []
    for i, (key, feats, err) in zip(todo, results, strict=True):
        if feats is None:
            errors.append(f"{key}: {err}")
            continue
        if not blocks:
            blocks = {n: np.zeros((len(rows), 1 + n_augmented + n_edited, f.shape[1]),
                                  np.float32)
                      for n, f in feats.items()}
        ok[i] = True
        for n in blocks:
            blocks[n][i] = feats[n]
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, keys=np.array(keys), n_augmented=n_augmented, ok=ok,
                        n_edited=n_edited, encoder_sha256=np.str_(encoder_sha),
                        errors=np.array(errors, dtype=str), **blocks)
    return blocks, ok, errors
