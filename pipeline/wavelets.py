"""PyWavelets' 2-D multilevel DWT in periodization mode, as blocked matrix products.

:func:`wavedec2` and :func:`waverec2` return and take pywt's coefficient structure and values
(``pywt.wavedec2(x, wavelet, mode="periodization", level=...)`` and its inverse), to float64
rounding, in about half its time (1000×1000, 4 levels). pywt convolves with scalar C
loops; here a 1-D pass cuts the signal into blocks of ``2 · BLOCK`` samples, and each block's
``BLOCK`` approximation and ``BLOCK`` detail coefficients are the product of the window of
samples they read (a strided view, no copy) with a kernel matrix, so BLAS does the arithmetic.
The synthesis is the same with the inverse's kernels, each block of ``2 · BLOCK`` samples
reading a window of both coefficient arrays.

A 2-D level goes strip by strip (:data:`STRIP_ROWS` rows): the column pass of a strip into a
small buffer that stays in cache, its rows padded there periodically, then the strip's row
pass straight into the outputs; only the few blocks whose windows wrap around the first and
last rows are gathered copies.

The kernel matrices (:mod:`pipeline.wavelet_kernels`) are slices of pywt's own operators
(``pywt.dwt`` / ``pywt.idwt`` of unit impulses), checked to be shift-invariant (two samples
in, one coefficient out), so the index conventions are pywt's by construction. Odd lengths
are extended by their last sample, as pywt does. Whatever the fast path does not cover
(other modes are not offered; other dtypes, ``Wavelet`` objects, other dimensions, signals
shorter than a few blocks) is pywt's own.
"""

from __future__ import annotations

import numpy as np
import pywt
from numpy.lib.stride_tricks import as_strided

# The operators (BLOCK coefficients a block) live in their own module; re-exported here.
from pipeline.wavelet_kernels import BLOCK, MODE, Kernels, kernels

__all__ = ["BLOCK", "MODE", "Kernels", "dwt2", "idwt2", "kernels", "wavedec2", "waverec2"]

#: Signals with fewer coefficients than this many blocks go to pywt (nothing to gain).
MIN_BLOCKS = 2
#: Rows per strip of a 2-D level (coefficient rows of an analysis, output rows of a
#: synthesis), whose buffer stays in cache: 64 to 256 measured alike.
STRIP_ROWS = 128
#: Largest product (m·n·k multiply-adds) handed to BLAS at once. OpenBLAS threads a gemm
#: from 65536 · GEMM_MULTITHREAD_THRESHOLD (4 by default) = 2¹⁸ of them; on products this
#: thin its threads' start-up and spinning cost more CPU than they save (measured: 1.5–2×
#: the process time with 2 threads on a busy machine), and the workers' processes are the
#: parallelism (as onnxruntime's one thread each in pipeline/clip.py).
MAX_PRODUCT = 1 << 18
COEFF_NDIM = 2
DETAILS = 3


def _windows(x: np.ndarray, offset: int, count: int, step: int, width: int,
             axis: int) -> np.ndarray:
    """``count`` windows of ``width`` samples along ``axis`` of 2-D ``x``, every ``step``
    from ``offset`` (a view): (count, rows, width) along axis 1, (count, width, cols) along 0."""
    s0, s1 = x.strides
    if axis == 1:
        return as_strided(x[:, offset:], shape=(count, x.shape[0], width),
                          strides=(step * s1, s0, s1), writeable=False)
    return as_strided(x[offset:], shape=(count, width, x.shape[1]),
                      strides=(step * s0, s0, s1), writeable=False)


def _blocks_view(out: np.ndarray, first: int, count: int, size: int, axis: int) -> np.ndarray:
    """``count`` consecutive blocks of ``size`` along ``axis`` of 2-D ``out`` from ``first``,
    shaped as :func:`_windows` (a writable view)."""
    s0, s1 = out.strides
    if axis == 1:
        return as_strided(out[:, first:], shape=(count, out.shape[0], size),
                          strides=(size * s1, s0, s1))
    return out[first: first + count * size].reshape(count, size, out.shape[1])


def _apply(windows: np.ndarray, kernel: np.ndarray, axis: int,
           out: np.ndarray | None = None) -> np.ndarray:
    """Windows (as :func:`_windows` shapes them, or one window) times a (width × size)
    kernel: the blocks' values, shaped as :func:`_blocks_view` shapes them."""
    if axis == 1:
        return np.matmul(windows, kernel, out=out)
    return np.matmul(kernel.T, windows, out=out)


