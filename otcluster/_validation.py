"""Input checks done once at the public boundary.

Private solver functions assume their input passed through here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["as_float_tensor", "check_lam", "check_finite"]


def as_float_tensor(x: Any, name: str, *, ndims: tuple[int, ...] = (2, 3)) -> torch.Tensor:
    """Return ``x`` as a floating torch tensor without copying when possible.

    Raises
    ------
    TypeError
        If ``x`` is not array-like or has an integer / boolean / complex dtype.
    ValueError
        If the number of dimensions is not in ``ndims``.
    """
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"{name} must have a floating dtype, got numpy dtype {x.dtype}")
        t = torch.from_numpy(x)
    elif isinstance(x, (list, tuple)):
        t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    else:
        raise TypeError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}")
    if not t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} must have a floating dtype (float32 or float64), got {t.dtype}")
    if t.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise TypeError(f"{name} has unsupported dtype {t.dtype}")
    if t.dim() not in ndims:
        shapes = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {shapes}, got shape {tuple(t.shape)}")
    return t


def check_lam(lam: float) -> float:
    try:
        lam = float(lam)
    except (TypeError, ValueError):
        raise TypeError(f"lam must be a positive number, got {lam!r}") from None
    if not np.isfinite(lam) or lam <= 0:
        raise ValueError(f"lam must be a positive finite number, got {lam}")
    return lam


def check_finite(t: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(t).all()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        raise ValueError(f"{name} contains non-finite values ({n_nan} NaN, {n_inf} inf)")
