"""Weights of the modalities in eq. 6, set at every clustering from how each one behaves.

``modality_weights="information"``: at every clustering, each modality's weight is a lower
bound on the mutual information between its inputs and the current labels, the Barber-Agakov
bound ``I(X_m; Y) >= H(Y) - CE_m``, where ``CE_m`` is the cross-entropy of the modality's heads
on the training batches since the previous clustering and ``H(Y)`` the entropy of the labels'
cluster sizes. A modality whose heads cannot predict the labels better than their sizes gets
the least weight, ``modality_weights_floor``, and mostly stops steering the clustering (it is
still trained on the labels, and regains weight when it learns to predict them).

``modality_weights="stability"``: before every clustering (or every ``stability_every``-th),
two passes over the training set give two independent augmented views of every sample (of a
random subset of ``stability_max_samples``, fresh at every clustering); a modality's weight
grows with the agreement of its own heads' argmax between the two views, corrected for chance
(Cohen's kappa): a modality whose clusters follow what its augmentations change (a crop, a
pitch shift) rather than what the sample is gets little say in the shared labels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .._distributed import all_reduce_sum
from .data import same_index

if TYPE_CHECKING:
    from .config import TrainerConfig
    from .data import DataPasses
    from .model import SelfLabelModel

__all__ = ["WEIGHTINGS", "FitTracker", "information_weights", "label_entropy", "set_fixed_weights",
           "size_entropy", "stability_kappas", "stability_subset", "stability_weights",
           "update_modality_weights"]

WEIGHTINGS = ("equal", "information", "stability")


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
    return _shares([max(entropy - float(ce), 0.0) for ce in cross_entropy], floor)


def stability_weights(kappas: Sequence[float], floor: float = 0.0) -> list[float] | None:
    """Shares of ``max(kappa_m, 0) ** 2``, each raised to at least ``floor``, normalised to
    sum 1; None when no modality agrees with itself better than chance.

    >>> [round(w, 3) for w in stability_weights([0.5, 1.0])]
    [0.2, 0.8]
    >>> [round(w, 3) for w in stability_weights([0.2, 1.0], floor=0.2)]
    [0.172, 0.828]
    >>> stability_weights([0.0, -0.1]) is None
    True
    """
    return _shares([max(float(k), 0.0) ** 2 for k in kappas], floor)


def _shares(values: Sequence[float], floor: float) -> list[float] | None:
    total = sum(values)
    if not total > 0:
        return None
    shares = [max(v / total, floor) for v in values]
    return [v / sum(shares) for v in shares]


def _kappa_counts(a: torch.Tensor, b: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """Per leading index of labels ``a``, ``b`` of shape (..., n): agreements, n, and both
    label histograms, as float64 ``(..., 2 + 2K)`` (summable over ranks)."""
    lead = a.shape[:-1]
    a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    hist = lambda t: torch.stack([torch.bincount(r, minlength=n_clusters)  # noqa: E731
                                  for r in t.cpu()]).double()
    agree = (a2 == b2).sum(-1).double().cpu()
    n = torch.full_like(agree, float(a2.shape[-1]))
    return torch.cat([agree[:, None], n[:, None], hist(a2), hist(b2)], 1).reshape(*lead, -1)


def _kappa(counts: torch.Tensor) -> torch.Tensor:
    """Cohen's kappa from :func:`_kappa_counts` (0 where chance agreement is certain)."""
    n = counts[..., 1].clamp_min(1)
    k = (counts.shape[-1] - 2) // 2
    pa, pb = counts[..., 2:2 + k] / n[..., None], counts[..., 2 + k:] / n[..., None]
    chance = (pa * pb).sum(-1)
    agree = counts[..., 0] / n
    return torch.where(chance < 1, (agree - chance) / (1 - chance).clamp_min(1e-12),
                       torch.zeros_like(agree))


def stability_subset(positions: torch.Tensor, n_samples: int, max_samples: int | None,
                     seed: int) -> torch.Tensor:
    """This rank's share of a random subset of at most ``max_samples`` of the ``n_samples``
    samples, drawn from ``seed`` alone (the same on every rank): the ``positions`` that fall in
    it, in their order; all of ``positions`` when ``n_samples <= max_samples`` or no cap.

    >>> stability_subset(torch.arange(0, 6, 2), 6, None, seed=0).tolist()
    [0, 2, 4]
    >>> len(stability_subset(torch.arange(10), 10, 4, seed=0))
    4
    """
    if max_samples is None or n_samples <= max_samples:
        return positions
    g = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(n_samples, generator=g)[:max_samples]
    return positions[torch.isin(positions, chosen)]


