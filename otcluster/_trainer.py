"""The modality-agnostic self-labelling trainer (SeLa / SeLaVi, paper §3).

Alternates optimal-transport clustering of the whole dataset (:class:`SinkhornLabeler`, or
:func:`sinkhorn_features` when N x K does not fit) with SGD on the cross-entropy to the labels.
Any number of modalities: each has an encoder and its own heads; the log-probabilities of all
modalities are averaged before clustering (eq. 6) and every modality is trained to predict the
same labels. Distributed training is explicit: pass a ``process_group``.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import default_collate as _default_collate
from tqdm import tqdm

from ._align import align, align_from_cost, alignment_cost_matrix, permute_linear_
from ._checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from ._distributed import (
    all_gather_objects,
    all_reduce_sum,
    broadcast_from_first,
    cluster_shard,
    epoch_shard,
    gather_labels,
    group_rank_size,
)
from ._heads import HeadConfig, MultiHead
from ._labeler import SinkhornLabeler, decorrelated_head_groups
from ._priors import PRIOR_KINDS, make_prior, validate_prior
from ._schedule import LinearWarmup, clustering_steps
from ._sinkhorn import ConvergenceWarning, SinkhornResult, sinkhorn_features

__all__ = ["HeadConfig", "TrainerConfig", "SelfLabelModel", "SelfLabelTrainer"]

CHECKPOINT_NAME = "last.pt"
_FORMAT = "otcluster.SelfLabelTrainer/1"
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


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------

def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _nonneg_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _pos_float(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _nonneg_float(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _opt(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


# field -> (check, what is allowed); the prior and heads are checked separately
_CONSTRAINTS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (_pos_int, "a positive integer"),
    "batch_size": (_pos_int, "a positive integer"),
    "lr": (_pos_float, "a positive number"),
    "momentum": (lambda v: _nonneg_float(v) and v < 1, "in [0, 1)"),
    "weight_decay": (_nonneg_float, "a non-negative number"),
    "warmup_epochs": (_nonneg_int, "a non-negative integer"),
    "lam": (_pos_float, "a positive number"),
    "prior_sigma": (_nonneg_float, "a non-negative number"),
    "n_clusterings": (_pos_int, "a positive integer"),
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
    "sinkhorn_dtype": (lambda v: v in ("auto", "float32", "float64"),
                       "'auto', 'float32' or 'float64'"),
    "dense_max_bytes": (_opt(_pos_int), "a positive integer or None"),
    "align_max_samples": (_opt(_pos_int), "a positive integer or None"),
    "block_rows": (_pos_int, "a positive integer"),
    "eval_batch_size": (_opt(_pos_int), "a positive integer or None"),
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
        SGD; ``lr`` is reached after ``warmup_epochs`` of linear warm-up, then constant. (The
        paper warms up to ``0.01 x world size``: scale ``lr`` yourself.)
    warmup_epochs : int
    lam : float
        λ of the transport problem (paper: 20).
    prior : {"uniform", "gaussian", "zipf"} or sequence of K floats (or H x K)
        Cluster-size prior; a Gaussian one (``N(1, prior_sigma)``) is drawn once per head from
        ``seed``. Non-uniform priors are sorted onto the clusters at every clustering (eq. 4).
    prior_sigma : float
    n_clusterings, schedule_power : int, float
        Clusterings at steps ``total_steps * linspace(0, 1, n) ** p`` (first at step 0, last
        after the final step), see :func:`otcluster.clustering_steps`.
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
        Cluster with :func:`otcluster.sinkhorn_features` from pooled features and the heads'
        last layers, never holding N x K (also used automatically above ``dense_max_bytes``).
    show_progress : bool
        tqdm progress bars (first rank only).
    sinkhorn_tol, sinkhorn_max_iter : float, int, default 1e-2 and 1000
        Stopping rule of the solver (relative L1 column-marginal error). Looser than the
        solver's own default (1e-3): once a network is confident (nearly hard predictions) the
        problem at lam=20 converges slowly. Measured on a 10-head digits clustering late in
        training: 231 passes at 1e-2, 1908 at 1e-3, with 99.5 % and 99.96 % of the labels of a
        5000-pass solve (cluster sizes 177-186 vs 178-182 for a prior of 180).
    sinkhorn_dtype : {"auto", "float32", "float64"}, default "auto"
        Precision of the solver's kernel. ``"auto"``: float32, and a solve that fails (relative
        column error above 0.05 or not finite) is redone in float64, then in float64 without
        Anderson acceleration (float32 underflows when collapsed clusters are far less likely
        than the best one for every sample; Anderson steps gave NaN for a converged head).
    dense_max_bytes : int or None, default 4 GiB
        When the dense clustering would hold more than this (float32 log-probabilities,
        their normalised copy and the kernel: ``12 * H * N_local * K`` bytes, 16 with
        ``sinkhorn_dtype="float64"``), use the memory-bounded path. ``None``: never switch.
    align_max_samples : int or None, default 100000
        Alignment uses at most this many samples (a fixed random subset).
    block_rows : int
        Rows per block of the memory-bounded solver.
    eval_batch_size : int or None
        Batch size of the clustering / inference passes (default ``batch_size``).
    """

    heads: HeadConfig = field(default_factory=HeadConfig)
    epochs: int = 200
    batch_size: int = 16
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-5
    warmup_epochs: int = 10
    lam: float = 20.0
    prior: str | list = "gaussian"
    prior_sigma: float = 0.1
    n_clusterings: int = 100
    schedule_power: float = 1.5
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
    dense_max_bytes: int | None = 4 * 2**30
    align_max_samples: int | None = 100_000
    block_rows: int = 8192
    eval_batch_size: int | None = None

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


