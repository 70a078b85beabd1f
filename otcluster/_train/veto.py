"""A per-sample veto of a modality's artefact clusters in eq. 6 (``TrainerConfig.modality_veto``).

At a clustering, each modality's heads put every sample into a cluster of their own (argmax).
A cluster of modality ``s`` (per head) is an *artefact* when no other modality groups its
members: the largest share of them that another modality's heads put into any one cluster is
below ``threshold / K``. The intent: such a cluster follows something only ``s`` sees (a
degradation, a source format) rather than what the modalities share; on the video recipe's
held-out runs it fired mostly where the pictures are weak
(``docs/benchmarks/robustness_av_veto.md``). A sample in an artefact cluster of some
modalities but not of all is labelled by the others alone: its eq. 6 weights become the
modalities' weights with the flagged ones set to 0, renormalised. Every other sample keeps the
weights it had. Counts are pooled over the ranks of a process group, so every rank flags the
same clusters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .._distributed import all_reduce_sum

__all__ = ["artefact_clusters", "veto_weights", "weighted_mean_", "vetoed_shares"]


def artefact_clusters(argmax: torch.Tensor, n_clusters: int, threshold: float,
                      process_group: Any = None) -> torch.Tensor:
    """Flags ``(M, H, K)`` of each modality's artefact clusters, per head.

    Parameters
    ----------
    argmax : int Tensor of shape (M, H, n)
        Each modality's own cluster of every sample, per head (this rank's samples).
    n_clusters : int
        K.
    threshold : float
        A cluster of ``s`` is flagged when, for every other modality, the largest share of its
        members in one of that modality's clusters is below ``threshold / K``; empty clusters
        are never flagged.
    process_group : optional
        Counts are summed over its ranks.

    Examples
    --------
    Modality 0's cluster 1 holds samples 2-5, which modality 1 spreads over four clusters:

    >>> a = torch.tensor([[[0, 0, 1, 1, 1, 1]], [[0, 0, 0, 1, 2, 3]]])
    >>> artefact_clusters(a, 4, threshold=1.5)[:, 0].tolist()
    [[False, True, False, False], [False, False, False, False]]
    """
    M, H, _ = argmax.shape
    K = n_clusters
    a = argmax.to("cpu", torch.int64)
    joint = torch.zeros(M, M, H, K * K, dtype=torch.float64)
    for s in range(M):
        for o in range(M):
            if o != s:  # joint[s, o, h, k * K + j]: samples in s's cluster k and o's cluster j
                joint[s, o].scatter_add_(1, a[s] * K + a[o], torch.ones(a[s].shape,
                                                                        dtype=torch.float64))
    joint = all_reduce_sum(joint, process_group).cpu().reshape(M, M, H, K, K)
    members = joint.sum(-1)  # (M, M, H, K); the same for every o != s
    grouped = joint.amax(-1) >= threshold / K * members  # o groups s's cluster k
    grouped &= members > 0
    nonempty = members.amax(1) > 0
    return ~grouped.any(1) & nonempty


def veto_weights(argmax: torch.Tensor, flags: torch.Tensor,
                 weights: Sequence[float] | None) -> torch.Tensor:
    """Eq. 6 weights ``(M, H, n)`` of every sample: ``weights`` (equal when None), with the
    modalities whose cluster of the sample is flagged set to 0 and the rest renormalised;
    unchanged for a sample flagged in every modality or in none, or whose unflagged modalities
    all weigh 0."""
    M = argmax.shape[0]
    base = torch.full((M,), 1.0 / M) if weights is None else torch.tensor(weights)
    base = (base / base.sum()).to(argmax.device, torch.float32)[:, None, None]
    keep = ~torch.gather(flags.to(argmax.device), 2, argmax)
    kept = base * keep
    total = kept.sum(0)
    veto = keep.any(0) & ~keep.all(0) & (total > 0)
    return torch.where(veto, kept / torch.where(veto, total, 1.0), base.expand_as(kept))


def weighted_mean_(log_probs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_m weights[m, h, i] * log_probs[m, h, i, :]`` ``(H, n, K)``, written into
    ``log_probs[0]`` (no other N x K buffer); a term of weight 0 is left out (so a -inf
    log-probability of a vetoed modality gives no NaN)."""
    out = log_probs[0]
    for h in range(out.shape[0]):
        w0 = weights[0, h, :, None]
        out[h] = torch.where(w0 > 0, out[h] * w0, 0.0)
        for m in range(1, log_probs.shape[0]):
            w = weights[m, h, :, None]
            out[h] += torch.where(w > 0, log_probs[m, h] * w, 0.0)
    return out


def vetoed_shares(weights: torch.Tensor, base: Sequence[float] | None, modalities: Sequence[str],
                  process_group: Any = None) -> dict[str, float]:
    """Share of the samples, mean over heads, whose label left out each modality (weight 0
    where its base weight was positive), pooled over the ranks of ``process_group``."""
    M = weights.shape[0]
    b = torch.full((M,), 1.0 / M) if base is None else torch.tensor(base, dtype=torch.float32)
    left_out = (weights == 0) & (b.to(weights.device) > 0)[:, None, None]
    counts = torch.cat([left_out.sum((1, 2)).double().cpu(),
                        torch.tensor([float(weights[0].numel())], dtype=torch.float64)])
    counts = all_reduce_sum(counts, process_group).cpu()
    total = max(float(counts[-1]), 1.0)
    return {m: float(c) / total for m, c in zip(modalities, counts[:-1])}