def stability_kappas(model: SelfLabelModel, passes: DataPasses, dataset: Any,
                     positions: torch.Tensor, n_samples: int, n_clusters: int,
                     process_group: Any = None, max_samples: int | None = None,
                     seed: int = 0) -> list[float]:
    """Each modality's Cohen's kappa between its heads' argmax on two passes over
    ``dataset[positions]`` (two augmented views of every sample), mean over heads, pooled over
    the ranks of ``process_group``; with ``max_samples``, only on this rank's share of a random
    subset of that many samples (:func:`stability_subset` with ``seed``)."""
    mods = list(model.modalities)
    positions = stability_subset(positions, n_samples, max_samples, seed)

    def argmax(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = model({m: inputs[m] for m in mods})
        return {"argmax": torch.stack([logits[m].argmax(-1) for m in mods])[..., None]}

    counts = torch.zeros(len(mods), model.head(mods[0]).n_heads, 2 + 2 * n_clusters,
                         dtype=torch.float64)  # stays 0 where this rank's share is empty
    if positions.numel():
        views, index = [], None
        for v in range(2):
            idx, out = passes.eval_pass(model, dataset, positions, mods, argmax, n_samples,
                                        f"stability pass {v + 1}/2")
            index = same_index(index, idx)
            views.append(out["argmax"][..., 0])  # (M, H, n), rows in position order
        counts = _kappa_counts(views[0], views[1], n_clusters)
    counts = all_reduce_sum(counts.to(passes.device), process_group).cpu()
    return _kappa(counts).mean(-1).tolist()


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


def set_fixed_weights(model: SelfLabelModel, weights: Any) -> None:
    """Set ``model``'s eq. 6 weights when ``weights`` (``TrainerConfig.modality_weights``) is a
    mapping; errors name the config field."""
    if isinstance(weights, Mapping):
        try:
            model.set_modality_weights(weights)
        except ValueError as e:
            raise ValueError(f"TrainerConfig.modality_weights: {e}") from None


def update_modality_weights(model: SelfLabelModel, fit: FitTracker, labels: torch.Tensor | None,
                            config: TrainerConfig, n_clusterings: int, n_scheduled: int,
                            process_group: Any = None,
                            stability: Callable[[], list[float]] | None = None
                            ) -> dict[str, float] | None:
    """Before clustering ``n_clusterings`` (0-based) of ``n_scheduled``, once the warm-up
    (``modality_weights_warmup``) is over, set ``model``'s eq. 6 weights: with
    ``modality_weights="information"`` from the cross-entropies in ``fit`` (summed over the
    ranks, then reset) against ``labels``, once a step was measured; with ``"stability"`` from
    the kappas that ``stability()`` measures (:func:`stability_kappas`), at every
    ``stability_every``-th clustering from the warm-up's end, each update keeping
    ``modality_weights_momentum`` of the weights before it. Otherwise they stay.

    Returns the weights in use (by modality), or None for fixed weights."""
    mode = config.modality_weights
    if mode not in ("information", "stability"):
        return None
    start = round(config.modality_weights_warmup * n_scheduled)
    started = n_clusterings >= start
    w = None
    if mode == "stability":
        due = (n_clusterings - start) % config.stability_every == 0
        if started and due and stability is not None:
            w = stability_weights(stability(), config.modality_weights_floor)
    else:
        sums = all_reduce_sum(fit.sums.clone(), process_group).cpu()
        if started and labels is not None and float(sums[-1]) > 0:
            ce = (sums[:-1] / sums[-1]).tolist()
            w = information_weights(ce, label_entropy(labels, config.heads.n_clusters),
                                    config.modality_weights_floor)
        fit.reset()
    if w is not None:
        keep = config.modality_weights_momentum
        w = [keep * float(before) + (1 - keep) * new
             for before, new in zip(model.modality_weights, w)]
        model.set_modality_weights(dict(zip(model.modalities, w)))
    return {m: float(v) for m, v in zip(model.modalities, model.modality_weights)}
