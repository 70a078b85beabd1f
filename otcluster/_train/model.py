"""`SelfLabelModel`: encoders and per-modality heads; log-probabilities from features; loading
from a checkpoint and inference over any dataset (no optimiser, no training dataset)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from .._heads import HeadConfig, MultiHead
from .._views import average_views, view_weights
from . import inference
from .data import DataPasses, feature_dims

__all__ = ["SelfLabelModel", "build_model", "check_encoders", "for_training"]


def check_encoders(encoders: Any) -> None:
    """Raise naming the problem unless ``encoders`` is a non-empty ``{name: nn.Module}``."""
    if not isinstance(encoders, Mapping) or len(encoders) == 0:
        raise ValueError("encoders must be a non-empty dict {modality name: nn.Module}")
    for name, enc in encoders.items():
        if not isinstance(name, str) or not name or "." in name or name == "index":
            raise ValueError(f"modality names must be non-empty strings without '.' and not "
                             f"'index', got {name!r}")
        if not isinstance(enc, nn.Module):
            raise TypeError(f"encoder {name!r} must be an nn.Module, got {type(enc).__name__}")


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
    modality_weights : Tensor of shape (M,), buffer
        Weight of each modality in eq. 6 (sum 1; equal unless the trainer's
        ``modality_weights`` sets them), saved with the model.

    Examples
    --------
    >>> enc = {"a": nn.Linear(4, 8), "b": nn.Linear(3, 8)}
    >>> cfg = HeadConfig(n_heads=2, n_clusters=5, hidden_dim=None)
    >>> model = SelfLabelModel(enc, {m: MultiHead(8, cfg) for m in enc}).eval()
    >>> feats = {"a": torch.randn(6, 8), "b": torch.randn(6, 8)}
    >>> model.log_probs_from_features(feats)["a"].shape, model.mean_log_probs(feats).shape
    (torch.Size([2, 6, 5]), torch.Size([2, 6, 5]))
    """

    modality_weights: torch.Tensor

    def __init__(self, encoders: Mapping[str, nn.Module], heads: Mapping[str, MultiHead]):
        super().__init__()
        self.encoders = nn.ModuleDict(dict(encoders))
        self.heads = nn.ModuleDict(dict(heads))
        self.modalities = list(encoders)
        M = len(self.modalities)
        self.register_buffer("modality_weights", torch.full((M,), 1.0 / M))
        self.register_load_state_dict_pre_hook(_equal_weights_if_missing)

    def weights_of(self, modalities: Any) -> list[float] | None:
        """Weights of ``modalities`` in eq. 6, renormalised to sum 1; None when they are equal
        (the plain mean)."""
        mods = list(modalities)
        w = [float(self.modality_weights[self.modalities.index(m)]) for m in mods]
        if all(v == w[0] for v in w) or sum(w) <= 0:
            return None
        return [v / sum(w) for v in w]

    def set_modality_weights(self, weights: Mapping[str, float]) -> None:
        """Set the eq. 6 weights from ``{modality: weight}`` (non-negative, positive sum;
        normalised)."""
        w = view_weights(weights, self.modalities)
        self.modality_weights.copy_(torch.tensor(w, dtype=self.modality_weights.dtype))

    def head(self, modality: str) -> MultiHead:
        """The :class:`MultiHead` of ``modality``."""
        return cast(MultiHead, self.heads[modality])

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

    def log_probs_from_features(self, features: Mapping[str, torch.Tensor], heads: Any = None
                                ) -> dict[str, torch.Tensor]:
        """Log-softmax of the heads of each modality in ``features``.

        Parameters
        ----------
        features : dict of str to Tensor of shape (B, D_m)
            Pooled encoder features (:meth:`encode`), any subset of the modalities.
        heads : sequence of int, optional
            Heads to evaluate (default: all).

        Returns
        -------
        dict of str to Tensor of shape (H', B, K), float32
        """
        return {m: torch.log_softmax(self.heads[m](z, heads).float(), -1)
                for m, z in features.items()}

    def mean_log_probs(self, features: Mapping[str, torch.Tensor], heads: Any = None
                       ) -> torch.Tensor:
        """Eq. 6: mean over the modalities in ``features`` of the heads' log-softmax, weighted
        by :attr:`modality_weights`.

        Returns
        -------
        Tensor of shape (H', B, K), float32 (:func:`otcluster.average_views` of the logits)
        """
        return average_views([self.heads[m](z, heads) for m, z in features.items()],
                             weights=self.weights_of(features))

    # -- loading and inference ---------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, encoders: Mapping[str, nn.Module], *,
                        map_location: Any = "cpu") -> SelfLabelModel:
        """The trained model of a :class:`SelfLabelTrainer` checkpoint, in eval mode.

        Parameters
        ----------
        path : str or PathLike
            A checkpoint file, or a ``checkpoint_dir`` (its ``last.pt``; ``previous.pt`` with a
            warning when ``last.pt`` is unreadable).
        encoders : dict of str to nn.Module
            Encoders of the same architecture as in training, for all the checkpoint's
            modalities or a subset of them (the model then has only those).
        map_location : default "cpu"

        Returns
        -------
        SelfLabelModel
        """
        from .state import read_trainer_checkpoint

        check_encoders(encoders)
        state = read_trainer_checkpoint(Path(path), map_location)
        known = list(state["modalities"])
        unknown = [m for m in encoders if m not in known]
        if unknown:
            raise ValueError(f"encoders {unknown} are not modalities of the checkpoint {path} "
                             f"(it has {known})")
        mods = [m for m in known if m in encoders]
        head_cfg = HeadConfig(**state["config"]["heads"])
        weights = state["model"]
        heads = {m: MultiHead(_head_in_dim(weights, m), head_cfg) for m in mods}
        model = cls({m: encoders[m] for m in mods}, heads)
        keep = tuple(f"{part}.{m}." for m in mods for part in ("encoders", "heads"))
        kept = {k: v for k, v in weights.items() if k.startswith(keep)}
        if "modality_weights" in weights:
            kept["modality_weights"] = weights["modality_weights"][[known.index(m) for m in mods]]
        model.load_state_dict(kept)
        return model.eval()

    def _passes(self, batch_size: int, num_workers: int, collate_fn: Callable | None,
                device: Any, show_progress: bool) -> DataPasses:
        if device is None:
            device = next(self.parameters()).device
        return DataPasses(torch.device(device), batch_size, num_workers, collate_fn,
                          show_progress=show_progress)

    def extract(self, dataset: Any, *, modalities: Any = None, batch_size: int = 64,
                num_workers: int = 0, collate_fn: Callable | None = None, device: Any = None,
                show_progress: bool = False) -> dict[str, torch.Tensor]:
        """Pooled encoder features of every item, in index order (see
        :meth:`SelfLabelTrainer.extract`); ``device``: default the model's."""
        passes = self._passes(batch_size, num_workers, collate_fn, device, show_progress)
        return inference.extract(self, passes, dataset, modalities)

    def predict_log_probs(self, dataset: Any, *, modalities: Any = None, batch_size: int = 64,
                          num_workers: int = 0, collate_fn: Callable | None = None,
                          device: Any = None, show_progress: bool = False
                          ) -> dict[str, torch.Tensor]:
        """Log-softmax of every head for every item, in index order: dict of (H, N, K)."""
        passes = self._passes(batch_size, num_workers, collate_fn, device, show_progress)
        return inference.predict_log_probs(self, passes, dataset, modalities)

    def predict(self, dataset: Any, *, modalities: Any = None, batch_size: int = 64,
                num_workers: int = 0, collate_fn: Callable | None = None, device: Any = None,
                show_progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels ``(H, N)`` and confidences ``(H, N)`` without optimal transport (see
        :meth:`SelfLabelTrainer.predict`)."""
        passes = self._passes(batch_size, num_workers, collate_fn, device, show_progress)
        return inference.predict(self, passes, dataset, modalities)


def build_model(encoders: Mapping[str, nn.Module], head_config: HeadConfig, seed: int,
                dataset: Any, collate_fn: Callable | None, device: torch.device
                ) -> SelfLabelModel:
    """Encoders + fresh heads (feature dimensions from ``encoder.feature_dim`` or a dry run on
    ``dataset``), on ``device``."""
    # the heads' initialisation depends on ``seed`` only, not on whatever ran before in this
    # process (seen: the same recipe configuration gave NMI 0.86 and 0.99 depending on earlier
    # runs in the process); the global generators are left as they were
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dims = feature_dims(encoders, dataset, collate_fn, device)
        heads = {m: MultiHead(dims[m], head_config) for m in encoders}
    return SelfLabelModel(encoders, heads).to(device)


def for_training(model: SelfLabelModel, device: torch.device, group: Any,
                 sync_batchnorm: bool) -> tuple[SelfLabelModel, nn.Module]:
    """``(model, module the training steps call)``: the model itself, or with a process group
    DDP over it (its BatchNorm layers first converted to SyncBatchNorm if asked)."""
    if group is None:
        return model, model
    if sync_batchnorm:
        if device.type != "cuda":
            raise ValueError("sync_batchnorm needs CUDA devices (torch's SyncBatchNorm has "
                             "no CPU implementation); set sync_batchnorm=False")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model, group)
    ids = None
    if device.type == "cuda":
        ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return model, nn.parallel.DistributedDataParallel(model, device_ids=ids, process_group=group)


def _head_in_dim(weights: Mapping[str, torch.Tensor], modality: str) -> int:
    """Feature dimension D of a modality's heads: the input width of head 0's first Linear."""
    prefix = f"heads.{modality}.heads.0."
    for k, v in weights.items():
        if k.startswith(prefix) and k.endswith(".weight") and v.dim() == 2:
            return int(v.shape[1])
    raise ValueError(f"the checkpoint has no head weights for modality {modality!r}")


def _equal_weights_if_missing(module: SelfLabelModel, state_dict: dict, prefix: str,
                              *args: Any) -> None:
    """Checkpoints written before ``modality_weights`` existed load with equal weights."""
    key = prefix + "modality_weights"
    if key not in state_dict and any(k.startswith(prefix) for k in state_dict):
        state_dict[key] = torch.full_like(module.modality_weights, 1.0 / len(module.modalities))
