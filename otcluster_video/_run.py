"""The run folder in one place: its file names, the one atomic write, its configuration and its
manifests.

A *run folder* holds everything about one training run::

    RUN/config.toml          the recipe configuration (a preset plus overrides), reloadable
    RUN/manifest.csv         the training videos (from ``prepare``), row = sample index
    RUN/manifest.skipped.csv files that were skipped, with the reason
    RUN/checkpoints/last.pt  the trainer's checkpoint (atomic; training resumes from it)
    RUN/history.jsonl        alignment, clusterings and epochs, one JSON object a line (appended
                             as training goes)
    RUN/train.log            the log of ``train``: each epoch and clustering as it happens
    RUN/merge.json           with ``heads.overcluster`` > 1: each head's clusters merged into K
    RUN/labels.csv           one row per video: cluster of every head and its confidence
    RUN/manifests/           manifests of other data (labelling new videos, retrieval splits)
    RUN/evaluation.{txt,json}, RUN/degrade.{png,json}, RUN/retrieval.json, RUN/explorer.html

Every file the recipe writes goes through :func:`write_text` (``otcluster``'s atomic write:
temporary file, fsync, rename, fsync of the folder).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from otcluster._checkpoint import CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME
from otcluster._io import atomic_write_text

from ._config import VideoRecipeConfig
from ._files import csv_cell, csv_value  # noqa: F401 - the run's CSV files use them
from ._preset import _flatten, config_to_toml, load_preset
from ._probe import PrepareReport, VideoInfo, index_videos, load_manifest
from ._probe import prepare as prepare_manifest

__all__ = [
    "ConfigChangedError",
    "RunPaths",
    "config_changes",
    "ground_truth",
    "load_run_config",
    "other_manifest",
    "resolve_manifest",
    "write_text",
]

#: Keys that may change between a run and its resumption (the solver's stopping rule and its
#: lam-scaling: so that a run whose train.log warns that Sinkhorn did not converge can go on
#: with a higher max_iter, or fewer passes; and the labelling's weights, unused in training).
RESUMABLE_CHANGES = ("name", "training.epochs", "training.threads", "training.eval_threads",
                     "training.kernels", "data.num_workers",
                     "data.cache_dir", "clustering.sinkhorn_tol", "clustering.sinkhorn_max_iter",
                     "clustering.sinkhorn_scaling_stages", "clustering.label_weights")


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (the folder is created); returns ``path``."""
    return atomic_write_text(path, text)


