"""Type aliases of the public API's inputs (annotations only; checked by mypy in ``make lint``).

The public functions accept torch tensors, numpy arrays and nested lists of numbers; these aliases
say so, so that a type checker rejects e.g. ``sinkhorn("not an array")`` (with ``Any`` it was
accepted). Validation at run time is unchanged: the functions still check shapes, dtypes and
values and raise a clear error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy.typing as npt
import torch

__all__ = ["ArrayLike", "IntArrayLike", "LabelsLike", "NDArray"]

NDArray: TypeAlias = npt.NDArray[Any]
"""A numpy array of any dtype."""

ArrayLike: TypeAlias = (
    torch.Tensor
    | NDArray
    | Sequence[float]
    | Sequence[Sequence[float]]
    | Sequence[Sequence[Sequence[float]]]
)
"""Numbers of shape (n,), (n, k) or (h, n, k): a tensor, a numpy array or nested lists.
(``int`` is accepted where ``float`` is written; a ``str`` is not a sequence of numbers.)"""

IntArrayLike: TypeAlias = torch.Tensor | NDArray | Sequence[int]
"""Integers of shape (n,): a permutation, labels."""

LabelsLike: TypeAlias = torch.Tensor | NDArray | Sequence[int] | Sequence[Sequence[int]]
"""Integer cluster labels of shape (n_samples,) or (n_heads, n_samples)."""
