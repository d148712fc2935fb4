"""Where the voting model saw AI: occlusion sensitivity of the CLIP probe over its own view.

The probe reads the CLS tokens of the whole 224 × 224 view; no patch of it has a score of its
own (the head applied to patch tokens instead of CLS tokens is off its training distribution:
on the corpus, patches of AI images scored *lower* than patches of photographs, and on a
half-AI, half-photo composite the AI half scored lower in 3 of 4 pairs). So the map asks the
model itself: the view is cut into a ``grid`` × ``grid`` lattice of cells, each cell in turn
is replaced by a Gaussian blur of itself (removing fine generation traces, keeping colour and
layout), and the probe's log-odds are computed again. A cell's value is how many log-odds of
P(AI) the cell's fine detail adds: positive pulls towards AI, negative towards a photograph.
Cost: ``grid²`` extra encoder runs of one image each (the encoder's activation scales are
per batch, so cells are never batched together).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from pipeline.clip import CLIP_SIDE
from pipeline.imaging import gaussian_blur

#: Cells per side; 3 → 9 extra encoder runs. 0 turns the map off.
DEFAULT_GRID = 3
#: Blur of an occluded cell, in view pixels (a ViT-B/16 patch is 16).
BLUR_SIGMA = 6.0
_P_EDGE = 1e-7  # a float32 sigmoid saturates: log-odds are read within ±16


def log_odds(p: float) -> float:
    p = min(max(float(p), _P_EDGE), 1.0 - _P_EDGE)
    return math.log(p / (1.0 - p))


def cells(grid: int, side: int = CLIP_SIDE) -> list[tuple[int, int, int, int]]:
    """(row0, row1, col0, col1) of each cell, row-major; edges as even as integers allow."""
    edges = np.linspace(0, side, grid + 1).round().astype(int)
    return [(int(edges[i]), int(edges[i + 1]), int(edges[j]), int(edges[j + 1]))
            for i in range(grid) for j in range(grid)]


def occlusion_map(view: np.ndarray, probability: Callable[[np.ndarray], float], *,
                  grid: int = DEFAULT_GRID, base: float | None = None) -> dict:
    """The model's own map of ``view``.

    Parameters
    ----------
    view : (3, S, S) float32 ndarray
        The model's input (:func:`pipeline.clip.clip_input`).
    probability : callable
        ``(1, 3, S, S) → P(AI)`` of the voting model (raw head output, before any threshold).
    grid : int
        Cells per side.
    base : float, optional
        ``probability(view)`` when the caller already has it.

    Returns
    -------
    dict
        ``grid``, ``delta_log_odds`` (rows of columns: log-odds the cell adds), ``base_log_odds``,
        ``blur_sigma`` and ``cpu_seconds`` (process CPU time spent on the map).
    """
    started = time.process_time()
    if base is None:
        base = probability(view[None])
    z0 = log_odds(base)
    blurred = np.stack([gaussian_blur(c, BLUR_SIGMA, mode="reflect") for c in view]).astype(
        view.dtype)
    side = view.shape[1]
    delta = np.zeros((grid, grid))
    for k, (r0, r1, c0, c1) in enumerate(cells(grid, side)):
        occluded = view.copy()
        occluded[:, r0:r1, c0:c1] = blurred[:, r0:r1, c0:c1]
        delta.flat[k] = z0 - log_odds(probability(occluded[None]))
    return {"kind": "occlusion", "grid": grid, "blur_sigma": BLUR_SIGMA,
            "base_log_odds": round(z0, 4),
            "delta_log_odds": np.round(delta, 4).tolist(),
            "cpu_seconds": round(time.process_time() - started, 4)}


def view_box(shape: tuple[int, int], neutral_side: int) -> dict:
    """The region of the original image the model saw, in its pixels: the neutral view is the
    central ``neutral_side`` window and the CLIP view its central square (resized to 224)."""
    rows, cols = shape[:2]
    side = min(rows, cols, neutral_side)
    return {"x": (cols - min(cols, neutral_side)) // 2 + (min(cols, neutral_side) - side) // 2,
            "y": (rows - min(rows, neutral_side)) // 2 + (min(rows, neutral_side) - side) // 2,
            "width": side, "height": side}
