"""Aligning the cluster units of two heads (paper eq. 7).

Two heads trained on different modalities start with arbitrary cluster orders. The paper
aligns them at initialisation by the permutation ``R`` of head ``a``'s output units that
minimises ``sum_i |softmax(R z_a,i) - softmax(z_b,i)|_1``. Softmax commutes with
permutations, so the objective is ``sum_k C[R(k), k]`` with the cost matrix

    ``C[j, k] = sum_i |p_a[i, j] - p_b[i, k]|``,

a linear assignment problem that :func:`align` solves exactly (``method="exact"``, Hungarian
algorithm via :func:`scipy.optimize.linear_sum_assignment`). The paper's greedy random
pair-switch search is available as ``method="greedy"`` for comparison.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import numpy as np
import torch

from ._typing import ArrayLike, IntArrayLike
from ._validation import as_tensor

__all__ = [
    "AlignResult",
    "align",
    "align_from_cost",
    "alignment_cost_matrix",
    "permute_linear",
    "permute_linear_",
]

ALIGN_METHODS = ("exact", "greedy")
COST_BACKENDS = ("auto", "numba", "torch")

# Rows of a probability matrix must sum to 1 within this absolute tolerance.
_ROW_SUM_ATOL = 1e-3
# Default rows per block of the torch cost-matrix path (bounds the temporaries to a few MB).
_DEFAULT_BLOCK_ROWS = 8192


class AlignResult(NamedTuple):
    """Result of :func:`align`.

    Attributes
    ----------
    permutation : LongTensor of shape (K,)
        ``p_a[:, permutation]`` best matches ``p_b``: column ``k`` of the aligned matrix is
        column ``permutation[k]`` of ``p_a``. On the device of the inputs.
    cost : float
        ``sum_i |p_a[i, permutation] - p_b[i]|_1`` (computed in float64).
    method : str
        ``"exact"`` or ``"greedy"``.
    """

    permutation: torch.Tensor
    cost: float
    method: str


def _as_prob_tensor(x: object, name: str) -> torch.Tensor:
    t = as_tensor(x, name, ndims=(2,), accept="arrays", shape="(n_samples, n_clusters)",
                  nonempty=True)  # the core's one input coercer
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _check_probs(p_a: object, p_b: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two probability matrices; return them as tensors of a common dtype."""
    a = _as_prob_tensor(p_a, "p_a")
    b = _as_prob_tensor(p_b, "p_b")
    if a.shape != b.shape:
        raise ValueError(f"p_a and p_b must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"p_a and p_b must be on the same device, got {a.device} and {b.device}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype), b.to(dtype)
    for name, t in (("p_a", a), ("p_b", b)):
        if t.device.type == "cpu":
            from ._numba_align import probability_defects

            n_bad, n_neg, dev = probability_defects(np.ascontiguousarray(t.numpy()))
        else:
            n_bad = int((~torch.isfinite(t)).sum())
            n_neg = int((t < 0).sum())
            dev = float((t.sum(1, dtype=torch.float64) - 1.0).abs().max())
        if n_bad:
            raise ValueError(f"{name} contains {n_bad} NaN or infinite values")
        if n_neg:
            raise ValueError(f"{name} has {n_neg} negative entries: expected probabilities")
        if dev > _ROW_SUM_ATOL:
            raise ValueError(f"rows of {name} must sum to 1 (probabilities), largest deviation "
                             f"{dev:.3g} > {_ROW_SUM_ATOL}")
    return a, b


def _cost_matrix_torch(a: torch.Tensor, b: torch.Tensor, block_size: int) -> torch.Tensor:
    """``C[j,k] = sum_i |a[i,j] - b[i,k]|`` by row blocks of ``torch.cdist(p=1)``; float64."""
    K = a.shape[1]
    out = torch.zeros(K, K, dtype=torch.float64, device=a.device)
    for lo in range(0, a.shape[0], block_size):
        ab = a[lo:lo + block_size].T.contiguous()
        bb = b[lo:lo + block_size].T.contiguous()
        out += torch.cdist(ab.unsqueeze(0), bb.unsqueeze(0), p=1.0)[0].to(torch.float64)
    return out


