"""Inference over any dataset: features, log-probabilities and labels without optimal transport.

Functions of a :class:`SelfLabelModel` and a :class:`DataPasses` (device, batch size, workers):
no optimiser, no training dataset. They run in this process over the whole dataset (not sharded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from .._views import average_views
from .data import DataPasses

if TYPE_CHECKING:
    from .model import SelfLabelModel

__all__ = ["modalities_of", "extract", "predict_log_probs", "predict"]


def modalities_of(model: SelfLabelModel, dataset: Any, modalities: Any) -> list[str]:
    """The model's modalities to use: the given ones (checked), else those in ``dataset[0]``."""
    if modalities is None:
        first = dataset[0]
        mods = [m for m in model.modalities if isinstance(first, Mapping) and m in first]
        if not mods:
            raise KeyError(f"dataset items have none of the modalities {model.modalities}")
        return mods
    mods = [modalities] if isinstance(modalities, str) else list(modalities)
    unknown = [m for m in mods if m not in model.modalities]
    if unknown or not mods:
        raise ValueError(f"unknown modalities {unknown}; the model has {model.modalities}")
    return mods


def extract(model: SelfLabelModel, passes: DataPasses, dataset: Any, modalities: Any = None,
            batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """Pooled encoder features ``{m: (N, D_m)}``, float32 on the CPU, in index order."""
    mods = modalities_of(model, dataset, modalities)

    def fn(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: model.encode(inputs[m], m).float() for m in mods}

    return passes.full_pass(model, dataset, mods, fn, batch_size, "extracting")


def predict_log_probs(model: SelfLabelModel, passes: DataPasses, dataset: Any,
                      modalities: Any = None, batch_size: int | None = None
                      ) -> dict[str, torch.Tensor]:
    """Log-softmax of every head ``{m: (H, N, K)}``, float32 on the CPU, in index order."""
    mods = modalities_of(model, dataset, modalities)

    def fn(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return model.log_probs_from_features({m: model.encode(inputs[m], m) for m in mods})

    return passes.full_pass(model, dataset, mods, fn, batch_size, "predicting")


def predict(model: SelfLabelModel, passes: DataPasses, dataset: Any, modalities: Any = None,
            batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax of the mean log-probabilities (eq. 6, weighted by the model's
    ``modality_weights``) and its probability, each ``(H, N)``."""
    lp = predict_log_probs(model, passes, dataset, modalities, batch_size)
    mean = average_views(list(lp.values()), normalize=False,
                         weights=model.weights_of(lp)).log_softmax(-1)
    conf, labels = mean.max(-1)
    return labels, conf.exp()
