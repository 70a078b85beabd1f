"""`TrainerConfig`: the trainer's hyper-parameters and their validation (allowed values as data).

The public field names are the one vocabulary of the project: the video recipe uses them as is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._heads import HeadConfig
from .._schedule import LR_SCHEDULES, OPTIMIZERS
from .._solver import PRIOR_KINDS, validate_prior
from .first_labels import INIT_LABELS
from .weighting import WEIGHTINGS

__all__ = ["TrainerConfig", "storable"]


def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _nonneg_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _pos_float(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _nonneg_float(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


#: a number in [0, 1): the optimizer's momentum, warm-ups, floors and averaging shares
_FRACTION: tuple[Callable[[Any], bool], str] = (lambda v: _nonneg_float(v) and v < 1,
                                               "a number in [0, 1)")


def _opt(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _modality_map(v: Any, check: Callable[[Any], bool]) -> bool:
    return isinstance(v, Mapping) and len(v) > 0 and all(
        isinstance(k, str) and check(w) for k, w in v.items())


def _weight_map(v: Any) -> bool:
    return isinstance(v, Mapping) and len(v) > 0 and all(
        isinstance(k, str) and _nonneg_float(w) for k, w in v.items()) and sum(v.values()) > 0


# field -> (check, what is allowed); the prior and heads are checked separately
_CONSTRAINTS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (_pos_int, "a positive integer"),
    "batch_size": (_pos_int, "a positive integer"),
    "lr": (lambda v: _pos_float(v) or _modality_map(v, _pos_float),
           "a positive number or a dict {modality: positive number}"),
    "momentum": _FRACTION,
    "weight_decay": (_nonneg_float, "a non-negative number"),
    "warmup_epochs": (_nonneg_int, "a non-negative integer"),
    "lr_schedule": (lambda v: v in LR_SCHEDULES, f"one of {LR_SCHEDULES}"),
    "optimizer": (lambda v: v in OPTIMIZERS or _modality_map(v, lambda k: k in OPTIMIZERS),
                  f"one of {OPTIMIZERS} or a dict {{modality: one of them}}"),
    "lam": (_pos_float, "a positive number"),
    "prior_sigma": (_nonneg_float, "a non-negative number"),
    "zipf_exponent": (_nonneg_float, "a non-negative number"),
    "prior_warmup": _FRACTION,
    "prior_warmup_tau": (_opt(_nonneg_float), "a non-negative number or None"),
    "modality_weights": (lambda v: v in WEIGHTINGS or _weight_map(v),
                         f"one of {WEIGHTINGS} or a dict {{modality: weight}} of non-negative "
                         f"numbers with a positive sum"),
    "modality_weights_floor": _FRACTION,
    "modality_weights_warmup": _FRACTION,
    "modality_weights_momentum": _FRACTION,
    "stability_max_samples": (_opt(_pos_int), "a positive integer or None"),
    "stability_every": (_pos_int, "a positive integer"),
    "modality_veto": (_opt(_pos_float), "a positive number or None"),
    "n_clusterings": (_pos_int, "a positive integer"),
    "init_labels": (lambda v: v in INIT_LABELS, f"one of {INIT_LABELS}"),
    "schedule_power": (_pos_float, "a positive number"),
    "align": (lambda v: v in (None, "exact", "greedy"), "'exact', 'greedy' or None"),
    "head_groups": (_pos_int, "a positive integer"),
    "num_workers": (_nonneg_int, "a non-negative integer"),
    "amp": (lambda v: isinstance(v, bool), "a bool"),
    "sync_batchnorm": (lambda v: isinstance(v, bool), "a bool"),
    "seed": (_nonneg_int, "a non-negative integer"),
    "checkpoint_dir": (lambda v: v is None or isinstance(v, (str, Path)), "a path or None"),
    "checkpoint_every": (_pos_int, "a positive integer"),
    "memory_bounded": (lambda v: isinstance(v, bool), "a bool"),
    "show_progress": (lambda v: isinstance(v, bool), "a bool"),
    "sinkhorn_tol": (_pos_float, "a positive number"),
    "sinkhorn_max_iter": (_pos_int, "a positive integer"),
    "sinkhorn_tau": (_opt(_nonneg_float), "a non-negative number or None"),
    "sinkhorn_scaling_stages": (_nonneg_int, "a non-negative integer"),
    "sinkhorn_dtype": (lambda v: v in ("auto", "float32", "float64"),
                       "'auto', 'float32' or 'float64'"),
    "dense_max_bytes": (_opt(_pos_int), "a positive integer or None"),
    "align_max_samples": (_opt(_pos_int), "a positive integer or None"),
    "block_rows": (_pos_int, "a positive integer"),
    "eval_batch_size": (_opt(_pos_int), "a positive integer or None"),
    "eval_threads": (_pos_int, "a positive integer"),
    "prefetch": (lambda v: isinstance(v, bool), "a bool"),
}


@dataclass
class TrainerConfig:
    """Hyper-parameters of :class:`SelfLabelTrainer` (defaults: the paper's).

    Attributes
    ----------
    heads : HeadConfig
        Heads per modality (H, K, hidden width, dropout).
    epochs, batch_size : int
        Training length and per-process batch size.
    lr, momentum, weight_decay : float
        Of the ``optimizer``; ``lr`` is reached after ``warmup_epochs`` of linear warm-up, then
        follows ``lr_schedule``. (The paper warms up to ``0.01 x world size``: scale ``lr``
        yourself.) ``lr`` may be a dict ``{modality: lr}`` naming every modality.
    optimizer : {"sgd", "adamw"} or dict of str to either, default "sgd"
        SGD with ``momentum`` (the paper's) or AdamW (torch's default betas, decoupled
        ``weight_decay``; ``momentum`` unused). A dict ``{modality: kind}`` naming every
        modality gives each modality's encoder and heads their own (e.g. AdamW for the
        pictures, SGD for the sound). A checkpoint resumes only with its own.
    warmup_epochs : int
    lr_schedule : {"constant", "cosine"}, default "constant"
        After the warm-up: ``"constant"`` (the paper's) or ``"cosine"``, decaying to 0 at the
        last step (:class:`otcluster._schedule.WarmupCosine`).
    lam : float
        λ of the transport problem (paper: 20).
    prior : {"uniform", "gaussian", "zipf"} or sequence of K floats (or H x K)
        Cluster-size prior, held by the trainer's :class:`SinkhornLabeler`; a Gaussian one
        (``N(1, prior_sigma)``) is drawn once per head from ``seed``. A named prior is sorted
        onto the clusters at every clustering (eq. 4); a vector keeps its order (its k-th
        entry is cluster k's share).
    prior_sigma : float
    zipf_exponent : float, default 1.0
        Exponent ``s`` of the Zipf prior (``p_k ∝ k ** -s``).
    prior_warmup : float in [0, 1), default 0
        Fraction of the clusterings, the first ones, solved with the uniform prior (relaxed by
        ``prior_warmup_tau``) instead of a non-uniform ``prior``, which is used from then on,
        sorted (eq. 4) onto the clusters the warm-up found. Eq. 4 gives the largest share to
        the cluster that is largest now: for a random network that is noise, and training on
        its labels locks it in (Zipf-skewed digits, ``docs/benchmarks/zipf_priors.md``, NMI:
        matched Zipf prior 0.557 without a warm-up, 0.596 with 0.5; uniform prior 0.570, with
        ``sinkhorn_tau=1`` 0.608). Ignored for ``prior="uniform"``.
    prior_warmup_tau : float or None, default 1.0
        ``tau`` of the warm-up's semi-relaxed marginals (see ``sinkhorn_tau``), so the clusters
        can take the data's sizes that the prior is then sorted by (None: balanced, which
        ranked worse on the digits tuning seeds).
    modality_weights : {"equal", "information", "stability"} or dict of str to float, default "equal"
        Weights of the modalities in eq. 6 (the clustering and :meth:`predict`). ``"equal"``:
        the paper's mean. ``"information"``: at every clustering, each modality's share is
        ``I_m = max(H(Y) - CE_m, 0)``, a lower bound on the mutual information between its
        inputs and the current labels (``CE_m``: its heads' training cross-entropy since the
        previous clustering; ``H(Y)``: entropy of the cluster sizes), and its weight is
        ``max(I_m / sum(I), modality_weights_floor)``, normalised: a modality that predicts the
        labels poorly loses its say in them down to the floor (see
        ``otcluster._train.weighting``). Experimental: a feedback loop that can settle on the
        modality that fits its own labels best, not the informative one (digits with a noise
        view: collapsed in 2 of 5 seeds, ``docs/benchmarks/modality_weights.md``).
        ``"stability"``: before every clustering, two extra passes over the training set give
        two augmented views of every sample, and each modality's share is ``max(kappa_m, 0) ** 2``
        (normalised, at least ``modality_weights_floor``), ``kappa_m`` the chance-corrected
        agreement (Cohen's kappa) of its heads' argmax between the views, mean over heads: a
        modality whose clusters follow what its augmentations change gets little say. A dict fixes
        the weights (one entry per modality), the robust choice when you know the weak one. The
        weights are saved with the model (``SelfLabelModel.modality_weights``) and recorded in
        the history.
    modality_weights_floor : float in [0, 1), default 0.2
        Least share of a modality with ``"information"`` or ``"stability"`` (before normalising). On the video
        recipe's tuning worlds, without a floor the slower-learning video stream dropped to
        weight 0 in the first epochs of every world, and the worlds where it carries the class
        lost; 0.2 kept them (``docs/benchmarks/robustness_av_information.md``).
    modality_weights_warmup : float in [0, 1), default 0
        With ``"information"`` or ``"stability"``: fraction of the clusterings, the first
        ones, that keep equal weights, so that a modality that learns more slowly is not judged
        before its encoder has learnt anything.
    modality_weights_momentum : float in [0, 1), default 0
        With ``"information"`` or ``"stability"``: share of the previous weights kept at each
        update, ``w = momentum * w_before + (1 - momentum) * w_measured`` (an exponential moving
        average from the equal weights), so that one noisy measurement cannot swing the
        weights from one modality to the other between two clusterings. 0: each update sets the
        measured weights.
    stability_max_samples : int or None, default 4096
        With ``"stability"``: measure the kappas on a random subset of at most this many
        samples, drawn afresh at every clustering from ``seed`` and the clustering's index (None:
        every sample). Bounds the two extra passes' cost: at most ``2 * stability_max_samples``
        samples per clustering (the kappa's standard error is at most about
        ``0.5 / sqrt(n) / (1 - p_e)``, ``p_e`` its chance agreement).
    stability_every : int, default 1
        With ``"stability"``: measure the kappas at every ``stability_every``-th clustering
        after the warm-up (the first one included) and keep the weights in between, dividing
        the two extra passes' cost by about this factor.
    modality_veto : float or None, default None
        Experimental: a per-sample veto of a modality's artefact clusters at every clustering
        (``otcluster._train.veto``). Per head, a cluster of a modality's own heads (argmax) is
        flagged when no other modality groups its members: the largest share of them in any
        one of another modality's clusters is below ``modality_veto / K``. A sample in a flagged
        cluster of some modalities but not all is labelled (eq. 6) by the others alone (their
        weights renormalised); the rest keep ``modality_weights``. The history records the
        share of samples whose label left out each modality (``"vetoed"``). Needs two or more
        modalities; the dense path holds every modality's log-probabilities (M times the
        memory, counted by ``dense_max_bytes``). None: off. On the video recipe's robustness
        suite 2.0 passed a screen on the tuning runs (+2.8 +- 1.8 NMI) and lost on the held-out
        runs (-1.2 +- 1.2; the video heads -4.1 +- 2.0), so no preset uses it
        (``docs/benchmarks/robustness_av_veto.md``).
    n_clusterings, schedule_power : int, float
        Clusterings at steps ``total_steps * linspace(0, 1, n) ** p`` (first at step 0, last
        after the final step), see :func:`otcluster.clustering_steps`.
    init_labels : {"heads", "kmeans"}, default "heads"
        The labels of the first clustering (step 0). ``"heads"``: the paper's, from the random
        heads' eq. 6 log-probabilities. ``"kmeans"``: balanced k-means (uniform sizes,
        :class:`otcluster.OTKMeans`, ``lam``) of the untrained encoders' pooled features, each
        modality's L2-normalised per sample and put side by side, one k-means++ start per head
        (``otcluster._train.first_labels``); needs scikit-learn, and holds every sample's
        features (``N x sum D_m`` float64, gathered onto every rank) for that one clustering.
    align : {"exact", "greedy"} or None
        Align every other modality's heads to the first modality's at initialisation (eq. 7).
    head_groups : int
        Decorrelated heads: heads are split at random into this many groups (at most H), each
        clustered from its own augmentation pass over the data.
    num_workers : int
        DataLoader workers.
    amp : bool
        Mixed precision (float16 autocast + gradient scaling); used on CUDA only.
    sync_batchnorm : bool
        Convert BatchNorm layers to SyncBatchNorm when training distributed on CUDA.
    seed : int
        Seeds the prior, head groups, epoch shuffles and, at the start of a fresh ``fit``,
        the global torch / numpy / python generators (``seed + rank``).
    checkpoint_dir : str or None
        Where ``last.pt`` is written every ``checkpoint_every`` epochs (and at the end).
    checkpoint_every : int
    memory_bounded : bool
        Cluster with :meth:`SinkhornLabeler.fit_features` from pooled features and the heads'
        last layers, never holding N x K (also used automatically above ``dense_max_bytes``).
    show_progress : bool
        tqdm progress bars (first rank only).
    sinkhorn_tol, sinkhorn_max_iter : float, int, default 1e-2 and 1000
        Stopping rule of the solver (relative L1 column-marginal error). Looser than the
        solver's own default (1e-3): once a network is confident (nearly hard predictions) the
        problem at lam=20 converges slowly. Measured on a 10-head digits clustering late in
        training: 231 passes at 1e-2, 1908 at 1e-3, with 99.5 % and 99.96 % of the labels of a
        5000-pass solve (cluster sizes 177-186 vs 178-182 for a prior of 180).
    sinkhorn_tau : float or None, default None
        Semi-relaxed cluster marginals: the labeler's ``tau`` (see :func:`otcluster.sinkhorn`).
    sinkhorn_scaling_stages : int, default 0
        λ-scaling of every clustering's solve: the labeler's ``scaling_stages`` (see
        :func:`otcluster.sinkhorn`). Fewer passes once the network is confident.
    sinkhorn_dtype : {"auto", "float32", "float64"}, default "auto"
        The labeler's ``dtype``: precision of the solver's kernel. ``"auto"``: float32, and a
        solve that fails (relative column error above 0.05 or not finite) is redone in float64,
        then in float64 without Anderson acceleration (float32 underflows when collapsed
        clusters are far less likely than the best one for every sample; Anderson steps gave
        NaN for a converged head).
    dense_max_bytes : int or None, default 4 GiB
        When the dense clustering would hold more than this (the float32 log-probabilities,
        averaged per batch so the labeler makes no copy, and the kernel: ``8 * H * N_local * K``
        bytes, 12 with ``sinkhorn_dtype="float64"``, ``4 * (M - 1) * H * N_local * K`` more with
        ``modality_veto``), use the memory-bounded path. ``None``: never switch.
    align_max_samples : int or None, default 100000
        Alignment uses at most this many samples (a fixed random subset).
    block_rows : int
        Rows per block of the memory-bounded solver.
    eval_batch_size : int or None
        Batch size of the clustering / inference passes (default ``batch_size``).
    eval_threads : int, default 1
        Batches of those passes computed at once on the CPU, each on one thread, when torch
        runs on one thread (``torch.set_num_threads(1)``): the same outputs, bit for bit, on
        more cores (:func:`otcluster._threads.map_batches`).
    prefetch : bool, default True
        Without DataLoader workers (``num_workers = 0``) and on one torch thread, load the next
        training batch on a background thread during each step's backward pass: the same random
        numbers in the same order, so the same weights bit for bit, in less time.
    """

    heads: HeadConfig = field(default_factory=HeadConfig)
    epochs: int = 200
    batch_size: int = 16
    lr: float | dict = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-5
    warmup_epochs: int = 10
    lr_schedule: str = "constant"
    optimizer: str | dict = "sgd"
    lam: float = 20.0
    prior: str | list = "gaussian"
    prior_sigma: float = 0.1
    zipf_exponent: float = 1.0
    prior_warmup: float = 0.0
    prior_warmup_tau: float | None = 1.0
    modality_weights: str | dict = "equal"
    modality_weights_floor: float = 0.2
    modality_weights_warmup: float = 0.0
    modality_weights_momentum: float = 0.0
    stability_max_samples: int | None = 4096
    stability_every: int = 1
    modality_veto: float | None = None
    n_clusterings: int = 100
    schedule_power: float = 1.5
    init_labels: str = "heads"
    align: str | None = "exact"
    head_groups: int = 2
    num_workers: int = 0
    amp: bool = True
    sync_batchnorm: bool = False
    seed: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1
    memory_bounded: bool = False
    show_progress: bool = True
    sinkhorn_tol: float = 1e-2
    sinkhorn_max_iter: int = 1000
    sinkhorn_dtype: str = "auto"
    sinkhorn_tau: float | None = None
    sinkhorn_scaling_stages: int = 0
    dense_max_bytes: int | None = 4 * 2**30
    align_max_samples: int | None = 100_000
    block_rows: int = 8192
    eval_batch_size: int | None = None
    eval_threads: int = 1
    prefetch: bool = True

    def validate(self) -> TrainerConfig:
        """Raise ``ValueError`` naming the first bad field; return ``self``."""
        if not isinstance(self.heads, HeadConfig):
            raise ValueError(f"TrainerConfig.heads must be a HeadConfig, got "
                             f"{type(self.heads).__name__}")
        self.heads.validate()
        for name, (check, allowed) in _CONSTRAINTS.items():
            value = getattr(self, name)
            if not check(value):
                raise ValueError(f"TrainerConfig.{name} must be {allowed}, got {value!r}")
        if isinstance(self.prior, str):
            if self.prior not in PRIOR_KINDS:
                raise ValueError(f"TrainerConfig.prior must be one of {PRIOR_KINDS} or a vector, "
                                 f"got {self.prior!r}")
        else:
            try:
                validate_prior(self.prior, self.heads.n_clusters, self.heads.n_heads)
            except (TypeError, ValueError) as e:
                raise ValueError(f"TrainerConfig.prior: {e}") from None
        return self



def storable(obj: Any) -> Any:
    """Config values as primitives (numpy / torch arrays become lists)."""
    if isinstance(obj, dict):
        return {k: storable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [storable(v) for v in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return np.asarray(obj).tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
