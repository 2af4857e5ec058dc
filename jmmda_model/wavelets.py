"""Differentiable 2-D discrete wavelet transform built from PyWavelets filter banks.

The transforms use periodic extension, exactly matching ``pywt.dwt2(..., mode="periodization")``
and ``pywt.idwt2(..., mode="periodization")``; this makes them perfectly invertible for every
orthogonal and biorthogonal wavelet PyWavelets knows, so a DWT down-sampling step loses no
high-frequency information (the high bands are kept as explicit channels).

Band order follows PyWavelets: ``(cA, (cH, cV, cD))`` where cH is the detail along the first
spatial axis (rows), cV along the second (columns) and cD along both.
"""
from __future__ import annotations

import numpy as np
import pywt
import torch
import torch.nn as nn
import torch.nn.functional as F


def _wavelet(name: str) -> pywt.Wavelet:
    try:
        w = pywt.Wavelet(name)
    except ValueError as exc:
        raise ValueError(
            f"unknown wavelet {name!r}; choose a discrete wavelet from pywt.wavelist(kind='discrete')"
        ) from exc
    if len(w.dec_lo) % 2:
        raise ValueError(f"wavelet {name!r} has odd filter length, unsupported")
    return w


def _outer_bank(f_rows, f_cols) -> np.ndarray:
    """4 separable 2-D kernels in PyWavelets band order: aa, da (cH), ad (cV), dd."""
    lo_r, hi_r = f_rows
    lo_c, hi_c = f_cols
    return np.stack([np.outer(lo_r, lo_c), np.outer(hi_r, lo_c), np.outer(lo_r, hi_c), np.outer(hi_r, hi_c)])


class DWT2D(nn.Module):
    """Single-level 2-D DWT applied channel-wise.

    Input ``(B, C, H, W)`` with even H and W; returns ``(low, high)`` where ``low`` is
    ``(B, C, H/2, W/2)`` and ``high`` is ``(B, 3C, H/2, W/2)`` laid out as ``[cH, cV, cD]`` per channel.
    """

    def __init__(self, wavelet: str = "haar"):
        super().__init__()
        w = _wavelet(wavelet)
        self.wavelet = wavelet
        self.filter_len = len(w.dec_lo)
        # pywt periodization analysis: c[i] = sum_j h[j] x[(2i + F/2 - j) mod N]
        # == correlation with the flipped filter on x circularly padded by (F/2 - 1, F/2).
        lo = np.asarray(w.dec_lo[::-1], dtype=np.float64)
        hi = np.asarray(w.dec_hi[::-1], dtype=np.float64)
        bank = _outer_bank((lo, hi), (lo, hi))
        self.register_buffer("bank", torch.tensor(bank, dtype=torch.float64).unsqueeze(1), persistent=False)

    def forward(self, x: torch.Tensor):
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"DWT2D needs even spatial size, got {h}x{w}")
        f = self.filter_len
        pad_l, pad_r = f // 2 - 1, f // 2
        xp = F.pad(x, (pad_l, pad_r, pad_l, pad_r), mode="circular") if f > 2 else x
        weight = self.bank.to(dtype=x.dtype).repeat(c, 1, 1, 1)
        y = F.conv2d(xp, weight, stride=2, groups=c)  # (B, 4C, H/2, W/2), 4 bands per channel
        y = y.view(b, c, 4, h // 2, w // 2)
        low = y[:, :, 0]
        high = y[:, :, 1:].reshape(b, 3 * c, h // 2, w // 2)
        return low, high


class IDWT2D(nn.Module):
    """Inverse of :class:`DWT2D` (pywt.idwt2 with mode='periodization')."""

    def __init__(self, wavelet: str = "haar"):
        super().__init__()
        w = _wavelet(wavelet)
        self.wavelet = wavelet
        self.filter_len = len(w.rec_lo)
        lo = np.asarray(w.rec_lo, dtype=np.float64)
        hi = np.asarray(w.rec_hi, dtype=np.float64)
        bank = _outer_bank((lo, hi), (lo, hi))
        self.register_buffer("bank", torch.tensor(bank, dtype=torch.float64).unsqueeze(1), persistent=False)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        b, c, h2, w2 = low.shape
        if high.shape != (b, 3 * c, h2, w2):
            raise ValueError(f"high bands must be {(b, 3 * c, h2, w2)}, got {tuple(high.shape)}")
        bands = torch.cat([low.unsqueeze(2), high.view(b, c, 3, h2, w2)], dim=2).view(b, 4 * c, h2, w2)
        weight = self.bank.to(dtype=low.dtype).repeat(c, 1, 1, 1)
        # z[2i + j] += c[i] * g[j]; pywt periodization puts z[p] at (p + 1 - F/2) mod N.
        z = F.conv_transpose2d(bands, weight, stride=2, groups=c)
        f = self.filter_len
        if f == 2:
            return z
        h, w = 2 * h2, 2 * w2
        shift = 1 - f // 2
        rows = (torch.arange(z.shape[2], device=z.device) + shift) % h
        cols = (torch.arange(z.shape[3], device=z.device) + shift) % w
        out = z.new_zeros(b, c, h, z.shape[3]).index_add(2, rows, z)
        return out.new_zeros(b, c, h, w).index_add(3, cols, out)
