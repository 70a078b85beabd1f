"""One clustering of every sample: log-probabilities of all heads, averaged over modalities
(eq. 6), labelled by optimal transport; dense or memory-bounded (never holding N x K)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .._distributed import all_gather_objects, broadcast_from_first, group_rank_size
from .._labeler import SinkhornLabeler
from .config import TrainerConfig
from .data import DataPasses, same_index
from .first_labels import kmeans_labels
from .model import SelfLabelModel
from .veto import artefact_clusters, veto_weights, vetoed_shares, weighted_mean_
from .weighting import size_entropy

__all__ = ["Clusterer", "log_probs_fn", "mean_log_probs_fn", "use_memory_bounded", "size_stats", "score",
           "check_ground_truth"]


def use_memory_bounded(config: TrainerConfig, n_samples: int, world_size: int,
                       n_modalities: int = 1) -> bool:
    """Decided from the largest shard, so that every rank takes the same path."""
    if config.memory_bounded:
        return True
    n_local = -(-n_samples // world_size)
    # the trainer's float32 log-probabilities (averaged per batch, so the labeler makes no
    # copy; each modality's with ``modality_veto``) and the solver's kernel (float32, or
    # float64 when asked)
    held = n_modalities if config.modality_veto is not None else 1
    per_entry = 4 * held + (8 if config.sinkhorn_dtype == "float64" else 4)
    dense = per_entry * config.heads.n_heads * n_local * config.heads.n_clusters
    return config.dense_max_bytes is not None and dense > config.dense_max_bytes


def mean_log_probs_fn(model: SelfLabelModel, heads: Any) -> Callable:
    """Batch function of a clustering pass: ``{"log_p": (H', B, K)}``, eq. 6 per batch."""

    def fn(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feats = {m: model.encode(inputs[m], m) for m in model.modalities}
        return {"log_p": model.mean_log_probs(feats, heads)}

    return fn


def log_probs_fn(model: SelfLabelModel, heads: Any) -> Callable:
    """Batch function of a clustering pass: each modality's log-probabilities
    ``{m: (H', B, K)}``."""

    def fn(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return model.log_probs_from_features({m: model.encode(inputs[m], m)
                                              for m in model.modalities}, heads)

    return fn


class Clusterer:
    """Labels of this rank's samples for every head, from one pass per head group.

    Every solve goes through ``labeler`` (its prior, warm start and retry ladder); nothing here
    changes the labeler's settings.

    Parameters
    ----------
    model, passes, dataset, labeler, config, process_group
        The trainer's.
    n_samples : int
        N (sample indices lie in ``0..N-1``).

    Attributes
    ----------
    vetoed_ : dict of str to float or None
        With ``config.modality_veto``: after each call, the share of the samples (mean over
        heads, all ranks) whose label left out each modality (:mod:`.veto`).
    """

    def __init__(self, model: SelfLabelModel, passes: DataPasses, dataset: Any,
                 labeler: SinkhornLabeler, config: TrainerConfig, n_samples: int,
                 process_group: Any = None):
        self.model, self.passes, self.dataset = model, passes, dataset
        self.labeler, self.config, self.n_samples = labeler, config, n_samples
        self.process_group = process_group
        self.vetoed_: dict[str, float] | None = None
        if config.modality_veto is not None and len(model.modalities) < 2:
            raise ValueError(f"TrainerConfig.modality_veto needs two or more modalities, got "
                             f"{list(model.modalities)}")

    def __call__(self, positions: torch.Tensor, groups: list[torch.Tensor],
                 memory_bounded: bool, first: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, int, bool]:
        """``(labels (H, n_local), sample indices (n_local,), n_iter, converged)``; ``first``:
        the run's first clustering (``config.init_labels`` applies)."""
        if first and self.config.init_labels == "kmeans":
            return self.kmeans(positions)
        solve = self.memory_bounded if memory_bounded else self.dense
        return solve(positions, groups)

    def kmeans(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, bool]:
        """Balanced k-means labels of every sample's features (:mod:`.first_labels`): one
        pass over this rank's shard; the first rank clusters all ranks' features (gathered onto
        every rank) and its labels go to every rank."""
        mods, cfg = self.model.modalities, self.config
        idx, feats = self._pass(0, [positions], positions,
                                lambda inputs: {m: self.model.encode(inputs[m], m).float()
                                                for m in mods})
        parts = all_gather_objects((idx.cpu(), {m: feats[m].cpu() for m in mods}),
                                   self.process_group)
        index_all = torch.cat([p[0] for p in parts])
        order = index_all.argsort()
        full = {m: torch.cat([p[1][m] for p in parts])[order] for m in mods}
        H, K = cfg.heads.n_heads, cfg.heads.n_clusters
        labels = torch.zeros((H, self.n_samples), dtype=torch.int64)
        if group_rank_size(self.process_group)[0] == 0:
            labels[:, index_all[order]] = kmeans_labels(full, K, H, cfg.seed, cfg.lam)
        labels = broadcast_from_first(labels, self.process_group)
        return labels[:, idx.cpu()], idx, 0, True

    def _pass(self, g: int, groups: list, positions: torch.Tensor, fn: Callable):
        return self.passes.eval_pass(self.model, self.dataset, positions, self.model.modalities,
                                     fn, self.n_samples, f"clustering pass {g + 1}/{len(groups)}")

    def dense(self, positions: torch.Tensor, groups: list[torch.Tensor]):
        """Mean log-probabilities of all heads (eq. 6, averaged per batch): one (H, n, K)
        float32 tensor, which the labeler uses without a copy."""
        H, K = self.config.heads.n_heads, self.config.heads.n_clusters
        device, mods = self.passes.device, self.model.modalities
        veto = self.config.modality_veto is not None
        # with the veto, each modality's log-probabilities until the weights are known
        log_p = torch.empty((len(mods) if veto else 1, H, positions.numel(), K),
                            dtype=torch.float32, device=device)
        index = None
        for g, heads in enumerate(groups):
            fn = log_probs_fn(self.model, heads.tolist()) if veto else \
                mean_log_probs_fn(self.model, heads.tolist())
            idx, out = self._pass(g, groups, positions, fn)
            index = same_index(index, idx)
            for i, key in enumerate(mods if veto else ["log_p"]):
                log_p[i, heads.to(device)] = out[key]
        log_p = self._vetoed_mean(log_p) if veto else log_p[0]
        lab = self.labeler.fit(log_p, heads=list(range(H)))
        return lab.labels_.reshape(H, -1), index, lab.n_iter_, _converged(lab)

    def _vetoed_mean(self, log_p: torch.Tensor) -> torch.Tensor:
        """Eq. 6 of each modality's log-probabilities ``(M, H, n, K)`` with per-sample weights
        (:mod:`.veto`), into ``log_p[0]``."""
        w = self._veto_weights(log_p.argmax(-1))
        mods = self.model.modalities
        self.vetoed_ = vetoed_shares(w, self.model.weights_of(mods), mods, self.process_group)
        return weighted_mean_(log_p, w)

    def _veto_weights(self, argmax: torch.Tensor) -> torch.Tensor:
        """Per-sample eq. 6 weights ``(M, H, n)`` from each modality's clusters ``(M, H, n)``."""
        threshold = self.config.modality_veto
        assert threshold is not None
        flags = artefact_clusters(argmax, self.config.heads.n_clusters, float(threshold),
                                  self.process_group)
        return veto_weights(argmax, flags, self.model.weights_of(self.model.modalities))

    def memory_bounded(self, positions: torch.Tensor, groups: list[torch.Tensor]):
        """Eq. 6 without N x K: the mean over modalities (weights c_m, 1/M by default) of
        log_softmax(W_m z_m + b_m) equals log_softmax(concat_m(z_m) @ concat_m(c_m W_m)^T +
        sum_m c_m b_m) up to a per-row constant,
        which leaves the transport solution unchanged; so each head is one linear map of the
        concatenated penultimate features and :meth:`SinkhornLabeler.fit_features` applies.
        With ``modality_veto`` the weights differ per sample and head: each sample's block of
        modality m is scaled by its weight instead (:meth:`_vetoed_problem`), one head at a time."""
        cfg, model = self.config, self.model
        mods = model.modalities
        labels = torch.empty((cfg.heads.n_heads, positions.numel()), dtype=torch.int64)
        index, n_iter, converged = None, 0, True
        linear = all(model.head(m).is_linear for m in mods)

        def features(inputs):
            return {m: model.encode(inputs[m], m).float() for m in mods}

        veto = cfg.modality_veto is not None
        vetoes: dict[int, torch.Tensor] = {}  # with the veto: each head's (M, n) weights
        for g, heads in enumerate(groups):
            idx, feats = self._pass(g, groups, positions, features)
            index = same_index(index, idx)
            hs = heads.tolist()
            # batches of heads sharing features: all of the group for linear heads (one by
            # one with the veto, whose weights differ per head)
            for hb in [hs] if linear and not veto else [[h] for h in hs]:
                if veto:
                    z, w, b, vetoes[hb[0]] = self._vetoed_problem(feats, hb[0], linear)
                else:
                    z, w, b = self._linear_problem(feats, hb, linear, len(mods))
                lab = self.labeler.fit_features(z, w, b, heads=hb, block_rows=cfg.block_rows)
                labels[hb] = lab.labels_.reshape(len(hb), -1).cpu()
                n_iter = max(n_iter, lab.n_iter_)
                converged = converged and _converged(lab)
        if veto:
            w_all = torch.stack([vetoes[h] for h in range(cfg.heads.n_heads)], 1)
            self.vetoed_ = vetoed_shares(w_all, model.weights_of(mods), mods, self.process_group)
        return labels, index, n_iter, converged

    def _vetoed_problem(self, feats: dict[str, torch.Tensor], head: int, linear: bool
                        ) -> tuple[torch.Tensor, ...]:
        """:meth:`_linear_problem` of one head with per-sample eq. 6 weights (:mod:`.veto`):
        each modality's block of features, with a column of ones for its bias, scaled by the
        sample's weight; the last layers side by side, unscaled. Also the (M, n) weights."""
        mods, cfg = self.model.modalities, self.config
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                zs = [feats[m] if linear else self._penultimate(feats[m], m, head) for m in mods]
                lin = [self.model.head(m).last_linear(head) for m in mods]
                wb = [torch.cat([ln.weight.float(), _bias(ln)[:, None]], 1) for ln in lin]
                argmax = torch.stack([_block_argmax(z, w, cfg.block_rows)
                                      for z, w in zip(zs, wb)])[:, None]  # (M, 1, n)
        finally:
            self.model.train(was)
        weights = self._veto_weights(argmax)[:, 0]  # (M, n)
        z = torch.cat([torch.cat([zm, torch.ones_like(zm[:, :1])], 1) * weights[i, :, None]
                       for i, zm in enumerate(zs)], 1)
        return z, torch.cat(wb, 1)[None], z.new_zeros(1, wb[0].shape[0]), weights

    def _linear_problem(self, feats: dict[str, torch.Tensor], hb: list[int], linear: bool,
                        M: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features (n, sum D'), weights (h, K, sum D') / M and mean biases (h, K) of heads ``hb``."""
        mods = self.model.modalities
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                if linear:
                    z = torch.cat([feats[m] for m in mods], 1)
                else:
                    z = torch.cat([self._penultimate(feats[m], m, hb[0]) for m in mods], 1)
                lin = [[self.model.head(m).last_linear(h) for m in mods] for h in hb]
                mw = self.model.weights_of(mods) or [1.0 / M] * M
                w = torch.stack([torch.cat([ln.weight.float() * c for ln, c in zip(row, mw)], 1)
                                 for row in lin])
                b = torch.stack([torch.stack([_bias(ln) * c for ln, c in zip(row, mw)]).sum(0)
                                 for row in lin])
        finally:
            self.model.train(was)
        return z, w, b

    def _penultimate(self, feats: torch.Tensor, modality: str, head: int) -> torch.Tensor:
        head_mod = self.model.head(modality)
        bs = self.config.block_rows
        return torch.cat([head_mod.penultimate(feats[i:i + bs], head).float()
                          for i in range(0, feats.shape[0], bs)])


def _bias(linear: torch.nn.Linear) -> torch.Tensor:
    """The layer's bias as float32 (zeros when it has none)."""
    return linear.bias.float() if linear.bias is not None else linear.weight.new_zeros(
        linear.weight.shape[0], dtype=torch.float32)


def _block_argmax(z: torch.Tensor, wb: torch.Tensor, block_rows: int) -> torch.Tensor:
    """Argmax over clusters of ``z @ W.T + b`` (``wb = [W | b]``), ``block_rows`` rows at a time."""
    out = torch.empty(z.shape[0], dtype=torch.int64, device=z.device)
    for i in range(0, z.shape[0], block_rows):
        out[i:i + block_rows] = (z[i:i + block_rows] @ wb[:, :-1].T + wb[:, -1]).argmax(-1)
    return out


def _converged(labeler: SinkhornLabeler) -> bool:
    res = labeler.result_
    return res is not None and bool(res.converged.all())


def size_stats(labels: torch.Tensor, prev: torch.Tensor | None, K: int) -> dict[str, Any]:
    """Cluster-size entropy (nats, mean over heads), smallest and largest cluster, and the
    fraction of labels that changed since ``prev`` (mean over heads)."""
    sizes = torch.stack([torch.bincount(lab, minlength=K) for lab in labels])
    return {"size_entropy": size_entropy(sizes), "min_size": int(sizes.min()),
            "max_size": int(sizes.max()),
            "changed": None if prev is None else float((prev != labels).double().mean())}


def check_ground_truth(gt: Any, n: int) -> np.ndarray | None:
    """``gt`` as an integer array of shape (n,) (or None)."""
    if gt is None:
        return None
    arr = np.asarray(gt.cpu() if isinstance(gt, torch.Tensor) else gt)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"ground_truth must have shape (N={n},), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ground_truth must hold integer class labels, got dtype {arr.dtype}")
    return arr


def score(gt: np.ndarray, labels: torch.Tensor) -> dict[str, float]:
    """NMI / ARI / accuracy of head 0 and the NMI averaged over heads (monitoring only)."""
    from .._metrics import cluster_report

    r = cluster_report(gt, labels[0].numpy())
    nmis = [r.nmi] + [cluster_report(gt, lab.numpy()).nmi for lab in labels[1:]]
    return {"nmi": float(r.nmi), "ari": float(r.ari), "acc": float(r.acc),
            "nmi_mean": float(np.mean(nmis))}