@dataclass(frozen=True)
class RunPaths:
    """File names inside a run folder (see the module docstring).

    Parameters
    ----------
    root : Path
        The run folder.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    config = property(lambda self: self.root / "config.toml")
    manifest = property(lambda self: self.root / "manifest.csv")
    skipped = property(lambda self: self.root / "manifest.skipped.csv")
    checkpoints = property(lambda self: self.root / "checkpoints")
    checkpoint = property(lambda self: self.checkpoints / CHECKPOINT_NAME)
    previous_checkpoint = property(lambda self: self.checkpoints / PREVIOUS_CHECKPOINT_NAME)
    history = property(lambda self: self.root / "history.jsonl")
    log = property(lambda self: self.root / "train.log")
    labels = property(lambda self: self.root / "labels.csv")
    merge = property(lambda self: self.root / "merge.json")
    manifests = property(lambda self: self.root / "manifests")
    explorer = property(lambda self: self.root / "explorer.html")

    def output(self, name: str) -> Path:
        """A result file of an analysis command (``evaluation.json``, ``degrade.png``...)."""
        return self.root / name

    def has_checkpoint(self) -> bool:
        """Whether training can resume here (the last or the previous checkpoint exists)."""
        return self.checkpoint.is_file() or self.previous_checkpoint.is_file()

    def is_run(self) -> bool:
        """Whether ``train`` has started here (a configuration or a checkpoint exists)."""
        return self.config.is_file() or self.has_checkpoint()

    def require_checkpoint(self) -> Path:
        """The checkpoint, or a ``FileNotFoundError`` that says how to make one."""
        if not self.config.is_file():
            raise FileNotFoundError(
                f"{self.root} is not a run folder (no config.toml): train first with "
                f"`otcluster-video train --data DIR --out {self.root}`"
            )
        if not self.has_checkpoint():
            raise FileNotFoundError(
                f"no checkpoint at {self.checkpoint}: train first with "
                f"`otcluster-video train --out {self.root}`"
            )
        return self.checkpoint

    def refuse_new_data(self) -> None:
        """``ValueError`` if this folder holds a run: its manifest defines the run's samples
        (row = sample index), so replacing it would make ``label``, ``evaluate`` and resume use
        other videos than the ones trained on."""
        if self.is_run():
            raise ValueError(
                f"{self.root} holds a training run (config.toml / checkpoint): preparing new data "
                f"there would replace the manifest it was trained on. Use a new --out folder to "
                f"train on other or more videos, or `otcluster-video label --run {self.root} "
                f"--data DIR` to label new videos with this run"
            )


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


def load_run_config(run: str | Path) -> VideoRecipeConfig:
    """The configuration a run was trained with (``RUN/config.toml``).

    Parameters
    ----------
    run : str or Path
        Run folder.

    Returns
    -------
    VideoRecipeConfig
    """
    paths = RunPaths(Path(run))
    if not paths.config.is_file():
        raise FileNotFoundError(
            f"{paths.root} is not a run folder (no config.toml): train first with "
            f"`otcluster-video train --data DIR --out {paths.root}`"
        )
    return load_preset(paths.config)


def save_run_config(paths: RunPaths, config: VideoRecipeConfig) -> Path:
    """Write ``RUN/config.toml`` (a preset that :func:`load_preset` reads back equal)."""
    return write_text(paths.config, config_to_toml(config))


class ConfigChangedError(ValueError):
    """A run folder resumed with a configuration that differs in keys a run may not change."""

    def __init__(self, root: Path, changes: list[str]):
        may = ", ".join(k for k in RESUMABLE_CHANGES if k != "name")
        super().__init__(f"{root} was trained with another configuration (differences in "
                         f"{', '.join(changes)}); use a new --out folder, or resume without "
                         f"changing these keys (only {may} may change)")
        self.root, self.changes = root, changes


def config_changes(old: VideoRecipeConfig, new: VideoRecipeConfig) -> list[str]:
    """Dotted keys that differ, except those a resumed run may change."""
    a, b = _flatten(old.to_dict()), _flatten(new.to_dict())
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES)


# --------------------------------------------------------------------------------------------
# manifests and ground truth
# --------------------------------------------------------------------------------------------


def is_manifest(path: Path) -> bool:
    """A manifest written by ``prepare`` (not a source CSV of paths and labels)."""
    if path.suffix.lower() == ".jsonl":
        return True
    if path.suffix.lower() != ".csv":
        return False
    with path.open(newline="") as f:
        header = next(csv.reader(f), [])
    return {"duration", "n_frames", "has_audio"} <= set(header)


def resolve_manifest(
    data: str | Path, manifest_out: Path, config: VideoRecipeConfig, progress: bool
) -> tuple[Path, PrepareReport | None]:
    """A manifest for ``data``: used as is when it is one, else written by ``prepare``."""
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"--data {data}: no such folder or file")
    if data.is_file() and is_manifest(data):
        return data, None
    report = prepare_manifest(
        data,
        manifest_out,
        min_duration=config.data.min_duration,
        require_audio=config.data.require_audio,
        progress=progress,
    )
    if not report.videos:
        raise ValueError(f"no usable videos in {data} ({report.summary()}); see {report.skipped_report}")
    return report.manifest, report


def other_manifest(
    paths: RunPaths, data: str | Path, config: VideoRecipeConfig, progress: bool, tag: str = ""
) -> tuple[list[VideoInfo], PrepareReport | None]:
    """Videos of data other than the training set, prepared into ``RUN/manifests/<tag>.csv``."""
    data = Path(data)
    name = (tag or data.stem or "data").replace(os.sep, "_")
    manifest, report = resolve_manifest(data, paths.manifests / f"{name}.csv", config, progress)
    return load_manifest(manifest), report


def ground_truth(videos: Sequence[VideoInfo], truth: str | Path | None) -> np.ndarray | None:
    """Integer classes (-1 unknown) from a truth CSV (path, label) or the manifest labels;
    ``None`` when fewer than two classes are known."""
    if truth is not None:
        names = {str(p): lab for p, lab in index_videos(truth)}
        given = [names.get(str(Path(v.path).resolve()), "") for v in videos]
    else:
        given = [v.label for v in videos]
    classes = sorted({g for g in given if g})
    if len(classes) < 2:
        return None
    ids = {c: i for i, c in enumerate(classes)}
    return np.array([ids.get(g, -1) for g in given], dtype=np.int64)


def rank_world(process_group: Any) -> tuple[int, int]:
    """(rank, world size) of ``process_group`` (``(0, 1)`` for ``None``)."""
    if process_group is None:
        return 0, 1
    import torch.distributed as dist

    return dist.get_rank(process_group), dist.get_world_size(process_group)


def barrier(process_group: Any) -> None:
    if process_group is not None:
        import torch.distributed as dist

        dist.barrier(group=process_group)