def _cost_matrix(a: torch.Tensor, b: torch.Tensor, backend: str, block_size: int | None
                 ) -> torch.Tensor:
    """Prior validation assumed. Returns a float64 (K, K) tensor on the inputs' device."""
    if backend == "auto":
        backend = "numba" if a.device.type == "cpu" else "torch"
    if backend == "numba":
        from ._numba_align import l1_cost_matrix

        an = np.ascontiguousarray(a.cpu().numpy())
        bn = np.ascontiguousarray(b.cpu().numpy())
        return torch.from_numpy(l1_cost_matrix(an, bn)).to(a.device)
    return _cost_matrix_torch(a, b, block_size or _DEFAULT_BLOCK_ROWS)


def _check_block_size(block_size: int | None) -> int | None:
    if block_size is None:
        return None
    if isinstance(block_size, bool) or int(block_size) != block_size or block_size < 1:
        raise ValueError(f"block_size must be a positive integer or None, got {block_size!r}")
    return int(block_size)


def alignment_cost_matrix(
    p_a: ArrayLike, p_b: ArrayLike, *, backend: str = "auto", block_size: int | None = None
) -> torch.Tensor:
    """Cost matrix of the alignment problem, ``C[j, k] = sum_i |p_a[i, j] - p_b[i, k]|``.

    Built in one pass over the rows, never as an ``N x K x K`` tensor.

    Parameters
    ----------
    p_a, p_b : Tensor or ndarray of shape (n_samples, n_clusters)
        Row-stochastic matrices (e.g. softmax outputs of two heads on the same samples).
    backend : {"auto", "numba", "torch"}, default "auto"
        ``"numba"``: parallel CPU kernel with per-chunk accumulators (inputs on another device
        are copied to the CPU). ``"torch"``: row blocks of ``torch.cdist(p=1)`` on the inputs'
        device. ``"auto"``: numba for CPU inputs, torch otherwise.
    block_size : int, optional
        Rows per block of the torch backend (default 8192). Ignored by numba.

    Returns
    -------
    cost : Tensor of shape (n_clusters, n_clusters), float64
        On the device of the inputs.

    Raises
    ------
    ValueError
        If the inputs are not 2-D, differ in shape, contain NaN / infinite / negative entries,
        or have rows that do not sum to 1.

    Examples
    --------
    >>> import torch
    >>> p = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    >>> alignment_cost_matrix(p, p.flip(1))
    tensor([[1.4000, 0.0000],
            [0.0000, 1.4000]], dtype=torch.float64)
    """
    if backend not in COST_BACKENDS:
        raise ValueError(f"backend must be one of {COST_BACKENDS}, got {backend!r}")
    block_size = _check_block_size(block_size)
    a, b = _check_probs(p_a, p_b)
    return _cost_matrix(a, b, backend, block_size)


def _exact_permutation(cost: np.ndarray) -> np.ndarray:
    # Imported here: scipy.optimize costs ~0.3 s, paid by `import otcluster` when it was at the top.
    from scipy.optimize import linear_sum_assignment

    # Rows of cost.T are the target columns k, its columns the source columns j:
    # col[k] = j, i.e. the permutation to index p_a's columns with.
    _, col = linear_sum_assignment(cost.T)
    return col.astype(np.int64)