def _take(x: np.ndarray, start: int, width: int, period: int, axis: int) -> np.ndarray:
    """The window of ``width`` samples from ``start`` along ``axis`` of ``x`` taken
    periodically (``period``: the length, + 1 for an odd one, whose last sample repeats)."""
    idx = np.minimum((start + np.arange(width)) % period, x.shape[axis] - 1)
    return x[:, idx] if axis == 1 else x[idx]


def _put(out: np.ndarray, start: int, values: np.ndarray, size: int, axis: int) -> None:
    """Write the first ``size`` of one block's values along ``axis``."""
    if axis == 1:
        out[:, start: start + size] = values[:, :size]
    else:
        out[start: start + size] = values[:size]


def _interior(length: int, span: int, block: int, step: int, lo: int,
              width: int) -> tuple[int, int]:
    """The blocks ``first … stop − 1`` (of ``block`` outputs out of ``span``) that are whole
    and whose windows (``width`` inputs from ``b·step + lo``) lie inside the ``length``
    inputs: those read the array itself, the others a periodically gathered copy."""
    first = max(0, -(lo // step))
    stop = max(first, min(span // block, (length - lo - width) // step + 1))
    return first, stop


def _fast(length: int, k: Kernels) -> bool:
    """Whether a pass over ``length`` inputs (samples or coefficients) is blocked: enough
    blocks to gain, and windows shorter than the signal (they wrap around at most once)."""
    half = (length + 1) // 2
    return half >= MIN_BLOCKS * k.block and length >= k.width and half >= k.c_width


def _analysis(x: np.ndarray, k: Kernels, axis: int, out_a: np.ndarray,
              out_d: np.ndarray) -> None:
    """One blocked DWT pass along ``axis`` of 2-D ``x`` (unit stride along axis 1), into the
    approximation and detail arrays ``out_a`` and ``out_d``."""
    size = x.shape[axis]
    extended = size + (size & 1)  # pywt repeats the last sample of an odd length
    half = extended // 2
    block, step = k.block, 2 * k.block
    first, stop = _interior(size, half, block, step, k.lo, k.width)
    if stop > first:
        windows = _windows(x, first * step + k.lo, stop - first, step, k.width, axis)
        for kernel, out in ((k.analysis_a, out_a), (k.analysis_d, out_d)):
            _apply(windows, kernel, axis,
                   out=_blocks_view(out, first * block, stop - first, block, axis))
    for b in (*range(first), *range(stop, -(-half // block))):
        values = _apply(_take(x, b * step + k.lo, k.width, extended, axis), k.analysis, axis)
        n = min(block, half - b * block)
        detail = values[:, block:] if axis == 1 else values[block:]
        _put(out_a, b * block, values, n, axis)
        _put(out_d, b * block, detail, n, axis)


def _synthesis(ca: np.ndarray, cd: np.ndarray, k: Kernels, axis: int, out: np.ndarray) -> None:
    """One blocked inverse DWT pass along ``axis`` of 2-D ``ca`` and ``cd`` (one shape, unit
    stride along axis 1) into ``out`` (twice as long along ``axis``)."""
    half = ca.shape[axis]
    block, step = k.block, 2 * k.block
    first, stop = _interior(half, half, block, block, k.c_lo, k.c_width)
    if stop > first:
        count, start = stop - first, first * block + k.c_lo
        view = _blocks_view(out, first * step, count, step, axis)
        _apply(_windows(ca, start, count, block, k.c_width, axis), k.synthesis_a, axis,
               out=view)
        view += _apply(_windows(cd, start, count, block, k.c_width, axis), k.synthesis_d,
                       axis)
    for b in (*range(first), *range(stop, -(-half // block))):
        start = b * block + k.c_lo
        values = _apply(_take(ca, start, k.c_width, half, axis), k.synthesis_a, axis)
        values += _apply(_take(cd, start, k.c_width, half, axis), k.synthesis_d, axis)
        _put(out, b * step, values, min(step, 2 * half - b * step), axis)


def _dwt_axis(x: np.ndarray, k: Kernels, wavelet: str, axis: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """``pywt.dwt(x, wavelet, mode="periodization", axis=axis)`` of a C-contiguous 2-D
    float64 array."""
    if not _fast(x.shape[axis], k):
        return pywt.dwt(x, wavelet, mode=MODE, axis=axis)
    half = (x.shape[axis] + 1) // 2
    shape = (x.shape[0], half) if axis == 1 else (half, x.shape[1])
    ca, cd = np.empty(shape), np.empty(shape)
    _analysis(x, k, axis, ca, cd)
    return ca, cd


def _idwt_axis(ca: np.ndarray, cd: np.ndarray, k: Kernels, wavelet: str, axis: int
               ) -> np.ndarray:
    """``pywt.idwt(ca, cd, wavelet, mode="periodization", axis=axis)`` of C-contiguous 2-D
    float64 arrays of one shape."""
    if not _fast(2 * ca.shape[axis], k):
        return pywt.idwt(ca, cd, wavelet, mode=MODE, axis=axis)
    shape = (ca.shape[0], 2 * ca.shape[1]) if axis == 1 else (2 * ca.shape[0], ca.shape[1])
    out = np.empty(shape)
    _synthesis(ca, cd, k, axis, out)
    return out


def _strided(a: np.ndarray, offset: int, shape: tuple[int, ...],
             strides: tuple[int, ...]) -> np.ndarray:
    """A view of C-contiguous ``a`` from element ``offset`` (shape and strides in elements;
    numpy checks that it stays inside ``a``). Cheaper than ``as_strided`` in the loops."""
    size = a.itemsize
    return np.ndarray(shape, a.dtype, buffer=a, offset=offset * size,
                      strides=tuple(s * size for s in strides))


def _padding(length: int, period: int, left: int, padded: int) -> tuple[np.ndarray, np.ndarray]:
    """The columns of a row padded to ``padded`` samples around its ``length`` (from column
    ``left``) that are outside it, and the columns they copy: the signal taken with
    ``period`` (``length`` + 1 for an odd analysis, whose last sample repeats)."""
    columns = np.r_[0:left, left + length: padded]
    return columns, left + np.minimum((columns - left) % period, length - 1)


def _columns_product(kernel: np.ndarray, samples: np.ndarray, out: np.ndarray,
                     scratch: np.ndarray | None = None) -> None:
    """``out = kernel @ samples`` (or ``out += …`` into ``scratch`` first, when given) for
    (m × width) ``kernel`` and (count, width, n) ``samples``, in slices of columns of at most
    :data:`MAX_PRODUCT` multiply-adds per product."""
    cols = samples.shape[2]
    piece = max(1, MAX_PRODUCT // (kernel.shape[0] * kernel.shape[1]))
    for c0 in range(0, cols, piece):
        part = slice(c0, min(c0 + piece, cols))
        if scratch is None:
            np.matmul(kernel, samples[..., part], out=out[..., part])
        else:
            out[..., part] += np.matmul(kernel, samples[..., part], out=scratch[..., part])


def _dwt2(x: np.ndarray, k: Kernels, wavelet: str
          ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One level of the 2-D DWT of a C-contiguous float64 array.

    Strip by strip: the column pass of a few blocks of coefficient rows into a small buffer,
    each row padded periodically there, then the strip's row pass straight into the four
    outputs. With an axis too short to block, one pass after the other (that axis pywt's).
    """
    rows, cols = x.shape
    if not (_fast(rows, k) and _fast(cols, k)):
        low, high = _dwt_axis(x, k, wavelet, axis=1)
        ll, ch = _dwt_axis(np.ascontiguousarray(low), k, wavelet, axis=0)
        cv, cd = _dwt_axis(np.ascontiguousarray(high), k, wavelet, axis=0)
        return ll, (ch, cv, cd)
    n0, n1 = (rows + 1) // 2, (cols + 1) // 2
    block, step, width, lo = k.block, 2 * k.block, k.width, k.lo
    ll, ch, cv, cd = (np.empty((n0, n1)) for _ in range(4))
    # The strips: the column pass's approximation and detail rows, padded for the row pass.
    left = max(0, -lo)
    whole, count = n1 // block, -(-n1 // block)
    padded = max(left + cols, left + lo + (count - 1) * step + width)
    columns, sources = _padding(cols, 2 * n1, left, padded)
    chunk = max(1, STRIP_ROWS // block)
    strip_rows = chunk * block
    strips = np.empty((2, strip_rows, padded))
    middles = [strips[s, :, left: left + cols].reshape(chunk, block, cols) for s in (0, 1)]
    windows = [_strided(strips, s * strip_rows * padded + left + lo, (whole, strip_rows, width),
                        (step, padded, 1)) for s in (0, 1)]
    tail = left + lo + whole * step  # the window of the last, partial, block of a row
    first, stop = _interior(rows, n0, block, step, lo, width)
    inside = _strided(x, (first * step + lo) * cols, (stop - first, width, cols),
                      (step * cols, cols, 1)) if stop > first else None

    def strip(samples: np.ndarray, b: int, n: int) -> None:
        """Blocks ``b …`` of coefficient rows (``n`` rows) from their windows of rows."""
        c = samples.shape[0]
        _columns_product(k.analysis_a.T, samples, middles[0][:c])
        _columns_product(k.analysis_d.T, samples, middles[1][:c])
        strips[:, :n, columns] = strips[:, :n, sources]
        row = b * block
        for s, (out_a, out_d) in enumerate(((ll, cv), (ch, cd))):
            rows_in = windows[s][:, :n]
            for kernel, out in ((k.analysis_a, out_a), (k.analysis_d, out_d)):
                np.matmul(rows_in, kernel, out=_strided(out, row * n1, (whole, n, block),
                                                        (block, n1, 1)))
            if whole < count:
                values = strips[s, :n, tail: tail + width] @ k.analysis
                m = n1 - whole * block
                out_a[row: row + n, whole * block:] = values[:, :m]
                out_d[row: row + n, whole * block:] = values[:, block: block + m]

    for b in range(first, stop, chunk):
        c = min(chunk, stop - b)
        strip(inside[b - first: b - first + c], b, c * block)
    for b in (*range(first), *range(stop, -(-n0 // block))):
        window = _take(x, b * step + lo, width, 2 * n0, axis=0)[None]
        strip(window, b, min(block, n0 - b * block))
    return ll, (ch, cv, cd)


def _idwt2(ll: np.ndarray, ch: np.ndarray, cv: np.ndarray, cd: np.ndarray, k: Kernels,
           wavelet: str) -> np.ndarray:
    """One level of the inverse 2-D DWT of C-contiguous float64 arrays of one shape.

    Strip by strip as :func:`_dwt2`: the column synthesis of a few blocks of output rows
    into a padded strip, then its row synthesis straight into the output.
    """
    n0, n1 = ll.shape
    if not (_fast(2 * n0, k) and _fast(2 * n1, k)):
        low = _idwt_axis(ll, ch, k, wavelet, axis=0)
        high = _idwt_axis(cv, cd, k, wavelet, axis=0)
        return _idwt_axis(np.ascontiguousarray(low), np.ascontiguousarray(high), k, wavelet,
                          axis=1)
    block, step, width, lo = k.block, 2 * k.block, k.c_width, k.c_lo
    out = np.empty((2 * n0, 2 * n1))
    # The strips: the column synthesis's rows, approximation and detail (along axis 1)
    # interleaved sample by sample, padded: one product with the interleaved kernel.
    left = max(0, -lo)
    whole, count = n1 // block, -(-n1 // block)
    padded = max(left + n1, left + lo + (count - 1) * block + width)
    columns, sources = _padding(n1, n1, left, padded)
    chunk = max(1, STRIP_ROWS // step)
    strip_rows = chunk * step
    strips = np.empty((strip_rows, padded, 2))
    windows = _strided(strips, 2 * (left + lo), (whole, strip_rows, 2 * width),
                       (2 * block, 2 * padded, 1))
    tail = left + lo + whole * block
    low, share = np.empty((chunk, step, n1)), np.empty((chunk, step, n1))
    first, stop = _interior(n0, n0, block, block, lo, width)
    inside = [_strided(band, (first * block + lo) * n1, (stop - first, width, n1),
                       (block * n1, n1, 1)) if stop > first else None
              for band in (ll, ch, cv, cd)]

    def strip(coefficients: list[np.ndarray], b: int, n: int) -> None:
        """Blocks ``b …`` of output rows (``n`` rows) from their windows of coefficients."""
        c = coefficients[0].shape[0]
        for s in (0, 1):
            _columns_product(k.synthesis_a.T, coefficients[2 * s], low[:c])
            _columns_product(k.synthesis_d.T, coefficients[2 * s + 1], low[:c], share[:c])
            strips[:n, left: left + n1, s] = low[:c].reshape(c * step, n1)[:n]
        strips[:n, columns] = strips[:n, sources]
        row = b * step
        np.matmul(windows[:, :n], k.synthesis,
                  out=_strided(out, row * 2 * n1, (whole, n, step), (step, 2 * n1, 1)))
        if whole < count:
            values = strips[:n, tail: tail + width].reshape(n, 2 * width) @ k.synthesis
            out[row: row + n, whole * step:] = values[:, : 2 * n1 - whole * step]

    for b in range(first, stop, chunk):
        c = min(chunk, stop - b)
        strip([w[b - first: b - first + c] for w in inside], b, c * step)
    for b in (*range(first), *range(stop, -(-n0 // block))):
        gathered = [_take(band, b * block + lo, width, n0, axis=0)[None]
                    for band in (ll, ch, cv, cd)]
        strip(gathered, b, min(step, 2 * n0 - b * step))
    return out


def dwt2(x: np.ndarray, wavelet: str = "db8"
         ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``pywt.dwt2(x, wavelet, mode="periodization")`` of a 2-D float64 array."""
    x = np.asarray(x)
    if not _supported(x, wavelet):
        return pywt.dwt2(x, wavelet, mode=MODE)
    return _dwt2(np.ascontiguousarray(x), kernels(wavelet, BLOCK), wavelet)


def idwt2(coeffs: tuple, wavelet: str = "db8") -> np.ndarray:
    """``pywt.idwt2(coeffs, wavelet, mode="periodization")`` of 2-D float64 arrays."""
    ca, (ch, cv, cd) = coeffs
    arrays = [np.asarray(c) if c is not None else None for c in (ca, ch, cv, cd)]
    if not all(c is not None and _supported(c, wavelet) and c.shape == arrays[0].shape
               for c in arrays):
        return pywt.idwt2(coeffs, wavelet, mode=MODE)
    ca, ch, cv, cd = (np.ascontiguousarray(c) for c in arrays)
    return _idwt2(ca, ch, cv, cd, kernels(wavelet, BLOCK), wavelet)


def _supported(x: np.ndarray, wavelet: object) -> bool:
    """Whether the fast path computes this (else pywt does)."""
    return isinstance(wavelet, str) and x.ndim == COEFF_NDIM and x.dtype == np.float64


def wavedec2(x: np.ndarray, wavelet: str = "db8", level: int | None = None) -> list:
    """``pywt.wavedec2(x, wavelet, mode="periodization", level=level)``: the same list
    ``[cA_n, (cH_n, cV_n, cD_n), …, (cH_1, cV_1, cD_1)]``, the same values."""
    x = np.asarray(x)
    if not _supported(x, wavelet):
        return pywt.wavedec2(x, wavelet, mode=MODE, level=level)
    most = pywt.dwtn_max_level(x.shape, wavelet)
    if level is None:
        level = most
    if level < 0 or level > most:  # pywt raises, or warns that the level is too high
        return pywt.wavedec2(x, wavelet, mode=MODE, level=level)
    details = []
    a = x
    for _ in range(level):
        a, d = dwt2(a, wavelet)
        details.append(d)
    return [a, *reversed(details)]


def waverec2(coeffs: list, wavelet: str = "db8") -> np.ndarray:
    """``pywt.waverec2(coeffs, wavelet, mode="periodization")``: the inverse of
    :func:`wavedec2`, the same values."""
    if not isinstance(coeffs, list | tuple) or len(coeffs) < 1 or not isinstance(wavelet, str):
        return pywt.waverec2(coeffs, wavelet, mode=MODE)
    if len(coeffs) == 1:
        return coeffs[0]
    a = np.asarray(coeffs[0])
    for d in coeffs[1:]:
        if not isinstance(d, list | tuple) or len(d) != DETAILS or any(c is None for c in d):
            return pywt.waverec2(coeffs, wavelet, mode=MODE)  # its errors, its None handling
        shape = np.shape(d[0])
        if a.ndim == COEFF_NDIM and len(shape) == COEFF_NDIM:
            # pywt drops the extra row / column an odd length's approximation carries.
            a = a[tuple(slice(None, -1 if n == m + 1 else None)
                        for n, m in zip(a.shape, shape, strict=True))]
        a = idwt2((a, tuple(d)), wavelet)
    return a
