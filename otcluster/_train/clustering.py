"""One clustering of every sample: log-probabilities of all heads, averaged over modalities
(eq. 6), labelled by optimal transport; dense or memory-bounded (never holding N x K)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .._labeler import SinkhornLabeler
from .._sinkhorn import ConvergenceWarning, SinkhornResult, sinkhorn_features
from .config import TrainerConfig
from .data import DataPasses, same_index
from .model import SelfLabelModel

__all__ = ["Clusterer", "mean_log_probs_fn", "use_memory_bounded", "size_stats", "score",
           "check_ground_truth"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
# With ``sinkhorn_dtype="auto"`` a solve whose relative L1 column error ends above
# _FAILED_ERROR (or not finite) is redone with the next of _ATTEMPTS (dtype, Anderson memory;
# None = the solver's default). Two failures seen in training (see the trainer's report):
# * float32 underflow: when the network gives several clusters a log-probability a few nats
#   below the row maximum for every sample (collapsed clusters), lam times that gap underflows
#   the float32 kernel, those columns are all zeros and the error ends at 1.2 or NaN with
#   empty clusters; float64 solves it.
# * Anderson acceleration gives NaN for a head that has converged (zero residuals) while another
#   head of the same batch still iterates; plain Sinkhorn (Anderson memory 0) solves it.
_FAILED_ERROR = 0.05
_ATTEMPTS = ((torch.float32, None), (torch.float64, None), (torch.float64, 0))


def _failed(res: SinkhornResult) -> bool:
    err = res.error
    return not bool(torch.isfinite(err).all()) or float(err.max()) > _FAILED_ERROR


def _finite_rows(log_v: torch.Tensor) -> torch.Tensor:
    """Potentials (H, K) with non-finite rows replaced by zeros (a cold start for that head)."""
    bad = ~torch.isfinite(log_v).all(-1)
    return torch.where(bad[:, None], torch.zeros_like(log_v), log_v)


def _rewarn(caught: list) -> None:
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=3)


def use_memory_bounded(config: TrainerConfig, n_samples: int, world_size: int) -> bool:
    """Decided from the largest shard, so that every rank takes the same path."""
    if config.memory_bounded:
        return True
    n_local = -(-n_samples // world_size)
    # the trainer's float32 log-probabilities, the labeler's normalised copy (average_views),
    # and the solver's kernel (float32, or float64 when redone)
    per_entry = 8 + (8 if config.sinkhorn_dtype == "float64" else 4)
    dense = per_entry * config.heads.n_heads * n_local * config.heads.n_clusters
    return config.dense_max_bytes is not None and dense > config.dense_max_bytes


def mean_log_probs_fn(model: SelfLabelModel, heads: Any) -> Callable:
    """Batch function of a clustering pass: ``{"log_p": (H', B, K)}``, eq. 6 per batch."""

    def fn(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feats = {m: model.encode(inputs[m], m) for m in model.modalities}
        return {"log_p": model.mean_log_probs(feats, heads)}

    return fn


class Clusterer:
    """Labels of this rank's samples for every head, from one pass per head group.

    Parameters
    ----------
    model, passes, dataset, labeler, config
        The trainer's; ``labeler`` holds the prior and the warm start.
    n_samples : int
        N (sample indices lie in ``0..N-1``).
    process_group : ProcessGroup, optional
    prior : Tensor of shape (H, K)
        The heads' priors (memory-bounded path).
    """

    def __init__(self, model: SelfLabelModel, passes: DataPasses, dataset: Any,
                 labeler: SinkhornLabeler, config: TrainerConfig, n_samples: int,
                 process_group: Any = None, prior: torch.Tensor | None = None):
        self.model, self.passes, self.dataset = model, passes, dataset
        self.prior = prior
        self.labeler, self.config, self.n_samples = labeler, config, n_samples
        self.process_group = process_group
        self.n_retries = 0

    def __call__(self, positions: torch.Tensor, groups: list[torch.Tensor],
                 memory_bounded: bool) -> tuple[torch.Tensor, torch.Tensor, int, bool]:
        """``(labels (H, n_local), sample indices (n_local,), n_iter, converged)``."""
        solve = self.memory_bounded if memory_bounded else self.dense
        return solve(positions, groups)

    def _labeler_shape(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.config.heads.n_heads > 1 else t[0]

    def dense(self, positions: torch.Tensor, groups: list[torch.Tensor]):
        cfg = self.config
        H, K = cfg.heads.n_heads, cfg.heads.n_clusters
        device = self.passes.device
        log_p = torch.empty((H, positions.numel(), K), dtype=torch.float32, device=device)
        index = None
        for g, heads in enumerate(groups):
            idx, out = self.passes.eval_pass(self.model, self.dataset, positions,
                                             self.model.modalities,
                                             mean_log_probs_fn(self.model, heads.tolist()),
                                             self.n_samples,
                                             f"clustering pass {g + 1}/{len(groups)}")
            index = same_index(index, idx)
            log_p[heads.to(device)] = out["log_p"]
        x = self._labeler_shape(log_p)
        lab = self.labeler
        state = lab.state_dict()
        dtype0, anderson0 = lab.dtype, lab.anderson

        def solve(dtype, anderson):
            lab.reset().load_state_dict(state)
            lab.dtype = dtype
            lab.anderson = anderson0 if anderson is None else anderson
            try:
                return lab.fit(x).result_
            finally:
                lab.dtype, lab.anderson = dtype0, anderson0

        res, n_iter = self._robust_solve(solve)
        if not bool(torch.isfinite(res.log_v).all()):  # never warm-start from NaN potentials
            lab.reset().load_state_dict({"prior": state["prior"], "log_v": _finite_rows(
                res.log_v.reshape(H, K)).reshape(res.log_v.shape)})
        return res.labels.reshape(H, -1), index, n_iter, bool(res.converged.all())

    def _robust_solve(self, solve: Callable[[torch.dtype, int | None], SinkhornResult]
                      ) -> tuple[SinkhornResult, int]:
        """``solve(dtype, anderson)``, redone as in ``_ATTEMPTS`` while it fails ("auto")."""
        mode = self.config.sinkhorn_dtype
        if mode != "auto":
            res = solve(_DTYPES[mode], None)
            return res, res.n_iter
        total = 0
        for i, (dtype, anderson) in enumerate(_ATTEMPTS):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                res = solve(dtype, anderson)
            total += res.n_iter
            if not _failed(res) or i == len(_ATTEMPTS) - 1:
                _rewarn(caught)
                return res, total
            self.n_retries += 1
        raise AssertionError("unreachable")

    def memory_bounded(self, positions: torch.Tensor, groups: list[torch.Tensor]):
        """Eq. 6 without N x K: mean over modalities of log_softmax(W_m z_m + b_m) equals
        log_softmax(concat_m(z_m) @ concat_m(W_m / M)^T + mean_m b_m) up to a per-row constant,
        which leaves the transport solution unchanged; so each head is one linear map of the
        concatenated penultimate features and :func:`sinkhorn_features` applies."""
        cfg, model = self.config, self.model
        H, K = cfg.heads.n_heads, cfg.heads.n_clusters
        mods = model.modalities
        M = len(mods)
        state = self.labeler.state_dict()
        warm = state.get("log_v")
        warm = None if warm is None else warm.reshape(H, K)
        prior = self.prior
        log_v = torch.zeros((H, K), dtype=torch.float64)
        labels = torch.empty((H, positions.numel()), dtype=torch.int64)
        index, n_iter, converged = None, 0, True
        linear = all(model.heads[m].is_linear for m in mods)
        kw = dict(lam=cfg.lam, tol=cfg.sinkhorn_tol, max_iter=cfg.sinkhorn_max_iter,
                  block_rows=cfg.block_rows, process_group=self.process_group)

        def features(inputs):
            return {m: model.encode(inputs[m], m).float() for m in mods}

        for g, heads in enumerate(groups):
            idx, feats = self.passes.eval_pass(model, self.dataset, positions, mods, features,
                                               self.n_samples,
                                               f"clustering pass {g + 1}/{len(groups)}")
            index = same_index(index, idx)
            hs = heads.tolist()
            # batches of heads sharing features: all of the group for linear heads
            for hb in [hs] if linear else [[h] for h in hs]:
                z, w, b = self._linear_problem(feats, hb, linear, M)
                res, it = self._solve_features(z, w, b, prior[hb],
                                               None if warm is None else warm[hb], kw)
                labels[hb] = res.labels.reshape(len(hb), -1).cpu()
                log_v[hb] = _finite_rows(res.log_v.reshape(len(hb), K).cpu())
                n_iter = max(n_iter, it)
                converged = converged and bool(res.converged.all())
        self.labeler.load_state_dict({"prior": self._labeler_shape(prior),
                                      "log_v": self._labeler_shape(log_v)})
        return labels, index, n_iter, converged

    def _linear_problem(self, feats: dict[str, torch.Tensor], hb: list[int], linear: bool,
                        M: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features (n, sum D'), weights (h, K, sum D') / M and mean biases (h, K) of heads ``hb``."""
        mods = self.model.modalities
        heads = self.model.heads
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                if linear:
                    z = torch.cat([feats[m] for m in mods], 1)
                else:
                    z = torch.cat([self._penultimate(feats[m], m, hb[0]) for m in mods], 1)
                lin = [[heads[m].last_linear(h) for m in mods] for h in hb]
                w = torch.stack([torch.cat([ln.weight.float() / M for ln in row], 1)
                                 for row in lin])
                b = torch.stack([torch.stack([ln.bias.float() if ln.bias is not None
                                              else torch.zeros_like(ln.weight[:, 0])
                                              for ln in row]).mean(0) for row in lin])
        finally:
            self.model.train(was)
        return z, w, b

    def _solve_features(self, z, w, b, prior, warm, kw) -> tuple[Any, int]:
        """:func:`sinkhorn_features`, redone as in ``_ATTEMPTS`` while it fails."""

        def solve(dtype, anderson):
            extra = {} if anderson is None else {"anderson": anderson}
            return sinkhorn_features(z, w, b, prior=prior, warm_start=warm, dtype=dtype, **extra,
                                     **kw)

        return self._robust_solve(solve)

    def _penultimate(self, feats: torch.Tensor, modality: str, head: int) -> torch.Tensor:
        head_mod = self.model.heads[modality]
        bs = self.config.block_rows
        return torch.cat([head_mod.penultimate(feats[i:i + bs], head).float()
                          for i in range(0, feats.shape[0], bs)])


def size_stats(labels: torch.Tensor, prev: torch.Tensor | None, K: int) -> dict[str, Any]:
    """Cluster-size entropy (nats, mean over heads), smallest and largest cluster, and the
    fraction of labels that changed since ``prev`` (mean over heads)."""
    N = labels.shape[1]
    sizes = torch.stack([torch.bincount(lab, minlength=K) for lab in labels]).double()
    frac = sizes / N
    ent = -(frac * torch.log(frac.clamp_min(1e-300))).sum(1)
    return {"size_entropy": float(ent.mean()), "min_size": int(sizes.min()),
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