def _greedy_permutation(cost: np.ndarray, n_steps: int, patience: int, n_restarts: int,
                        seed: int | None) -> np.ndarray:
    from ._numba_align import pair_switch_search

    K = cost.shape[0]
    rng = np.random.default_rng(seed)
    best_perm = np.arange(K, dtype=np.int64)
    best_cost = np.inf
    for restart in range(n_restarts):
        # First start from the identity (the public code's start), then random permutations.
        perm = np.arange(K, dtype=np.int64) if restart == 0 else rng.permutation(K)
        pairs = rng.integers(0, K, size=(n_steps, 2), dtype=np.int64)
        pair_switch_search(cost, perm, pairs, patience)
        total = float(cost[perm, np.arange(K)].sum())  # recomputed: no drift from deltas
        if total < best_cost:
            best_cost, best_perm = total, perm.copy()
    return best_perm


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def align(
    p_a: ArrayLike,
    p_b: ArrayLike,
    *,
    method: str = "exact",
    n_steps: int = 50000,
    patience: int = 1000,
    n_restarts: int = 5,
    seed: int | None = None,
    block_size: int | None = None,
) -> AlignResult:
    """Permutation of ``p_a``'s clusters that best matches ``p_b`` in L1 (paper eq. 7).

    Minimises ``sum_i |p_a[i, perm] - p_b[i]|_1 = sum_k C[perm[k], k]`` with
    ``C[j, k] = sum_i |p_a[i, j] - p_b[i, k]|`` (see :func:`alignment_cost_matrix`).

    Parameters
    ----------
    p_a, p_b : Tensor or ndarray of shape (n_samples, n_clusters)
        Row-stochastic matrices (softmax outputs of the two heads on the same samples),
        float32 or float64, CPU or CUDA (both on the same device).
    method : {"exact", "greedy"}, default "exact"
        ``"exact"``: the optimal permutation (linear assignment on ``C``). ``"greedy"``: the
        paper's random pair-switch search (each swap evaluated in O(1) from ``C``); never
        better than exact, kept for comparison with the paper.
    n_steps : int, default 50000
        Greedy only: random pair switches tried per restart.
    patience : int, default 1000
        Greedy only: a restart stops after this many consecutive steps without improvement.
    n_restarts : int, default 5
        Greedy only: number of searches (the first from the identity, the others from random
        permutations); the best is returned.
    seed : int, optional
        Greedy only: seed of the random pairs and starting permutations.
    block_size : int, optional
        Rows per block when the cost matrix is built with torch (CUDA inputs).

    Returns
    -------
    AlignResult
        ``permutation`` (LongTensor (K,), on the inputs' device), ``cost`` (float), ``method``.

    Raises
    ------
    ValueError
        If the inputs are not 2-D, differ in shape, contain NaN / infinite / negative entries,
        have rows that do not sum to 1, or a parameter is out of range.

    Examples
    --------
    >>> import torch
    >>> p_b = torch.softmax(torch.randn(100, 4, generator=torch.Generator().manual_seed(0)), 1)
    >>> p_a = p_b[:, [2, 0, 3, 1]]
    >>> res = align(p_a, p_b)
    >>> res.permutation.tolist(), round(res.cost, 6)
    ([1, 3, 0, 2], 0.0)
    >>> bool(torch.equal(p_a[:, res.permutation], p_b))
    True
    """
    block_size = _check_block_size(block_size)
    _check_method(method, n_steps, patience, n_restarts)
    a, b = _check_probs(p_a, p_b)
    cost = _cost_matrix(a, b, "auto", block_size)
    res = align_from_cost(cost, method=method, n_steps=n_steps, patience=patience,
                          n_restarts=n_restarts, seed=seed)
    return res._replace(permutation=res.permutation.to(a.device))


def _check_method(method: str, n_steps: Any, patience: Any, n_restarts: Any) -> tuple[int, int, int]:
    if method not in ALIGN_METHODS:
        raise ValueError(f"method must be one of {ALIGN_METHODS}, got {method!r}")
    return (_check_positive_int(n_steps, "n_steps"), _check_positive_int(patience, "patience"),
            _check_positive_int(n_restarts, "n_restarts"))


def align_from_cost(
    cost: ArrayLike,
    *,
    method: str = "exact",
    n_steps: int = 50000,
    patience: int = 1000,
    n_restarts: int = 5,
    seed: int | None = None,
) -> AlignResult:
    """Permutation minimising ``sum_k cost[perm[k], k]`` for a cost matrix already built.

    For when the cost matrix comes from elsewhere: summed over the shards of a distributed
    dataset (:func:`alignment_cost_matrix` on each rank, then an all-reduce), accumulated over
    batches, or a custom dissimilarity between two heads' clusters.

    Parameters
    ----------
    cost : Tensor or ndarray of shape (K, K)
        ``cost[j, k]``: cost of matching source cluster ``j`` to target cluster ``k``; finite.
    method, n_steps, patience, n_restarts, seed
        As in :func:`align`.

    Returns
    -------
    AlignResult
        ``permutation`` (LongTensor (K,), on the CPU), ``cost`` (float), ``method``.

    Raises
    ------
    ValueError
        If ``cost`` is not a finite square matrix, or a parameter is out of range.

    Examples
    --------
    >>> import torch
    >>> cost = torch.tensor([[5.0, 0.0, 9.0], [9.0, 5.0, 0.0], [0.0, 9.0, 5.0]])
    >>> res = align_from_cost(cost)
    >>> res.permutation.tolist(), res.cost
    ([2, 0, 1], 0.0)
    """
    n_steps, patience, n_restarts = _check_method(method, n_steps, patience, n_restarts)
    t = torch.as_tensor(cost).detach()
    if t.dim() != 2 or t.shape[0] != t.shape[1] or t.shape[0] < 1:
        raise ValueError(f"cost must be a square (K, K) matrix, got shape {tuple(t.shape)}")
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"cost must be real, got {t.dtype}")
    c = t.to("cpu", torch.float64).numpy()
    if not np.isfinite(c).all():
        raise ValueError(f"cost contains {int((~np.isfinite(c)).sum())} NaN or infinite values")
    if method == "exact":
        perm = _exact_permutation(c)
    else:
        perm = _greedy_permutation(np.ascontiguousarray(c), n_steps, patience, n_restarts, seed)
    total = float(c[perm, np.arange(c.shape[0])].sum())
    return AlignResult(torch.from_numpy(perm), total, method)


