"""The SeLaVi recipe as functions over a run folder: what the ``otcluster-video`` commands call.

This module gathers the Python API in one place; each function lives in its command's module
(:mod:`otcluster_video.commands`), the run folder's layout in :mod:`otcluster_video._run`, the
configuration in :mod:`otcluster_video._config` / :mod:`otcluster_video._preset`. Training and
inference come from :mod:`otcluster` (:class:`otcluster.SelfLabelTrainer`,
:meth:`otcluster.SelfLabelModel.from_checkpoint`). Nothing here reads the environment; the
command line sets up distributed training and passes ``process_group`` explicitly.

>>> from otcluster_video import recipe
>>> recipe.RunPaths("runs/mine").checkpoint.as_posix()
'runs/mine/checkpoints/last.pt'
"""

from __future__ import annotations

import warnings
from typing import Any

from ._build import build_encoders, kernel_scope, trainer_config
from ._preset import config_to_toml
from ._run import RunPaths, load_run_config
from ._run import config_changes as _config_changes  # noqa: F401 - the old private name
from .commands.evaluate import degrade, evaluate
from .commands.explore import explore
from .commands.label import label
from .commands.prepare import prepare
from .commands.retrieval import retrieval
from .commands.select import RunAgreement, select_runs
from .commands.train import train

__all__ = [
    "RunAgreement",
    "RunPaths",
    "build_encoders",
    "config_to_toml",
    "degrade",
    "evaluate",
    "explore",
    "kernel_scope",
    "label",
    "load_run_config",
    "prepare",
    "retrieval",
    "select_runs",
    "train",
    "trainer_config",
]


def IndexedClips(dataset: Any, video_transform: Any = None) -> Any:  # noqa: N802 - old class name
    """Deprecated: :class:`otcluster_video.AVDataset` items always carry their own index now.

    Returns ``dataset`` itself (a ``video_transform`` is no longer supported here: apply it to
    the batches).
    """
    warnings.warn(
        "recipe.IndexedClips is deprecated and no longer needed: AVDataset items keep their own "
        "index (use AVDataset(..., return_source=True) to see which ones a neighbour stood in for)",
        DeprecationWarning,
        stacklevel=2,
    )
    if video_transform is not None:
        raise ValueError("IndexedClips(video_transform=...) is gone: transform the batches instead")
    return dataset
