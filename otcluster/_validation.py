"""Input checks done once at the public boundary; ``as_tensor`` is the core's one input coercer.

Private functions assume their input passed through here. The solver, the labeler, alignment,
the metrics and the k-means baseline all coerce their array inputs with :func:`as_tensor`
(or :func:`as_array`, its numpy-returning form), so the accepted types, the copy rules and the
error messages are the same everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["InputDTypeError", "as_array", "as_float_tensor", "as_tensor", "check_finite",
           "check_finite_blocks", "check_lam"]

_TORCH_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_NUMPY_FLOATS = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16))
_KINDS = {
    "float": "must have a floating dtype (float32 or float64)",
    "real": "must be real numbers (a floating or integer dtype)",
    "integer": "must contain integer labels",
}


class InputDTypeError(TypeError, ValueError):
    """An array holds the wrong kind of numbers.

    A ``TypeError`` (the dtype is the problem) that is also a ``ValueError``, so callers of
    every public function may catch either.
    """


def _kind_ok(dtype: Any, kind: str) -> bool:
    if isinstance(dtype, torch.dtype):
        if kind == "float":
            return dtype.is_floating_point and dtype in _TORCH_FLOATS
        if dtype == torch.bool or dtype.is_complex:
            return False
        return kind == "real" or not dtype.is_floating_point
    if kind == "float":
        return dtype in _NUMPY_FLOATS
    if kind == "real":
        return bool(np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer))
    return bool(np.issubdtype(dtype, np.integer))


def _from_numpy(a: np.ndarray) -> torch.Tensor:
    if any(s < 0 for s in a.strides):  # torch cannot view negative strides: copy only then
        a = np.ascontiguousarray(a)
    return torch.from_numpy(a)


def as_tensor(
    x: Any,
    name: str,
    *,
    ndims: tuple[int, ...] = (2, 3),
    kind: str = "float",
    accept: str = "sequences",
    shape: str | None = None,
    nonempty: bool = False,
    detach: bool = True,
) -> torch.Tensor:
    """Return ``x`` as a torch tensor, without copying when possible.

    Parameters
    ----------
    x : torch tensor, numpy array, or (see ``accept``) a list / array-like
        Never modified. A tensor that requires grad is detached (a view, no copy) unless
        ``detach=False``; a numpy array is viewed (copied only when it has negative strides).
    name : str
        The argument's name in error messages.
    ndims : tuple of int
        Allowed numbers of dimensions.
    kind : {"float", "real", "integer"}
        Allowed dtypes: floating (float16/bfloat16/float32/float64); floating or integer;
        integer.
    accept : {"arrays", "sequences", "array_like"}
        Besides tensors and numpy arrays: nothing; lists and tuples; anything numpy takes.
    shape : str, optional
        The expected shape, in words, for the error message (e.g. ``"(n_samples,)"``).
    nonempty : bool
        Refuse arrays with a zero-length dimension.

    Raises
    ------
    TypeError
        ``x`` is not array-like (for ``accept``); :class:`InputDTypeError` (a TypeError and a
        ValueError) for the wrong kind of numbers.
    ValueError
        Wrong number of dimensions, or empty with ``nonempty``.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach() if detach else x
        _check_shape(tuple(t.shape), name, ndims, shape, nonempty)
        if not _kind_ok(t.dtype, kind):
            raise InputDTypeError(f"{name} {_KINDS[kind]}, got {t.dtype}")
        return t
    if isinstance(x, np.ndarray):
        a = x
    elif accept == "array_like" or (accept == "sequences" and isinstance(x, (list, tuple))):
        a = np.asarray(x, dtype=np.float64) if kind == "float" else np.asarray(x)
    else:
        raise TypeError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}")
    _check_shape(a.shape, name, ndims, shape, nonempty)
    if not _kind_ok(a.dtype, kind):
        raise InputDTypeError(f"{name} {_KINDS[kind]}, got numpy dtype {a.dtype}")
    return _from_numpy(a)


def _check_shape(got: tuple[int, ...], name: str, ndims: tuple[int, ...], shape: str | None,
                 nonempty: bool) -> None:
    if len(got) not in ndims:
        dims = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {dims}{' ' + shape if shape else ''}, got shape {got}")
    if nonempty and 0 in got:
        raise ValueError(f"{name} must be non-empty, got shape {got}")


def as_array(x: Any, name: str, **kwargs: Any) -> np.ndarray:
    """:func:`as_tensor` for numpy-based callers: the same checks, a numpy array back.

    A numpy input (or a list) is returned as a view of itself (no copy); a tensor is moved to
    the CPU.
    """
    if isinstance(x, np.ndarray) or not isinstance(x, torch.Tensor):
        kwargs.setdefault("accept", "array_like")
    t = as_tensor(x, name, **kwargs)
    return x if isinstance(x, np.ndarray) else t.cpu().numpy()


def as_float_tensor(x: Any, name: str, *, ndims: tuple[int, ...] = (2, 3)) -> torch.Tensor:
    """Floating tensor of ``ndims`` dimensions (the solver's inputs): :func:`as_tensor` defaults."""
    return as_tensor(x, name, ndims=ndims)


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


def check_finite_blocks(t: torch.Tensor, name: str, block_rows: int) -> None:
    """Raise if ``t`` has NaN or inf, checking ``block_rows`` rows at a time: a whole-tensor
    ``isfinite`` would allocate a boolean copy of the features (2M x 512 float32: 1 GiB more)."""
    bad = 0
    for start in range(0, t.shape[0], block_rows):
        block = t[start:start + block_rows]
        if not bool(torch.isfinite(block).all()):
            bad += int((~torch.isfinite(block)).sum())
    if bad:
        raise ValueError(f"{name} contains non-finite values ({bad} entries NaN or inf)")