def _check_permutation(permutation: object, n: int) -> torch.Tensor:
    perm = torch.as_tensor(permutation)
    if perm.dim() != 1 or perm.shape[0] != n:
        raise ValueError(f"permutation must have shape ({n},), got {tuple(perm.shape)}")
    if perm.is_floating_point() or perm.is_complex() or perm.dtype == torch.bool:
        raise ValueError(f"permutation must be integer, got {perm.dtype}")
    perm = perm.long().cpu()
    if not torch.equal(torch.sort(perm).values, torch.arange(n)):
        raise ValueError(f"permutation must be a permutation of 0..{n - 1}")
    return perm


def permute_linear_(layer: torch.nn.Linear, permutation: IntArrayLike) -> torch.nn.Linear:
    """Permute the output units of a linear layer in place.

    Rows of ``weight`` and entries of ``bias`` are reordered exactly (no arithmetic is done), so
    afterwards ``layer(x)`` equals ``old_layer(x)[:, permutation]`` up to floating-point
    rounding: a BLAS library may sum the matrix product in another order for another row order
    of the weight, so the outputs are not always bit-identical. With the permutation returned by
    ``align(p_a, p_b)``, applying this to the last layer of head ``a`` aligns it to head ``b``.

    Parameters
    ----------
    layer : torch.nn.Linear
        Layer with ``out_features == K``; modified in place (under ``torch.no_grad``).
    permutation : LongTensor, ndarray or sequence of shape (K,)
        A permutation of ``0..K-1``.

    Returns
    -------
    layer : torch.nn.Linear
        The same object, for chaining.

    Raises
    ------
    TypeError
        If ``layer`` is not an ``nn.Linear``.
    ValueError
        If ``permutation`` is not a permutation of ``0..out_features-1``.

    Examples
    --------
    >>> import torch
    >>> lin = torch.nn.Linear(3, 4)
    >>> x = torch.randn(2, 3)
    >>> before = lin(x)
    >>> w = lin.weight.detach().clone()
    >>> _ = permute_linear_(lin, [3, 1, 0, 2])
    >>> bool(torch.equal(lin.weight, w[[3, 1, 0, 2]]))
    True
    >>> torch.testing.assert_close(lin(x), before[:, [3, 1, 0, 2]])
    """
    if not isinstance(layer, torch.nn.Linear):
        raise TypeError(f"layer must be a torch.nn.Linear, got {type(layer).__name__}")
    perm = _check_permutation(permutation, layer.out_features)
    with torch.no_grad():
        w = layer.weight
        w.copy_(w[perm.to(w.device)].clone())
        if layer.bias is not None:
            bias = layer.bias
            bias.copy_(bias[perm.to(bias.device)].clone())
    return layer


def permute_linear(layer: torch.nn.Linear, permutation: IntArrayLike) -> torch.nn.Linear:
    """Return a deep copy of ``layer`` with its output units permuted.

    Same as :func:`permute_linear_` but leaves ``layer`` untouched.

    Parameters
    ----------
    layer : torch.nn.Linear
        Layer with ``out_features == K``.
    permutation : LongTensor, ndarray or sequence of shape (K,)
        A permutation of ``0..K-1``.

    Returns
    -------
    torch.nn.Linear
        A new layer whose output equals ``layer(x)[:, permutation]``.
    """
    if not isinstance(layer, torch.nn.Linear):
        raise TypeError(f"layer must be a torch.nn.Linear, got {type(layer).__name__}")
    return permute_linear_(copy.deepcopy(layer), permutation)
