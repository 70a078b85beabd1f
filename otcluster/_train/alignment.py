"""Alignment of the heads of every modality to the first modality's at initialisation (eq. 7).

Sharded: each rank evaluates its samples; the alignment cost is a sum over samples, so the
ranks' cost matrices are summed and the first rank's permutation is used by all.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._align import align, align_from_cost, alignment_cost_matrix, permute_linear_
from .._distributed import all_reduce_sum, broadcast_from_first
from .data import DataPasses
from .model import SelfLabelModel

__all__ = ["align_heads"]


def align_heads(model: SelfLabelModel, passes: DataPasses, dataset: Any, *, method: str,
                seed: int, max_samples: int | None, rank: int = 0, world_size: int = 1,
                process_group: Any = None) -> list[dict]:
    """Permute the last layer of every head of modalities 2.. to match modality 1's clusters.

    Parameters
    ----------
    method : {"exact", "greedy"}
    seed : int
        Seeds the subset (``seed + 17``) and the greedy matching of head ``h`` (``seed + h``).
    max_samples : int or None
        Use at most this many samples (a fixed random subset).

    Returns
    -------
    list of dict
        One ``"align"`` record per aligned modality (mean cost per sample before and after).
    """
    N = len(dataset)
    if max_samples is not None and N > max_samples:
        g = torch.Generator().manual_seed(seed + 17)
        subset = torch.randperm(N, generator=g)[:max_samples].sort().values
    else:
        subset = torch.arange(N)
    positions = subset[rank::world_size]
    mods = model.modalities

    def fn(inputs):
        return {m: torch.softmax(model.heads[m](model.encode(inputs[m], m)).float(), -1)
                for m in mods}

    _, probs = passes.eval_pass(model, dataset, positions, mods, fn, N, "aligning")
    ref = mods[0]
    records = []
    for m in mods[1:]:
        before, after = [], []
        for h in range(model.head(m).n_heads):
            perm, c0, c1 = _align_pair(probs[m][h], probs[ref][h], method, seed + h, process_group)
            permute_linear_(model.head(m).last_linear(h), perm.cpu())
            before.append(c0)
            after.append(c1)
        n_used = int(subset.numel())
        records.append({
            "event": "align", "modality": m, "reference": ref, "method": method,
            "n_samples": n_used, "cost_before": float(np.mean(before)) / n_used,
            "cost_after": float(np.mean(after)) / n_used,
        })
    return records


def _align_pair(p_a: torch.Tensor, p_b: torch.Tensor, method: str, seed: int, group: Any
                ) -> tuple[torch.Tensor, float, float]:
    """Permutation of ``p_a``'s clusters matching ``p_b``; (perm, cost before, cost after)."""
    p_a, p_b = p_a.cpu(), p_b.cpu()
    if group is None:
        res = align(p_a, p_b, method=method, seed=seed)
        before = float((p_a.double() - p_b.double()).abs().sum())
        return res.permutation, before, float(res.cost)
    # sharded: the cost matrix is a sum over samples, so sum the shards' matrices
    cost = all_reduce_sum(alignment_cost_matrix(p_a, p_b).cpu(), group)
    c = cost.numpy()
    perm = align_from_cost(c, method=method, seed=seed).permutation
    perm = broadcast_from_first(perm, group)
    K = c.shape[0]
    return perm, float(np.trace(c)), float(c[perm.numpy(), np.arange(K)].sum())
