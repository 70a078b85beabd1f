"""Weights of the modalities in eq. 6 from how much each one knows of the labels.

``modality_weights="information"``: at every clustering, each modality's weight is a lower
bound on the mutual information between its inputs and the current labels, the Barber-Agakov
bound ``I(X_m; Y) >= H(Y) - CE_m``, where ``CE_m`` is the cross-entropy of the modality's heads
on the training batches since the previous clustering and ``H(Y)`` the entropy of the labels'
cluster sizes. A modality whose heads cannot predict the labels better than their sizes gets
the least weight, ``modality_weights_floor``, and mostly stops steering the clustering (it is
still trained on the labels, and regains weight when it learns to predict them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from .._distributed import all_reduce_sum

if TYPE_CHECKING:
    from .config import TrainerConfig
    from .model import SelfLabelModel

__all__ = ["WEIGHTINGS", "FitTracker", "information_weights", "label_entropy", "size_entropy",
           "update_modality_weights"]

WEIGHTINGS = ("equal", "information")


def size_entropy(sizes: torch.Tensor) -> float:
    """Entropy (nats) of cluster sizes ``(H, K)`` (counts), mean over heads."""
    frac = sizes.double() / sizes.sum(1, keepdim=True)
    return float(-(frac * torch.log(frac.clamp_min(1e-300))).sum(1).mean())


def label_entropy(labels: torch.Tensor, n_clusters: int) -> float:
    """Entropy (nats) of the cluster sizes of ``labels`` (H, N), mean over heads."""
    return size_entropy(torch.stack([torch.bincount(lab, minlength=n_clusters)
                                     for lab in labels.cpu()]))


def information_weights(cross_entropy: Sequence[float], entropy: float, floor: float = 0.0
                        ) -> list[float] | None:
    """Shares ``I_m / sum(I)`` of ``I_m = max(entropy - CE_m, 0)``, each raised to at least
    ``floor``, normalised to sum 1; None when no modality beats the sizes.

    >>> [round(w, 3) for w in information_weights([1.4, 0.2], 1.8)]
    [0.2, 0.8]
    >>> [round(w, 3) for w in information_weights([1.9, 0.2], 1.8, floor=0.2)]
    [0.167, 0.833]
    >>> information_weights([2.0, 1.9], 1.8) is None
    True
    """
    info = [max(entropy - float(ce), 0.0) for ce in cross_entropy]
    total = sum(info)
    if not total > 0:
        return None
    shares = [max(v / total, floor) for v in info]
    return [v / sum(shares) for v in shares]


class FitTracker:
    """Sums of each modality's training cross-entropy since the last reset (one float64
    tensor: M sums and the step count, on the training device, so a step never synchronises)."""

    def __init__(self, n_modalities: int, device: torch.device):
        self.sums = torch.zeros(n_modalities + 1, dtype=torch.float64, device=device)

    def add(self, losses: Sequence[torch.Tensor]) -> None:
        """One training step's per-modality losses (detached here)."""
        step = torch.stack([loss.detach().double() for loss in losses])
        self.sums[:-1] += step
        self.sums[-1] += 1

    def reset(self) -> None:
        self.sums.zero_()


def update_modality_weights(model: SelfLabelModel, fit: FitTracker, labels: torch.Tensor | None,
                            config: TrainerConfig, n_clusterings: int, n_scheduled: int,
                            process_group: Any = None) -> dict[str, float] | None:
    """Before clustering ``n_clusterings`` (0-based) of ``n_scheduled``, with
    ``modality_weights="information"``: set ``model``'s eq. 6 weights from the cross-entropies
    in ``fit`` (summed over the ranks, then reset) against ``labels``, once the warm-up
    (``modality_weights_warmup``) is over and a step was measured; otherwise they stay.

    Returns the weights in use (by modality), or None for fixed weights."""
    if config.modality_weights != "information":
        return None
    sums = all_reduce_sum(fit.sums.clone(), process_group).cpu()
    started = n_clusterings >= round(config.modality_weights_warmup * n_scheduled)
    if started and labels is not None and float(sums[-1]) > 0:
        ce = (sums[:-1] / sums[-1]).tolist()
        w = information_weights(ce, label_entropy(labels, config.heads.n_clusters),
                                config.modality_weights_floor)
        if w is not None:
            model.set_modality_weights(dict(zip(model.modalities, w)))
    fit.reset()
    return {m: float(v) for m, v in zip(model.modalities, model.modality_weights)}