def _storable(obj: Any) -> Any:
    """Config values as primitives (numpy / torch arrays become lists)."""
    if isinstance(obj, dict):
        return {k: _storable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_storable(v) for v in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return np.asarray(obj).tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------

class SelfLabelModel(nn.Module):
    """Encoders and per-modality heads.

    Parameters
    ----------
    encoders : dict of str to nn.Module
        ``encoders[m](x_m)`` maps a batch of modality ``m`` to features ``(B, D_m)``.
    heads : dict of str to MultiHead
        One :class:`MultiHead` per modality (same H and K for all).

    Attributes
    ----------
    modalities : list of str
        In the order given; the first is the reference of the alignment.
    """

    def __init__(self, encoders: Mapping[str, nn.Module], heads: Mapping[str, MultiHead]):
        super().__init__()
        self.encoders = nn.ModuleDict(dict(encoders))
        self.heads = nn.ModuleDict(dict(heads))
        self.modalities = list(encoders)

    def encode(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Pooled features ``(B, D)`` of one modality (shape checked)."""
        z = self.encoders[modality](x)
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[0] != x.shape[0]:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"encoder {modality!r} must return features of shape "
                             f"(B={x.shape[0]}, D), got {shape}")
        return z

    def forward(self, batch: Mapping[str, torch.Tensor], heads: Any = None
                ) -> dict[str, torch.Tensor]:
        """Logits ``(H', B, K)`` of each modality present in ``batch`` (all heads or ``heads``)."""
        return {m: self.heads[m](self.encode(batch[m], m), heads)
                for m in self.modalities if m in batch}


class _Collate:
    """Check items and collate only ``"index"`` and the needed modalities (picklable)."""

    def __init__(self, modalities: list[str], collate_fn: Callable | None):
        self.modalities = modalities
        self.collate_fn = collate_fn

    def __call__(self, items: list) -> dict:
        kept = []
        for item in items:
            if not isinstance(item, Mapping):
                raise TypeError(f"dataset items must be dicts with 'index' and modality keys, got "
                                f"{type(item).__name__}")
            if "index" not in item:
                raise KeyError(f"a dataset item has no 'index' key "
                               f"(keys: {sorted(map(str, item))})")
            missing = [m for m in self.modalities if m not in item]
            if missing:
                raise KeyError(f"dataset item with index {item['index']!r} is missing modality "
                               f"{missing} (keys: {sorted(map(str, item))})")
            idx = item["index"]
            if isinstance(idx, torch.Tensor):
                idx = idx.item() if idx.numel() == 1 else idx
            if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)):
                raise TypeError(f"dataset item 'index' must be an int, got {idx!r}")
            kept.append({"index": int(idx), **{m: item[m] for m in self.modalities}})
        out = (self.collate_fn or _default_collate)(kept)
        out["index"] = torch.as_tensor(out["index"], dtype=torch.int64)
        return out


# --------------------------------------------------------------------------------------------
# trainer
# --------------------------------------------------------------------------------------------

class SelfLabelTrainer:
    """Self-labelling by optimal transport with any number of modalities (SeLaVi, paper §3).

    Parameters
    ----------
    encoders : dict of str to nn.Module
        One encoder per modality; ``encoder(x)`` maps the collated batch of that modality to
        pooled features ``(B, D)``. ``D`` is ``encoder.feature_dim`` if present, else found by
        a dry run on the first items. The first modality is the alignment reference.
    dataset : torch Dataset
        ``dataset[i]`` is a dict ``{"index": int, <modality>: tensor, ...}``; ``"index"`` values
        are a permutation of ``0..N-1`` (the stable sample index; labels are stored by it), and
        extra keys are ignored. It should apply random augmentations on every read: the
        clustering passes use them (eq. 6).
    config : TrainerConfig, optional
    device : str or torch.device, default "cpu"
    process_group : torch.distributed ProcessGroup, optional
        Train with DDP and shard the data over the group's ranks, for training and clustering
        (the transport problem is solved on the shards; only K-vectors and the N labels per head
        are communicated). Every rank must construct the trainer with the same arguments.
    ground_truth : array-like of shape (N,), optional
        Class of each sample index, for monitoring only (NMI / ARI / accuracy in the history);
        never used for training or selection.
    collate_fn : callable, optional
        Collates a list of ``{"index", modality...}`` dicts (default: ``default_collate``).

    Attributes
    ----------
    model : SelfLabelModel
        Encoders and heads (``model.encoders``, ``model.heads``: ModuleDicts by modality).
    labels_ : LongTensor of shape (H, N) or None
        Labels of the last clustering, by sample index (None before the first).
    history_ : list of dict
        What :meth:`fit` returns: dicts with ``"event"`` = ``"align"``, ``"clustering"`` (step,
        epoch, ``size_entropy`` (nats, mean over heads), ``changed`` (fraction of labels that
        changed, mean over heads), ``n_iter``, ``converged``, ``seconds``, and ``nmi``/``ari``/
        ``acc`` of head 0 plus ``nmi_mean`` when ``ground_truth`` is given) or ``"epoch"``
        (``loss``, ``lr``).
    labeler_ : SinkhornLabeler
        Holds the per-head prior and the warm start.
    prior_ : Tensor of shape (H, K), float64
        Cluster prior of each head (before permutation sorting).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> class Toy(torch.utils.data.Dataset):
    ...     def __init__(self):
    ...         self.x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    ...     def __len__(self):
    ...         return 64
    ...     def __getitem__(self, i):
    ...         x = self.x[i] + 0.1 * torch.randn(4)
    ...         return {"index": i, "a": x, "b": x.flip(0)}
    >>> cfg = TrainerConfig(heads=HeadConfig(n_heads=2, n_clusters=4, hidden_dim=None), epochs=2,
    ...                     batch_size=16, n_clusterings=3, show_progress=False)
    >>> enc = {"a": nn.Sequential(nn.Linear(4, 8), nn.ReLU()), "b": nn.Linear(4, 8)}
    >>> trainer = SelfLabelTrainer(enc, Toy(), cfg)
    >>> history = trainer.fit()
    >>> trainer.labels_.shape
    torch.Size([2, 64])
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        dataset: Any,
        config: TrainerConfig | None = None,
        *,
        device: str | torch.device = "cpu",
        process_group: Any = None,
        ground_truth: Any = None,
        collate_fn: Callable | None = None,
    ):
        self.config = cfg = (config if config is not None else TrainerConfig()).validate()
        self._check_encoders(encoders)
        self.dataset = dataset
        self.device = torch.device(device)
        self.process_group = process_group
        self.collate_fn = collate_fn
        self.rank, self.world_size = group_rank_size(process_group)
        self.modalities = list(encoders)
        H, K = cfg.heads.n_heads, cfg.heads.n_clusters
        try:
            self.n_samples = N = len(dataset)
        except TypeError:
            raise TypeError("dataset must have a length (a map-style torch Dataset)") from None
        if N < 2 * self.world_size:
            raise ValueError(f"dataset has N={N} samples: need at least 2 per process "
                             f"({self.world_size} processes)")
        if K > N:
            raise ValueError(f"n_clusters K={K} is more than the N={N} samples")
        self.ground_truth = self._check_ground_truth(ground_truth, N)

        # the heads' initialisation depends on ``cfg.seed`` only, not on whatever ran before in
        # this process (seen: the same recipe configuration gave NMI 0.86 and 0.99 depending on
        # earlier runs in the process); the global generators are left as they were
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            dims = self._feature_dims(encoders)
            heads = {m: MultiHead(dims[m], cfg.heads) for m in self.modalities}
        self.model = SelfLabelModel(encoders, heads).to(self.device)
        self._amp = bool(cfg.amp and self.device.type == "cuda")
        self._train_module: nn.Module = self.model
        if process_group is not None:
            if cfg.sync_batchnorm:
                if self.device.type != "cuda":
                    raise ValueError("sync_batchnorm needs CUDA devices (torch's SyncBatchNorm has "
                                     "no CPU implementation); set sync_batchnorm=False")
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model, process_group)
            ids = None
            if self.device.type == "cuda":
                ids = [self.device.index if self.device.index is not None
                       else torch.cuda.current_device()]
            self._train_module = nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids, process_group=process_group)

        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        n_local = -(-N // self.world_size)
        B = cfg.batch_size
        # a last batch of one sample is skipped (BatchNorm cannot train on it)
        singleton = 1 if n_local % B == 1 and n_local > B else 0
        self.steps_per_epoch = -(-n_local // B) - singleton
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, LinearWarmup(cfg.warmup_epochs * self.steps_per_epoch))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self._amp)
        self.schedule_ = clustering_steps(self.total_steps, cfg.n_clusterings, cfg.schedule_power)

        if isinstance(cfg.prior, str):
            prior = make_prior(cfg.prior, K, n_heads=H, sigma=cfg.prior_sigma, seed=cfg.seed)
        else:
            prior = validate_prior(cfg.prior, K, H)
            prior = prior.expand(H, K).clone() if prior.dim() == 1 else prior
        self.prior_ = prior
        self.labeler_ = SinkhornLabeler(
            K, prior=prior, lam=cfg.lam, n_heads=H, tol=cfg.sinkhorn_tol,
            max_iter=cfg.sinkhorn_max_iter, random_state=cfg.seed, process_group=process_group,
            dtype=torch.float64 if cfg.sinkhorn_dtype == "float64" else torch.float32)
        self.n_solver_retries_ = 0

        self.labels_: torch.Tensor | None = None
        self.history_: list[dict] = []
        self.epoch_ = 0
        self.step_ = 0
        self._schedule_pos = 0
        self._n_clusterings = 0
        self._aligned = False

    # -- validation helpers ------------------------------------------------------------------
    @staticmethod
    def _check_encoders(encoders: Any) -> None:
        if not isinstance(encoders, Mapping) or len(encoders) == 0:
            raise ValueError("encoders must be a non-empty dict {modality name: nn.Module}")
        for name, enc in encoders.items():
            if not isinstance(name, str) or not name or "." in name or name == "index":
                raise ValueError(f"modality names must be non-empty strings without '.' and not "
                                 f"'index', got {name!r}")
            if not isinstance(enc, nn.Module):
                raise TypeError(f"encoder {name!r} must be an nn.Module, got {type(enc).__name__}")

    @staticmethod
    def _check_ground_truth(gt: Any, n: int) -> np.ndarray | None:
        if gt is None:
            return None
        arr = np.asarray(gt.cpu() if isinstance(gt, torch.Tensor) else gt)
        if arr.ndim != 1 or arr.shape[0] != n:
            raise ValueError(f"ground_truth must have shape (N={n},), got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"ground_truth must hold integer class labels, got dtype {arr.dtype}")
        return arr

    def _feature_dims(self, encoders: Mapping[str, nn.Module]) -> dict[str, int]:
        first = self.dataset[0]
        _Collate(self.modalities, None)([first])  # checks keys and "index" of the first item
        dims: dict[str, int] = {}
        need_dry = [m for m, e in encoders.items() if getattr(e, "feature_dim", None) is None]
        for m, e in encoders.items():
            d = getattr(e, "feature_dim", None)
            if d is not None:
                dims[m] = int(d)
        if need_dry:
            items = [first, self.dataset[1]]
            batch = _Collate(need_dry, self.collate_fn)(items)
            for m in need_dry:
                enc = encoders[m].to(self.device)
                was = enc.training
                enc.eval()
                with torch.no_grad():
                    z = enc(batch[m].to(self.device))
                enc.train(was)
                if not isinstance(z, torch.Tensor) or z.dim() != 2:
                    raise ValueError(f"encoder {m!r} must return features of shape (B, D), got "
                                     f"{getattr(z, 'shape', type(z).__name__)}")
                dims[m] = int(z.shape[1])
        return dims

    # -- data passes -------------------------------------------------------------------------
    def _loader(self, dataset: Any, positions: torch.Tensor, batch_size: int,
                modalities: list[str]) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, sampler=positions.tolist(),
                          num_workers=self.config.num_workers,
                          collate_fn=_Collate(modalities, self.collate_fn),
                          pin_memory=self.device.type == "cuda", drop_last=False)

    def _bar(self, it: Any, desc: str, total: int | None = None) -> Any:
        disable = not self.config.show_progress or self.rank != 0
        return tqdm(it, desc=desc, total=total, disable=disable, leave=False, dynamic_ncols=True)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True)

    def _eval_pass(self, dataset: Any, positions: torch.Tensor, modalities: list[str],
                   fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]], n: int,
                   desc: str, batch_size: int | None = None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run ``fn`` (no grad, model in eval mode) on ``positions``; rows in position order.

        Returns the sample indices (checked to lie in ``0..n-1``) and the concatenated outputs.
        """
        bs = batch_size or self.config.eval_batch_size or self.config.batch_size
        loader = self._loader(dataset, positions, bs, modalities)
        was = self.model.training
        self.model.eval()
        idx_parts: list[torch.Tensor] = []
        outs: dict[str, list[torch.Tensor]] = {}
        try:
            with torch.no_grad(), torch.autocast(self.device.type, enabled=self._amp):
                for batch in self._bar(loader, desc):
                    idx = batch["index"]
                    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
                        raise ValueError(f"dataset item 'index' values must lie in 0..{n - 1} "
                                         f"(N={n} items), got {int(idx.min())}..{int(idx.max())}")
                    idx_parts.append(idx)
                    inputs = {m: self._to_device(batch[m]) for m in modalities}
                    for k, v in fn(inputs).items():
                        outs.setdefault(k, []).append(v)
        finally:
            self.model.train(was)
        index = torch.cat(idx_parts) if idx_parts else torch.zeros(0, dtype=torch.int64)
        return index, {k: torch.cat(v, dim=-2) for k, v in outs.items()}

    def _mean_log_probs(self, heads: Any) -> Callable:
        model = self.model

        def fn(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            acc = None
            for m in model.modalities:
                logits = model.heads[m](model.encode(inputs[m], m), heads)
                lp = torch.log_softmax(logits.float(), -1)
                acc = lp if acc is None else acc + lp
            return {"log_p": acc / len(model.modalities)}

        return fn

    def _features_fn(self, modalities: list[str]) -> Callable:
        model = self.model
        return lambda inputs: {m: model.encode(inputs[m], m).float() for m in modalities}

    # -- alignment (eq. 7) -------------------------------------------------------------------
    def _align(self) -> None:
        cfg = self.config
        self._aligned = True
        if cfg.align is None or len(self.modalities) < 2:
            return
        N, H = self.n_samples, cfg.heads.n_heads
        if cfg.align_max_samples is not None and N > cfg.align_max_samples:
            g = torch.Generator().manual_seed(cfg.seed + 17)
            subset = torch.randperm(N, generator=g)[: cfg.align_max_samples].sort().values
        else:
            subset = torch.arange(N)
        positions = subset[self.rank::self.world_size]
        model = self.model
        self._sync_buffers()

        def fn(inputs):
            return {m: torch.softmax(model.heads[m](model.encode(inputs[m], m)).float(), -1)
                    for m in model.modalities}

        _, probs = self._eval_pass(self.dataset, positions, self.modalities, fn, N, "aligning")
        ref = self.modalities[0]
        for m in self.modalities[1:]:
            before, after = [], []
            for h in range(H):
                perm, c0, c1 = self._align_pair(probs[m][h], probs[ref][h], cfg.seed + h)
                permute_linear_(self.model.heads[m].last_linear(h), perm.cpu())
                before.append(c0)
                after.append(c1)
            n_used = int(subset.numel())
            self.history_.append({
                "event": "align", "modality": m, "reference": ref, "method": cfg.align,
                "n_samples": n_used, "cost_before": float(np.mean(before)) / n_used,
                "cost_after": float(np.mean(after)) / n_used,
            })

    def _align_pair(self, p_a: torch.Tensor, p_b: torch.Tensor, seed: int
                    ) -> tuple[torch.Tensor, float, float]:
        """Permutation of ``p_a``'s clusters matching ``p_b``; (perm, cost before, cost after)."""
        p_a, p_b = p_a.cpu(), p_b.cpu()
        if self.process_group is None:
            res = align(p_a, p_b, method=self.config.align, seed=seed)
            before = float((p_a.double() - p_b.double()).abs().sum())
            return res.permutation, before, float(res.cost)
        # sharded: the cost matrix is a sum over samples, so sum the shards' matrices
        cost = all_reduce_sum(alignment_cost_matrix(p_a, p_b).cpu(), self.process_group)
        c = cost.numpy()
        perm = align_from_cost(c, method=self.config.align, seed=seed).permutation
        perm = broadcast_from_first(perm, self.process_group)
        K = c.shape[0]
        return perm, float(np.trace(c)), float(c[perm.numpy(), np.arange(K)].sum())

    # -- clustering --------------------------------------------------------------------------
    def _use_memory_bounded(self) -> bool:
        """Decided from the largest shard, so that every rank takes the same path."""
        cfg = self.config
        if cfg.memory_bounded:
            return True
        n_local = -(-self.n_samples // self.world_size)
        # the trainer's float32 log-probabilities, the labeler's normalised copy (average_views),
        # and the solver's kernel (float32, or float64 when redone)
        per_entry = 8 + (8 if cfg.sinkhorn_dtype == "float64" else 4)
        dense = per_entry * cfg.heads.n_heads * n_local * cfg.heads.n_clusters
        return cfg.dense_max_bytes is not None and dense > cfg.dense_max_bytes

    def _labeler_shape(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.config.heads.n_heads > 1 else t[0]

    def _sync_buffers(self) -> None:
        """Give every rank the first rank's buffers (BatchNorm statistics), as DDP does before
        each training forward: the evaluation-mode passes and checkpoints then agree."""
        if self.process_group is None:
            return
        with torch.no_grad():
            for buf in self.model.buffers():
                buf.copy_(broadcast_from_first(buf, self.process_group))

    def _cluster(self) -> dict:
        """One clustering of every sample (this rank's shard), labels gathered on every rank."""
        cfg = self.config
        self._sync_buffers()
        H, K, N = cfg.heads.n_heads, cfg.heads.n_clusters, self.n_samples
        t0 = time.perf_counter()
        positions = cluster_shard(N, self.rank, self.world_size)
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + self._n_clusterings)
        groups = decorrelated_head_groups(H, min(cfg.head_groups, H), generator=gen)
        memory_bounded = self._use_memory_bounded()
        retries = self.n_solver_retries_
        solve = self._solve_memory_bounded if memory_bounded else self._solve_dense
        local_labels, local_index, n_iter, converged = solve(positions, groups)
        labels = gather_labels(local_labels, local_index, N, self.process_group)

        prev = self.labels_
        self.labels_ = labels
        self._n_clusterings += 1
        sizes = torch.stack([torch.bincount(lab, minlength=K) for lab in labels]).double()
        frac = sizes / N
        ent = -(frac * torch.log(frac.clamp_min(1e-300))).sum(1)
        rec: dict[str, Any] = {
            "event": "clustering", "clustering": self._n_clusterings - 1, "step": self.step_,
            "epoch": self.epoch_, "size_entropy": float(ent.mean()),
            "min_size": int(sizes.min()), "max_size": int(sizes.max()),
            "changed": None if prev is None else float((prev != labels).double().mean()),
            "n_iter": int(n_iter), "converged": bool(converged), "memory_bounded": memory_bounded,
            "solver_retries": self.n_solver_retries_ - retries,
            "seconds": time.perf_counter() - t0,
        }
        if self.ground_truth is not None:
            rec.update(self._score(labels))
        self.history_.append(rec)
        return rec

    def _score(self, labels: torch.Tensor) -> dict[str, float]:
        gt = self.ground_truth
        try:
            from ._metrics import cluster_report

            def report(pred):
                r = cluster_report(gt, pred)
                return r.nmi, r.ari, r.acc
        except ImportError:  # pragma: no cover - the metrics module is part of the package
            from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

            def report(pred):
                return (normalized_mutual_info_score(gt, pred), adjusted_rand_score(gt, pred),
                        float("nan"))
        nmi, ari, acc = report(labels[0].numpy())
        nmis = [nmi] + [report(lab.numpy())[0] for lab in labels[1:]]
        return {"nmi": float(nmi), "ari": float(ari), "acc": float(acc),
                "nmi_mean": float(np.mean(nmis))}

    def _solve_dense(self, positions: torch.Tensor, groups: list[torch.Tensor]):
        cfg = self.config
        H, K = cfg.heads.n_heads, cfg.heads.n_clusters
        log_p = torch.empty((H, positions.numel(), K), dtype=torch.float32, device=self.device)
        index = None
        for g, heads in enumerate(groups):
            idx, out = self._eval_pass(self.dataset, positions, self.modalities,
                                       self._mean_log_probs(heads.tolist()), self.n_samples,
                                       f"clustering pass {g + 1}/{len(groups)}")
            index = self._same_index(index, idx)
            log_p[heads.to(self.device)] = out["log_p"]
        x = self._labeler_shape(log_p)
        lab = self.labeler_
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
            self.n_solver_retries_ += 1
        raise AssertionError("unreachable")

    @staticmethod
    def _same_index(index: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor:
        if index is not None and not torch.equal(index, idx):
            raise ValueError("the dataset returned different 'index' values for the same positions "
                             "in two passes: 'index' must be a fixed property of each item")
        return idx

    def _solve_memory_bounded(self, positions: torch.Tensor, groups: list[torch.Tensor]):
        """Eq. 6 without N x K: mean over modalities of log_softmax(W_m z_m + b_m) equals
        log_softmax(concat_m(z_m) @ concat_m(W_m / M)^T + mean_m b_m) up to a per-row constant,
        which leaves the transport solution unchanged; so each head is one linear map of the
        concatenated penultimate features and :func:`sinkhorn_features` applies."""
        cfg = self.config
        H, K = cfg.heads.n_heads, cfg.heads.n_clusters
        M = len(self.modalities)
        state = self.labeler_.state_dict()
        warm = state.get("log_v")
        warm = None if warm is None else warm.reshape(H, K)
        log_v = torch.zeros((H, K), dtype=torch.float64)
        labels = torch.empty((H, positions.numel()), dtype=torch.int64)
        index, n_iter, converged = None, 0, True
        linear = all(self.model.heads[m].is_linear for m in self.modalities)
        kw = dict(lam=cfg.lam, tol=cfg.sinkhorn_tol, max_iter=cfg.sinkhorn_max_iter,
                  block_rows=cfg.block_rows, process_group=self.process_group)
        was = self.model.training
        self.model.eval()
        try:
            for g, heads in enumerate(groups):
                idx, feats = self._eval_pass(self.dataset, positions, self.modalities,
                                             self._features_fn(self.modalities), self.n_samples,
                                             f"clustering pass {g + 1}/{len(groups)}")
                index = self._same_index(index, idx)
                hs = heads.tolist()
                # batches of heads sharing features: all of the group for linear heads
                batches = [hs] if linear else [[h] for h in hs]
                for hb in batches:
                    with torch.no_grad():
                        if linear:
                            z = torch.cat([feats[m] for m in self.modalities], 1)
                        else:
                            z = torch.cat([self._penultimate(feats[m], m, hb[0])
                                           for m in self.modalities], 1)
                        lin = [[self.model.heads[m].last_linear(h) for m in self.modalities]
                               for h in hb]
                        w = torch.stack([torch.cat([ln.weight.float() / M for ln in row], 1)
                                         for row in lin])
                        b = torch.stack([torch.stack([ln.bias.float() if ln.bias is not None
                                                      else torch.zeros_like(ln.weight[:, 0])
                                                      for ln in row]).mean(0) for row in lin])
                    res, it = self._solve_features(z, w, b, self.prior_[hb],
                                                   None if warm is None else warm[hb], kw)
                    labels[hb] = res.labels.reshape(len(hb), -1).cpu()
                    log_v[hb] = _finite_rows(res.log_v.reshape(len(hb), K).cpu())
                    n_iter = max(n_iter, it)
                    converged = converged and bool(res.converged.all())
        finally:
            self.model.train(was)
        self.labeler_.load_state_dict({"prior": self._labeler_shape(self.prior_),
                                       "log_v": self._labeler_shape(log_v)})
        return labels, index, n_iter, converged

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

    # -- training ----------------------------------------------------------------------------
    def _maybe_cluster(self) -> None:
        due = False
        while self._schedule_pos < len(self.schedule_) and \
                self.schedule_[self._schedule_pos] <= self.step_:
            self._schedule_pos += 1
            due = True
        if due:
            self._cluster()

    def _train_step(self, batch: dict) -> float:
        idx = batch["index"]
        if int(idx.min()) < 0 or int(idx.max()) >= self.n_samples:
            raise ValueError(f"dataset item 'index' values must lie in 0..{self.n_samples - 1}, "
                             f"got {int(idx.min())}..{int(idx.max())}")
        H = self.config.heads.n_heads
        target = self._to_device(self.labels_[:, idx]).reshape(-1)
        inputs = {m: self._to_device(batch[m]) for m in self.modalities}
        with torch.autocast(self.device.type, enabled=self._amp):
            out = self._train_module(inputs)
            loss = sum(nn.functional.cross_entropy(out[m].float().reshape(H * idx.numel(), -1),
                                                   target) for m in self.modalities)
            loss = loss / len(self.modalities)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step_ += 1
        return float(loss.detach())

    def _seed_everything(self) -> None:
        s = self.config.seed + self.rank
        torch.manual_seed(s)
        np.random.seed(s % 2**32)  # noqa: NPY002 - the global generator, on purpose
        random.seed(s)

    def fit(self, *, resume: bool = True) -> list[dict]:
        """Train: align, then alternate clustering (on schedule) and SGD epochs.

        Parameters
        ----------
        resume : bool, default True
            If ``config.checkpoint_dir`` holds a checkpoint, continue from it (a finished run
            returns at once). A fresh run seeds the global generators with ``seed + rank``.

        Returns
        -------
        list of dict
            ``history_`` (see the class docstring).
        """
        cfg = self.config
        ckpt = Path(cfg.checkpoint_dir) / CHECKPOINT_NAME if cfg.checkpoint_dir else None
        if resume and ckpt is not None and ckpt.is_file():
            self.load_checkpoint(ckpt)
        elif self.step_ == 0 and not self._aligned:
            self._seed_everything()
        if not self._aligned:
            self._align()
        for epoch in range(self.epoch_, cfg.epochs):
            positions = epoch_shard(self.n_samples, epoch, cfg.seed, self.rank, self.world_size)
            loader = self._loader(self.dataset, positions, cfg.batch_size, self.modalities)
            self._train_module.train()
            total, count = 0.0, 0
            bar = self._bar(loader, f"epoch {epoch + 1}/{cfg.epochs}", total=self.steps_per_epoch)
            for i, batch in enumerate(bar):
                if i >= self.steps_per_epoch:
                    break
                self._maybe_cluster()
                total += self._train_step(batch)
                count += 1
                if i % 10 == 0 and hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{total / count:.3f}")
            if hasattr(bar, "close"):
                bar.close()
            stats = all_reduce_sum(torch.tensor([total, float(count)], dtype=torch.float64),
                                   self.process_group)
            self.epoch_ = epoch + 1
            self.history_.append({"event": "epoch", "epoch": self.epoch_, "step": self.step_,
                                  "loss": float(stats[0] / max(stats[1], 1.0)),
                                  "lr": float(self.optimizer.param_groups[0]["lr"])})
            if self.epoch_ == cfg.epochs:
                self._maybe_cluster()  # the final clustering of the trained model
            if ckpt is not None and (self.epoch_ % cfg.checkpoint_every == 0
                                     or self.epoch_ == cfg.epochs):
                self.save_checkpoint(ckpt)
        if self.labels_ is None:  # epochs done in a checkpoint without labels: cannot happen
            self._cluster()
        self._sync_buffers()
        return self.history_

    # -- inference ---------------------------------------------------------------------------
    def _full_pass(self, dataset: Any, modalities: list[str], fn: Callable, batch_size: int | None,
                   desc: str) -> dict[str, torch.Tensor]:
        n = len(dataset)
        if n == 0:
            raise ValueError("dataset is empty")
        index, out = self._eval_pass(dataset, torch.arange(n), modalities, fn, n, desc, batch_size)
        counts = torch.bincount(index, minlength=n)
        if bool((counts != 1).any()):
            raise ValueError(f"the dataset's 'index' values must be a permutation of 0..{n - 1}")
        order = torch.empty(n, dtype=torch.int64)
        order[index] = torch.arange(n)
        return {k: v.index_select(-2, order.to(v.device)).cpu() for k, v in out.items()}

    def _modalities_of(self, dataset: Any, modalities: Any) -> list[str]:
        if modalities is None:
            first = dataset[0]
            mods = [m for m in self.modalities if isinstance(first, Mapping) and m in first]
            if not mods:
                raise KeyError(f"dataset items have none of the modalities {self.modalities}")
            return mods
        mods = [modalities] if isinstance(modalities, str) else list(modalities)
        unknown = [m for m in mods if m not in self.modalities]
        if unknown or not mods:
            raise ValueError(f"unknown modalities {unknown}; the model has {self.modalities}")
        return mods

    def extract(self, dataset: Any, *, modalities: Any = None, batch_size: int | None = None
                ) -> dict[str, torch.Tensor]:
        """Pooled encoder features of every item, in index order (model in eval mode).

        Runs in this process over the whole ``dataset`` (not sharded across ranks).

        Parameters
        ----------
        dataset : Dataset of dicts with ``"index"`` (a permutation of ``0..N-1``)
        modalities : str or list of str, optional
            Default: every modality of the model present in ``dataset[0]``.
        batch_size : int, optional

        Returns
        -------
        dict of str to Tensor of shape (N, D_m), float32 on the CPU
        """
        mods = self._modalities_of(dataset, modalities)
        return self._full_pass(dataset, mods, self._features_fn(mods), batch_size, "extracting")

    def predict_log_probs(self, dataset: Any, *, modalities: Any = None,
                          batch_size: int | None = None) -> dict[str, torch.Tensor]:
        """Log-softmax of every head for every item, in index order (this process, all items).

        Returns
        -------
        dict of str to Tensor of shape (H, N, K), float32 on the CPU
        """
        mods = self._modalities_of(dataset, modalities)
        model = self.model

        def fn(inputs):
            return {m: torch.log_softmax(model.heads[m](model.encode(inputs[m], m)).float(), -1)
                    for m in mods}

        return self._full_pass(dataset, mods, fn, batch_size, "predicting")

    def predict(self, dataset: Any, *, modalities: Any = None, batch_size: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cluster of new data without optimal transport: argmax of the mean log-probabilities.

        Returns
        -------
        labels : LongTensor of shape (H, N)
        confidence : Tensor of shape (H, N)
            Probability of the chosen cluster under ``softmax(mean_m log p_m)``.
        """
        lp = self.predict_log_probs(dataset, modalities=modalities, batch_size=batch_size)
        mean = torch.stack(list(lp.values())).mean(0).log_softmax(-1)
        conf, labels = mean.max(-1)
        return labels, conf.exp()

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to resume (tensors and primitives only). Collective when
        distributed (the generators' states of every rank are gathered)."""
        self._sync_buffers()
        rng = all_gather_objects(get_rng_state(), self.process_group)
        return {
            "format": _FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "labels": self.labels_,
            "labeler": self.labeler_.state_dict(),
            "prior": self.prior_,
            "epoch": self.epoch_,
            "step": self.step_,
            "schedule_pos": self._schedule_pos,
            "n_clusterings": self._n_clusterings,
            "aligned": self._aligned,
            "history": _storable(self.history_),
            "rng": rng,
            "n_samples": self.n_samples,
            "modalities": list(self.modalities),
            "world_size": self.world_size,
            "config": _storable(dataclasses.asdict(self.config)),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (checks that the data and heads match)."""
        if state.get("format") != _FORMAT:
            raise ValueError(f"not a SelfLabelTrainer checkpoint (format {state.get('format')!r})")
        H, K = self.config.heads.n_heads, self.config.heads.n_clusters
        if state["n_samples"] != self.n_samples:
            raise ValueError(f"checkpoint is for N={state['n_samples']} samples, the dataset has "
                             f"{self.n_samples}")
        if list(state["modalities"]) != self.modalities:
            raise ValueError(f"checkpoint modalities {state['modalities']} differ from "
                             f"{self.modalities}")
        if tuple(state["prior"].shape) != (H, K):
            raise ValueError(f"checkpoint has {tuple(state['prior'].shape)} (heads, clusters), the "
                             f"config ({H}, {K})")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.labels_ = state["labels"]
        self.prior_ = state["prior"]
        self.labeler_.load_state_dict(state["labeler"])
        self.epoch_ = int(state["epoch"])
        self.step_ = int(state["step"])
        self._schedule_pos = int(state["schedule_pos"])
        self._n_clusterings = int(state["n_clusterings"])
        self._aligned = bool(state["aligned"])
        self.history_ = list(state["history"])
        rng = state["rng"]
        if len(rng) == self.world_size:
            set_rng_state(rng[self.rank])
        else:  # another world size: the exact random stream cannot be continued
            self._seed_everything()

    def save_checkpoint(self, path: str | Path) -> None:
        """Write :meth:`state_dict` atomically to ``path`` (by the first rank; call on all)."""
        state = self.state_dict()
        if self.rank == 0:
            save_checkpoint(state, path)
        if self.process_group is not None:
            import torch.distributed as dist

            dist.barrier(group=self.process_group)

    def load_checkpoint(self, path: str | Path) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint` (``weights_only=True``)."""
        self.load_state_dict(load_checkpoint(path))
