"""What a recipe configuration builds: the encoders and the core's :class:`otcluster.TrainerConfig`.

The ``[heads]``, ``[training]`` and ``[clustering]`` sections use the core's field names, so the
trainer's configuration is assembled by name (:func:`_same_named`); the only additions are the
run's circumstances (world size, device, checkpoint folder, progress bars).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from otcluster import HeadConfig, TrainerConfig, portable_kernels
from otcluster._threads import limit_threads

from ._config import VideoRecipeConfig
from .models import build_encoder

__all__ = ["build_encoders", "kernel_scope", "trainer_config"]


def build_encoders(config: VideoRecipeConfig) -> dict[str, nn.Module]:
    """Randomly initialised encoders of the recipe, seeded with ``training.seed``.

    Calling it twice with the same configuration gives identical weights: the random-init
    baseline of ``evaluate`` is the trained model's own initialisation.

    Parameters
    ----------
    config : VideoRecipeConfig

    Returns
    -------
    dict of str to nn.Module
        ``{"video": ..., "audio": ...}`` (the video encoder is the alignment reference).
    """
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(config.training.seed)
        return {
            "video": build_encoder(config.encoder.video),
            "audio": build_encoder(config.encoder.audio),
        }
    finally:
        torch.random.set_rng_state(state)


@contextlib.contextmanager
def kernel_scope(config: VideoRecipeConfig) -> Iterator[None]:
    """The kernels ``training.kernels`` asks for: :func:`otcluster.portable_kernels` or torch's own.

    Training, labelling and evaluation all run inside it (a run's labels are only portable if the
    forward passes that make them are). Portable kernels also run on ``training.threads``
    threads (when set): MKL's ``COMPATIBLE`` branch splits its sums by thread, so labelling on
    another thread count could round differently.
    """
    if config.training.kernels != "portable":
        yield
        return
    with portable_kernels(), limit_threads(config.training.threads or torch.get_num_threads()):
        yield


def _same_named(section: Any, cls: type) -> dict[str, Any]:
    """The fields of ``section`` that ``cls`` has too (same name, same meaning)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section) if f.name in names}


def trainer_config(
    config: VideoRecipeConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    world_size: int = 1,
    cuda: bool = False,
    progress: bool = True,
) -> TrainerConfig:
    """The :class:`otcluster.TrainerConfig` of a recipe configuration (same field names).

    The learning rate is scaled linearly with the number of processes (paper: 0.01 per GPU);
    ``align = "none"`` becomes ``None``; a prior vector becomes a list. With
    ``heads.overcluster`` > 1 the heads have ``overcluster * n_clusters`` clusters.

    Parameters
    ----------
    config : VideoRecipeConfig
    checkpoint_dir : str or Path, optional
    world_size : int
        Number of training processes.
    cuda : bool
        Training on CUDA devices (mixed precision; SyncBatchNorm when distributed).
    progress : bool
        Progress bars.

    Returns
    -------
    otcluster.TrainerConfig
    """
    t = config.training
    fields = {
        **_same_named(t, TrainerConfig),
        **_same_named(config.clustering, TrainerConfig),
        **_same_named(config.heads, TrainerConfig),  # head_groups
    }
    fields.update(
        lr=_per_stream(t.lr, lambda v: v * world_size),
        optimizer=_per_stream(t.optimizer),
        prior=_fine_prior(t.prior, config.heads.overcluster),
        align=None if t.align == "none" else t.align,
        modality_weights=_per_stream(config.clustering.modality_weights, float),
    )
    return TrainerConfig(
        heads=HeadConfig(**{**_same_named(config.heads, HeadConfig),
                            "n_clusters": config.heads.n_clusters * config.heads.overcluster}),
        num_workers=config.data.num_workers,
        amp=cuda,
        sync_batchnorm=bool(cuda and world_size > 1),
        checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir),
        checkpoint_every=1,
        show_progress=progress,
        **fields,
    )


def _fine_prior(prior: Any, overcluster: int) -> Any:
    """The prior of the trained clusters: a name as is (built at ``overcluster * K``); a
    vector's every share split equally among the ``overcluster`` clusters that merge into it."""
    if isinstance(prior, str):
        return prior
    return [p / overcluster for p in prior for _ in range(overcluster)]


def _per_stream(value: Any, each: Callable[[Any], Any] = lambda v: v) -> Any:
    """A recipe setting as the trainer's: a name as is, a number as ``each(number)``, a
    ``[video, audio]`` pair as ``{modality: each(value)}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return {m: each(v) for m, v in zip(("video", "audio"), value)}
    return each(value)
