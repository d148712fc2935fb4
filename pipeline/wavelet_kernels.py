"""The blocked operators of :mod:`pipeline.wavelets`: slices of PyWavelets' own DWT and
inverse-DWT matrices (``pywt.dwt`` / ``pywt.idwt`` of unit impulses), checked to be
shift-invariant, so the index conventions are pywt's by construction."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pywt

#: Coefficients per block. A window of 2·BLOCK + 14 samples (db8) costs 2·BLOCK + 14
#: multiply-adds per coefficient where the filter needs 16, but smaller products use BLAS
#: less well. Measured (db8, 1000×1000, 4 levels): 8 fastest, 4 and 12 within 10 %, 16
#: 1.1–1.25×, 32 1.4–1.7× its time, 64 slower still.
BLOCK = 8
MODE = "periodization"


@dataclass(frozen=True)
class Kernels:
    """One wavelet's blocked analysis and synthesis operators for blocks of ``block``.

    Analysis: output block ``b`` (coefficients ``b·block … b·block + block − 1``) is
    ``x[2·b·block + lo : … + width] @ analysis_{a,d}`` (the signal taken periodically).
    Synthesis: output block ``b`` (samples ``2·b·block … + 2·block − 1``) is
    ``cA[b·block + c_lo : … + c_width] @ synthesis_a + cD[same] @ synthesis_d``.
    """

    block: int
    lo: int
    width: int
    analysis_a: np.ndarray  # (width, block)
    analysis_d: np.ndarray
    analysis: np.ndarray  # (width, 2·block): [analysis_a | analysis_d]
    c_lo: int
    c_width: int
    synthesis_a: np.ndarray  # (c_width, 2·block)
    synthesis_d: np.ndarray
    synthesis: np.ndarray  # (2·c_width, 2·block): their rows interleaved, a then d


def _support(rows: np.ndarray, centre: int) -> tuple[int, int]:
    """First and one-past-last nonzero column of ``rows``, relative to ``centre``."""
    nonzero = np.flatnonzero(np.any(rows != 0, axis=0))
    return int(nonzero[0]) - centre, int(nonzero[-1]) + 1 - centre


def _shift_invariant(op: np.ndarray, *, down: int, across: int) -> bool:
    """Whether ``op[i + down, j + across] == op[i, j]`` everywhere (indices periodic)."""
    return bool(np.array_equal(np.roll(op, (down, across), axis=(0, 1)), op))


@functools.cache
def kernels(wavelet: str, block: int = BLOCK) -> Kernels:
    """The blocked operators of ``wavelet``, sliced from pywt's own (cached)."""
    dec_len = pywt.Wavelet(wavelet).dec_len
    # Long enough that one block's window (and its synthesis window) sits well inside.
    half = 4 * (block + dec_len)
    size = 2 * half
    # pywt.dwt of the unit impulses: column p of the (half × size) operator is dwt(e_p).
    a, d = pywt.dwt(np.eye(size), wavelet, mode=MODE, axis=-1)
    op_a, op_d = a.T, d.T
    # pywt.idwt of unit coefficients: column i of the (size × half) operator is idwt(e_i).
    eye = np.eye(half)
    syn_a = pywt.idwt(eye, None, wavelet, mode=MODE, axis=-1).T
    syn_d = pywt.idwt(None, eye, wavelet, mode=MODE, axis=-1).T
    for op, down, across in ((op_a, 1, 2), (op_d, 1, 2), (syn_a, 2, 1), (syn_d, 2, 1)):
        if not _shift_invariant(op, down=down, across=across):
            raise ValueError(f"pywt's {wavelet} periodization operator is not shift-invariant")
    start = half // 2 - block // 2  # the block of coefficients sliced out: away from the wrap
    # Analysis: coefficient i reads samples 2i + lo … 2i + hi − 1.
    lo, hi = _support(np.vstack([op_a[start], op_d[start]]), 2 * start)
    width = 2 * (block - 1) + hi - lo
    first = 2 * start + lo
    analysis_a = np.ascontiguousarray(op_a[start: start + block, first: first + width].T)
    analysis_d = np.ascontiguousarray(op_d[start: start + block, first: first + width].T)
    # Synthesis: coefficient i writes samples 2i + rlo … 2i + rhi − 1, so the samples
    # 2s … 2s + 2·block − 1 read the coefficients s + c_lo … s + c_hi.
    rlo, rhi = _support(np.vstack([syn_a[:, start], syn_d[:, start]]), 2 * start)
    c_lo = (-rhi) // 2 + 1
    c_hi = (2 * block - 1 - rlo) // 2
    c_width = c_hi - c_lo + 1
    rows = slice(2 * start, 2 * start + 2 * block)
    cols = slice(start + c_lo, start + c_lo + c_width)
    synthesis_a = np.ascontiguousarray(syn_a[rows, cols].T)
    synthesis_d = np.ascontiguousarray(syn_d[rows, cols].T)
    # The slices hold the blocks' whole operators (nothing outside the windows).
    for op, sliced, span in ((op_a, analysis_a, slice(start, start + block)),
                             (op_d, analysis_d, slice(start, start + block))):
        if np.count_nonzero(op[span]) != np.count_nonzero(sliced):
            raise ValueError(f"{wavelet}: the analysis window misses part of the filter")
    for op, sliced in ((syn_a, synthesis_a), (syn_d, synthesis_d)):
        if np.count_nonzero(op[rows]) != np.count_nonzero(sliced):
            raise ValueError(f"{wavelet}: the synthesis window misses part of the filter")
    return Kernels(block=block, lo=lo, width=width, analysis_a=analysis_a,
                   analysis_d=analysis_d,
                   analysis=np.ascontiguousarray(np.hstack([analysis_a, analysis_d])),
                   c_lo=c_lo, c_width=c_width, synthesis_a=synthesis_a,
                   synthesis_d=synthesis_d,
                   synthesis=np.stack([synthesis_a, synthesis_d], axis=1).reshape(
                       2 * c_width, 2 * block))
