"""The modality-agnostic self-labelling trainer (SeLa / SeLaVi, paper §3).

Alternates optimal-transport clustering of the whole dataset (:class:`SinkhornLabeler`; its
memory-bounded mode when N x K does not fit) with SGD on the cross-entropy to the labels.
Any number of modalities: each has an encoder and its own heads; the log-probabilities of all
modalities are averaged before clustering (eq. 6) and every modality is trained to predict the
same labels. Distributed training is explicit: pass a ``process_group``.

The parts live beside this module: ``config`` (TrainerConfig), ``model`` (SelfLabelModel),
``data`` (loaders and evaluation passes), ``clustering``, ``alignment``, ``inference`` and
``state`` (checkpoints).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import _schedule
from .._checkpoint import CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME, seed_global_generators
from .._distributed import (
    all_reduce_sum,
    broadcast_buffers,
    cluster_shard,
    epoch_shard,
    gather_labels,
    group_rank_size,
)
from .._heads import HeadConfig  # noqa: F401 - the docstring example
from .._labeler import SinkhornLabeler, decorrelated_head_groups
from .._schedule import LinearWarmup, WarmupCosine, clustering_steps, steps_per_epoch
from . import inference
from .alignment import align_heads
from .clustering import Clusterer, check_ground_truth, score, size_stats, use_memory_bounded
from .config import TrainerConfig
from .data import DataPasses, Prefetch, dataset_size
from .model import build_model, check_encoders, for_training
from .state import read_trainer_checkpoint, restore_trainer, trainer_state, write_trainer_checkpoint
from .weighting import FitTracker, set_fixed_weights, stability_kappas, update_modality_weights

__all__ = ["SelfLabelTrainer"]


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
    stability_dataset : torch Dataset, optional
        What ``modality_weights="stability"`` reads twice for its two views of every sample
        (default ``dataset``); same length and ``"index"`` values as ``dataset``.

    Attributes
    ----------
    model : SelfLabelModel
        Encoders and heads (``model.encoders``, ``model.heads``: ModuleDicts by modality).
    labels_ : LongTensor of shape (H, N) or None
        Labels of the last clustering, by sample index (None before the first).
    history_ : list of dict
        What :meth:`fit` returns: dicts with ``"event"`` = ``"align"``, ``"clustering"`` (step,
        epoch, ``size_entropy`` (nats, mean over heads), ``changed`` (fraction of labels that
        changed, mean over heads), ``n_iter``, ``converged``, ``prior_warmup``, ``seconds``,
        and ``nmi``/``ari``/``acc`` of head 0 plus ``nmi_mean`` when ``ground_truth`` is given)
        or ``"epoch"`` (``loss``, ``lr``).
    labeler_ : SinkhornLabeler
        Holds the per-head prior, the warm start and the solver's retry ladder.
    warmup_labeler_ : SinkhornLabeler
        Solves the first ``warmup_clusterings_`` clusterings: the uniform prior, relaxed by
        ``TrainerConfig.prior_warmup_tau``.
    warmup_clusterings_ : int
        ``round(prior_warmup * len(schedule_))``; 0 for a uniform prior.
    prior_ : Tensor of shape (H, K), float64, or None
        Cluster prior of each head (before permutation sorting); drawn at the first clustering
        after the warm-up.

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
        stability_dataset: Any = None,
    ):
        self.config = cfg = (config if config is not None else TrainerConfig()).validate()
        check_encoders(encoders)
        self.dataset = dataset
        self.device = torch.device(device)
        self.process_group = process_group
        self.collate_fn = collate_fn
        self.rank, self.world_size = group_rank_size(process_group)
        self.modalities = list(encoders)
        H, K = cfg.heads.n_heads, cfg.heads.n_clusters
        self.n_samples = N = dataset_size(dataset, self.world_size, K)
        self.ground_truth = check_ground_truth(ground_truth, N)
        if stability_dataset is not None and dataset_size(stability_dataset, self.world_size, K) != N:
            raise ValueError(f"stability_dataset must have the dataset's N={N} items")
        self.stability_dataset = dataset if stability_dataset is None else stability_dataset

        self.model = build_model(encoders, cfg.heads, cfg.seed, dataset, collate_fn, self.device)
        self._amp = bool(cfg.amp and self.device.type == "cuda")
        self.passes = DataPasses(self.device, cfg.eval_batch_size or cfg.batch_size,
                                 cfg.num_workers, collate_fn, self._amp,
                                 cfg.show_progress and self.rank == 0, cfg.eval_threads)
        self.model, self._train_module = for_training(self.model, self.device, process_group,
                                                      cfg.sync_batchnorm)

        self.optimizer = _schedule.modality_optimizer(self.model, cfg.optimizer, cfg.lr,
                                                      cfg.momentum, cfg.weight_decay)
        self.steps_per_epoch = steps_per_epoch(N, self.world_size, cfg.batch_size)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        warmup_steps = cfg.warmup_epochs * self.steps_per_epoch
        # a warm-up as long as training leaves the cosine no steps: it never starts
        factor = WarmupCosine(warmup_steps, max(self.total_steps, warmup_steps + 1)) \
            if cfg.lr_schedule == "cosine" else LinearWarmup(warmup_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self._amp)
        self.schedule_ = clustering_steps(self.total_steps, cfg.n_clusterings, cfg.schedule_power)

        # the labeler owns the prior (drawn from ``seed`` at the first clustering, then kept),
        # the warm start and the float32 -> float64 retry ladder (``sinkhorn_dtype="auto"``)
        solver: dict[str, Any] = dict(lam=cfg.lam, n_heads=H, tol=cfg.sinkhorn_tol,
                                      max_iter=cfg.sinkhorn_max_iter, dtype=cfg.sinkhorn_dtype,
                                      scaling_stages=cfg.sinkhorn_scaling_stages,
                                      process_group=process_group)
        self.labeler_ = SinkhornLabeler(
            K, prior=cfg.prior, sigma=cfg.prior_sigma, zipf_exponent=cfg.zipf_exponent,
            random_state=cfg.seed, tau=cfg.sinkhorn_tau, **solver)
        # the first clusterings of a non-uniform prior: uniform, relaxed, its own warm start
        self.warmup_labeler_ = SinkhornLabeler(K, prior="uniform", tau=cfg.prior_warmup_tau,
                                               **solver)
        self.warmup_clusterings_ = 0 if cfg.prior == "uniform" else \
            int(round(cfg.prior_warmup * len(self.schedule_)))
        self.clusterer = Clusterer(self.model, self.passes, dataset, self.labeler_, cfg, N,
                                   process_group)
        set_fixed_weights(self.model, cfg.modality_weights)
        self._fit = FitTracker(len(self.modalities), self.device)

        self.labels_: torch.Tensor | None = None
        self.history_: list[dict] = []
        self.epoch_ = self.step_ = 0
        self._schedule_pos = self._n_clusterings = 0
        self._aligned = False
        self._on_record: Callable[[dict], Any] | None = None

    @property
    def prior_(self) -> torch.Tensor | None:
        """The labeler's prior as (H, K) (None before the first clustering)."""
        p = getattr(self.labeler_, "prior_", None)
        return None if p is None else p.reshape(self.config.heads.n_heads, -1)

    @property
    def n_solver_retries_(self) -> int:
        """Solves the labeler redid (float64, then without Anderson), over all clusterings."""
        return sum(getattr(lab, "n_retries_", 0) for lab in (self.labeler_, self.warmup_labeler_))

    def _record(self, rec: dict) -> None:
        """Append ``rec`` to ``history_`` and hand it to ``fit``'s ``on_record``."""
        self.history_.append(rec)
        if self._on_record is not None:
            self._on_record(rec)

    def _sync_buffers(self) -> None:
        broadcast_buffers(self.model, self.process_group)

    def _seed_everything(self) -> None:
        seed_global_generators(self.config.seed + self.rank)

    # -- alignment (eq. 7) and clustering ----------------------------------------------------
    def _align(self) -> None:
        cfg = self.config
        self._aligned = True
        if cfg.align is None or len(self.modalities) < 2:
            return
        self._sync_buffers()
        for rec in align_heads(self.model, self.passes, self.dataset, method=cfg.align,
                               seed=cfg.seed, max_samples=cfg.align_max_samples, rank=self.rank,
                               world_size=self.world_size, process_group=self.process_group):
            self._record(rec)

    def _cluster(self) -> dict:
        """One clustering of every sample (this rank's shard), labels gathered on every rank."""
        cfg = self.config
        self._sync_buffers()
        H, K, N = cfg.heads.n_heads, cfg.heads.n_clusters, self.n_samples
        t0 = time.perf_counter()
        positions = cluster_shard(N, self.rank, self.world_size)
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + self._n_clusterings)
        groups = decorrelated_head_groups(H, min(cfg.head_groups, H), generator=gen)
        memory_bounded = use_memory_bounded(cfg, N, self.world_size, len(self.modalities))
        retries = self.n_solver_retries_
        warmup = self._n_clusterings < self.warmup_clusterings_
        self.clusterer.labeler = self.warmup_labeler_ if warmup else self.labeler_
        # the eq. 6 weights of this clustering ("stability": measured on this rank's shard)
        stability = partial(stability_kappas, self.model, self.passes, self.stability_dataset,
                            positions, N, K, self.process_group, cfg.stability_max_samples,
                            cfg.seed * 7919 + self._n_clusterings)
        weights = update_modality_weights(self.model, self._fit, self.labels_, cfg,
                                          self._n_clusterings, len(self.schedule_),
                                          self.process_group, stability)
        local_labels, local_index, n_iter, converged = self.clusterer(
            positions, groups, memory_bounded, first=self._n_clusterings == 0)
        labels = gather_labels(local_labels, local_index, N, self.process_group)
        prev = self.labels_
        self.labels_ = labels
        self._n_clusterings += 1
        rec: dict[str, Any] = {
            "event": "clustering", "clustering": self._n_clusterings - 1, "step": self.step_,
            "epoch": self.epoch_, **size_stats(labels, prev, K),
            "n_iter": int(n_iter), "converged": bool(converged), "memory_bounded": memory_bounded,
            "solver_retries": self.n_solver_retries_ - retries, "prior_warmup": warmup,
            "seconds": time.perf_counter() - t0,
        }
        extra = {"modality_weights": weights, "vetoed": self.clusterer.vetoed_}
        rec.update({k: v for k, v in extra.items() if v is not None})
        if self.ground_truth is not None:
            rec.update(score(self.ground_truth, labels))
        self._record(rec)
        return rec

    # -- training ----------------------------------------------------------------------------
    def _maybe_cluster(self) -> None:
        start = self._schedule_pos
        while self._schedule_pos < len(self.schedule_) and \
                self.schedule_[self._schedule_pos] <= self.step_:
            self._schedule_pos += 1
        if self._schedule_pos > start:
            self._cluster()

    def _train_step(self, batch: dict, after_forward: Callable = lambda: None) -> float:
        idx = batch["index"]
        if int(idx.min()) < 0 or int(idx.max()) >= self.n_samples:
            raise ValueError(f"dataset item 'index' values must lie in 0..{self.n_samples - 1}, "
                             f"got {int(idx.min())}..{int(idx.max())}")
        H = self.config.heads.n_heads
        assert self.labels_ is not None  # the schedule clusters at step 0
        target = self.passes.to_device(self.labels_[:, idx]).reshape(-1)
        inputs = {m: self.passes.to_device(batch[m]) for m in self.modalities}
        with torch.autocast(self.device.type, enabled=self._amp):
            out = self._train_module(inputs)
            losses = [nn.functional.cross_entropy(out[m].float().reshape(H * idx.numel(), -1),
                                                  target) for m in self.modalities]
            loss = torch.stack(losses).sum() / len(self.modalities)
        if self.config.modality_weights == "information":
            self._fit.add(losses)
        after_forward()  # no random numbers are drawn from here to the next step
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step_ += 1
        return float(loss.detach())

    def _train_epoch(self, epoch: int) -> None:
        cfg = self.config
        positions = epoch_shard(self.n_samples, epoch, cfg.seed, self.rank, self.world_size)
        loader = self.passes.loader(self.dataset, positions, cfg.batch_size, self.modalities)
        self._train_module.train()
        total, count = 0.0, 0
        with Prefetch(loader, cfg.prefetch and cfg.num_workers == 0) as batches:
            bar = self.passes.bar(batches, f"epoch {epoch + 1}/{cfg.epochs}",
                                  total=self.steps_per_epoch)
            for i, batch in enumerate(bar):
                if i >= self.steps_per_epoch:
                    break
                self._maybe_cluster()
                total += self._train_step(batch, batches.start)
                count += 1
                if i % 10 == 0 and hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{total / count:.3f}")
        if hasattr(bar, "close"):
            bar.close()
        stats = all_reduce_sum(torch.tensor([total, float(count)], dtype=torch.float64),
                               self.process_group)
        self.epoch_ = epoch + 1
        self._record({"event": "epoch", "epoch": self.epoch_, "step": self.step_,
                      "loss": float(stats[0] / stats[1].clamp_min(1.0)),
                      **_schedule.learning_rates(self.optimizer)})

    def fit(self, *, resume: bool = True, on_record: Callable[[dict], Any] | None = None
            ) -> list[dict]:
        """Train: align, then alternate clustering (on schedule) and SGD epochs.

        Parameters
        ----------
        resume : bool, default True
            If ``config.checkpoint_dir`` holds a checkpoint, continue from it (a finished run
            returns at once). An unreadable ``last.pt`` falls back to ``previous.pt`` with a
            warning. A fresh run seeds the global generators with ``seed + rank``.
        on_record : callable, optional
            ``on_record(record)`` is called with each new ``history_`` record (``"align"``,
            ``"clustering"``, ``"epoch"``) as soon as it is appended, on every rank (records
            loaded from a checkpoint are not repeated). Its return value is ignored; an
            exception stops training.

        Returns
        -------
        list of dict
            ``history_`` (see the class docstring).
        """
        cfg = self.config
        folder = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        ckpt = None if folder is None else folder / CHECKPOINT_NAME
        self._on_record = on_record
        try:
            if resume and folder is not None and any(
                    (folder / name).is_file() for name in (CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME)):
                self.load_checkpoint(folder)
            elif self.step_ == 0 and not self._aligned:
                self._seed_everything()
            if not self._aligned:
                self._align()
            for epoch in range(self.epoch_, cfg.epochs):
                self._train_epoch(epoch)
                if self.epoch_ == cfg.epochs:
                    self._maybe_cluster()  # the final clustering of the trained model
                if ckpt is not None and (self.epoch_ % cfg.checkpoint_every == 0
                                         or self.epoch_ == cfg.epochs):
                    self.save_checkpoint(ckpt)
            if self.labels_ is None:  # epochs done in a checkpoint without labels: cannot happen
                self._cluster()
        finally:
            self._on_record = None
        self._sync_buffers()
        return self.history_

    # -- inference ---------------------------------------------------------------------------
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
        return inference.extract(self.model, self.passes, dataset, modalities, batch_size)

    def predict_log_probs(self, dataset: Any, *, modalities: Any = None,
                          batch_size: int | None = None) -> dict[str, torch.Tensor]:
        """Log-softmax of every head for every item, in index order (this process, all items).

        Returns
        -------
        dict of str to Tensor of shape (H, N, K), float32 on the CPU
        """
        return inference.predict_log_probs(self.model, self.passes, dataset, modalities,
                                           batch_size)

    def predict(self, dataset: Any, *, modalities: Any = None, batch_size: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cluster of new data without optimal transport: argmax of the mean log-probabilities.

        Returns
        -------
        labels : LongTensor of shape (H, N)
        confidence : Tensor of shape (H, N)
            Probability of the chosen cluster under ``softmax(mean_m log p_m)``.
        """
        return inference.predict(self.model, self.passes, dataset, modalities, batch_size)

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to resume (tensors and primitives only). Collective when
        distributed (the generators' states of every rank are gathered)."""
        return trainer_state(self)

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (checks that the data and heads match)."""
        restore_trainer(self, state)

    def save_checkpoint(self, path: str | Path) -> None:
        """Write :meth:`state_dict` atomically to ``path`` (by the first rank; call on all).

        The file it replaces is kept (``previous.pt`` beside ``last.pt``)."""
        state = self.state_dict()
        if self.rank == 0:
            write_trainer_checkpoint(state, path)
        if self.process_group is not None:
            import torch.distributed as dist

            dist.barrier(group=self.process_group)

    def load_checkpoint(self, path: str | Path) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint` (``weights_only=True``).

        ``path``: a file or a ``checkpoint_dir``. An unreadable file raises
        :class:`CheckpointError` naming it, or, when the previous checkpoint is there, loads
        that one with a warning."""
        self.load_state_dict(read_trainer_checkpoint(path))
