"""Checkpointing of a :class:`SelfLabelTrainer`: its state as tensors and primitives, restoring
it, and the checkpoint files (``last.pt``, the one it replaced kept as ``previous.pt``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._checkpoint import (
    CHECKPOINT_NAME,
    PREVIOUS_CHECKPOINT_NAME,
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from .._distributed import all_gather_objects
from .._schedule import per_modality
from .config import storable

if TYPE_CHECKING:
    from .trainer import SelfLabelTrainer

__all__ = ["FORMAT", "trainer_state", "restore_trainer", "write_trainer_checkpoint",
           "read_trainer_checkpoint"]

FORMAT = "otcluster.SelfLabelTrainer/1"


def trainer_state(trainer: SelfLabelTrainer) -> dict:
    """Everything needed to resume (tensors and primitives only). Collective when distributed
    (the generators' states of every rank are gathered)."""
    t = trainer
    t._sync_buffers()
    rng = all_gather_objects(get_rng_state(), t.process_group)
    return {
        "format": FORMAT,
        "model": t.model.state_dict(),
        "optimizer": t.optimizer.state_dict(),
        "optimizer_kind": t.config.optimizer,
        "scheduler": t.scheduler.state_dict(),
        "scaler": t.scaler.state_dict(),
        "labels": t.labels_,
        "labeler": t.labeler_.state_dict(),
        "warmup_labeler": t.warmup_labeler_.state_dict(),
        "prior": t.prior_,
        "epoch": t.epoch_,
        "step": t.step_,
        "schedule_pos": t._schedule_pos,
        "n_clusterings": t._n_clusterings,
        "modality_fit": t._fit.sums.cpu(),
        "aligned": t._aligned,
        "history": storable(t.history_),
        "rng": rng,
        "n_samples": t.n_samples,
        "modalities": list(t.modalities),
        "world_size": t.world_size,
        "config": storable(dataclasses.asdict(t.config)),
    }


def check_format(state: dict, path: Any = None) -> None:
    if state.get("format") != FORMAT:
        where = "" if path is None else f"{path} is "
        raise CheckpointError(f"{where}not a SelfLabelTrainer checkpoint (format "
                              f"{state.get('format')!r})")


def restore_trainer(trainer: SelfLabelTrainer, state: dict) -> None:
    """Restore :func:`trainer_state` (checks that the data and heads match)."""
    t = trainer
    check_format(state)
    H, K = t.config.heads.n_heads, t.config.heads.n_clusters
    if state["n_samples"] != t.n_samples:
        raise ValueError(f"checkpoint is for N={state['n_samples']} samples, the dataset has "
                         f"{t.n_samples}")
    if list(state["modalities"]) != t.modalities:
        raise ValueError(f"checkpoint modalities {state['modalities']} differ from "
                         f"{t.modalities}")
    prior = state.get("prior")
    if prior is not None and tuple(prior.shape) != (H, K):
        raise ValueError(f"checkpoint has {tuple(prior.shape)} (heads, clusters), the "
                         f"config ({H}, {K})")
    kind = state.get("optimizer_kind", "sgd")  # older checkpoints: SGD, the only one then
    if per_modality(kind, t.modalities, "optimizer") != per_modality(t.config.optimizer,
                                                                     t.modalities, "optimizer"):
        raise ValueError(f"checkpoint was trained with optimizer {kind!r}, the config has "
                         f"{t.config.optimizer!r}")
    t.model.load_state_dict(state["model"])
    try:
        t.optimizer.load_state_dict(state["optimizer"])
    except ValueError as e:  # e.g. a per-modality lr added or removed: other parameter groups
        raise ValueError(f"the checkpoint's optimizer state does not fit the config's optimizer "
                         f"and lr ({e})") from None
    t.scheduler.load_state_dict(state["scheduler"])
    t.scaler.load_state_dict(state["scaler"])
    t.labels_ = state["labels"]
    t.labeler_.load_state_dict(state["labeler"])
    if "warmup_labeler" in state:  # older checkpoints: no warm-up
        t.warmup_labeler_.load_state_dict(state["warmup_labeler"])
    t.epoch_ = int(state["epoch"])
    t.step_ = int(state["step"])
    t._schedule_pos = int(state["schedule_pos"])
    t._n_clusterings = int(state["n_clusterings"])
    if "modality_fit" in state and tuple(state["modality_fit"].shape) == tuple(t._fit.sums.shape):
        t._fit.sums.copy_(state["modality_fit"])  # older checkpoints: from zero
    else:
        t._fit.reset()
    t._aligned = bool(state["aligned"])
    t.history_ = list(state["history"])
    rng = state["rng"]
    if len(rng) == t.world_size:
        set_rng_state(rng[t.rank])
    else:  # another world size: the exact random stream cannot be continued
        t._seed_everything()


def previous_of(path: Path) -> Path:
    """Where the checkpoint that ``path`` replaced is kept: ``previous.pt`` beside ``last.pt``,
    ``NAME.previous`` beside any other name."""
    if path.name == CHECKPOINT_NAME:
        return path.with_name(PREVIOUS_CHECKPOINT_NAME)
    return path.with_name(path.name + ".previous")


def write_trainer_checkpoint(state: dict, path: str | Path) -> Path:
    """Write ``state`` atomically to ``path``, keeping the file it replaces (:func:`previous_of`)."""
    path = Path(path)
    return save_checkpoint(state, path, previous=previous_of(path))


def read_trainer_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """A trainer checkpoint from a file or a ``checkpoint_dir``; falls back (with a warning) to
    the previous checkpoint when the file is missing or unreadable."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    state = load_checkpoint(path, map_location, fallback=previous_of(path))
    check_format(state, path)
    return state
