"""The SeLaVi recipe as functions over a run folder: what the ``otcluster-video`` commands call.

A *run folder* holds everything about one training run::

    RUN/config.toml          the recipe configuration (a preset plus overrides), reloadable
    RUN/manifest.csv         the training videos (from :func:`prepare`), row = sample index
    RUN/manifest.skipped.csv files that were skipped, with the reason
    RUN/checkpoints/last.pt  the trainer's checkpoint (atomic; training resumes from it)
    RUN/history.jsonl        alignment, clusterings and epochs, one JSON object a line
    RUN/train.log            the command-line log of ``train``
    RUN/labels.csv           one row per video: cluster of every head and its confidence
    RUN/evaluation.{txt,json}, RUN/degrade.{png,json}, RUN/retrieval.json, RUN/explorer.html

The functions are thin: data and models come from :mod:`otcluster_video`, training and
inference from :class:`otcluster.SelfLabelTrainer`, metrics from :mod:`otcluster.metrics`,
baselines from :func:`otcluster.kmeans_baseline`. Nothing here reads the environment; the
command-line layer sets up distributed training and passes ``process_group`` explicitly.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from otcluster import HeadConfig, SelfLabelTrainer, TrainerConfig, kmeans_baseline
from otcluster.metrics import select_head

from ._config import VideoRecipeConfig, load_preset
from ._probe import PrepareReport, VideoInfo, index_videos, load_manifest
from ._probe import prepare as _prepare_manifest
from .dataset import AVDataset
from .evaluate import (
    degrade_frames,
    format_table,
    modality_labels,
    retrieval_recall,
    score_labelings,
)
from .models import build_encoder

__all__ = [
    "RunPaths",
    "build_encoders",
    "degrade",
    "evaluate",
    "explore",
    "label",
    "load_run_config",
    "prepare",
    "retrieval",
    "train",
    "trainer_config",
]

logger = logging.getLogger("otcluster_video")

MODALITIES = ("video", "audio")


# --------------------------------------------------------------------------------------------
# run folder
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPaths:
    """File names inside a run folder.

    Parameters
    ----------
    root : Path
        The run folder.
    """

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.csv"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def history(self) -> Path:
        return self.root / "history.jsonl"

    @property
    def labels(self) -> Path:
        return self.root / "labels.csv"

    @property
    def manifests(self) -> Path:
        """Manifests of other data (labelling new videos, retrieval splits)."""
        return self.root / "manifests"

    def require_checkpoint(self) -> Path:
        """The checkpoint, or a ``FileNotFoundError`` that says how to make one."""
        if not self.config.is_file():
            raise FileNotFoundError(
                f"{self.root} is not a run folder (no config.toml): train first with "
                f"`otcluster-video train --data DIR --out {self.root}`"
            )
        if not self.checkpoint.is_file():
            raise FileNotFoundError(
                f"no checkpoint at {self.checkpoint}: train first with "
                f"`otcluster-video train --out {self.root}`"
            )
        return self.checkpoint


def _write_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _to_toml(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[str]:
    lines = []
    scalars = [(k, v) for k, v in tree.items() if not isinstance(v, Mapping)]
    tables = [(k, v) for k, v in tree.items() if isinstance(v, Mapping)]
    if prefix and scalars:
        lines += ["", f"[{'.'.join(prefix)}]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in scalars]
    for k, sub in tables:
        lines += _to_toml(sub, (*prefix, k))
    return lines


def config_to_toml(config: VideoRecipeConfig) -> str:
    """The configuration as TOML text that :func:`load_preset` reads back to an equal config.

    Parameters
    ----------
    config : VideoRecipeConfig

    Returns
    -------
    str
    """
    return "\n".join(_to_toml(config.to_dict())) + "\n"


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


# keys that may change between a run and its resumption
_RESUMABLE_CHANGES = ("name", "training.epochs", "data.num_workers", "data.cache_dir")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _config_changes(old: VideoRecipeConfig, new: VideoRecipeConfig) -> list[str]:
    a, b = _flatten(old.to_dict()), _flatten(new.to_dict())
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in _RESUMABLE_CHANGES)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def _is_manifest(path: Path) -> bool:
    """A manifest written by :func:`prepare` (not a source CSV of paths and labels)."""
    if path.suffix.lower() == ".jsonl":
        return True
    if path.suffix.lower() != ".csv":
        return False
    with path.open(newline="") as f:
        header = next(csv.reader(f), [])
    return {"duration", "n_frames", "has_audio"} <= set(header)


def _print(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(message, flush=True)


def _resolve_manifest(
    data: str | Path, manifest_out: Path, config: VideoRecipeConfig, progress: bool
) -> tuple[Path, PrepareReport | None]:
    """A manifest for ``data``: used as is when it is one, else written by :func:`prepare`."""
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"--data {data}: no such folder or file")
    if data.is_file() and _is_manifest(data):
        return data, None
    report = _prepare_manifest(
        data,
        manifest_out,
        min_duration=config.data.min_duration,
        require_audio=config.data.require_audio,
        progress=progress,
    )
    if not report.videos:
        raise ValueError(f"no usable videos in {data} ({report.summary()}); see {report.skipped_report}")
    return report.manifest, report


def prepare(
    data: str | Path,
    out: str | Path,
    *,
    preset: str | Path = "cpu",
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> PrepareReport:
    """Probe every video of ``data`` and write ``out/manifest.csv`` and the skipped-files report.

    Parameters
    ----------
    data : str or Path
        Folder of videos (the parent folder name of a file is its label, used only for
        evaluation) or a CSV with a ``path`` and optionally a ``label`` column.
    out : str or Path
        Run folder (created).
    preset : str or Path
        Preset whose ``[data]`` section says what is usable (minimum duration, audio).
    overrides : mapping, optional
        Dotted preset overrides.
    progress : bool
        Show a progress bar.

    Returns
    -------
    PrepareReport
        Usable videos and skipped files with reasons (``report.summary()`` counts them).
    """
    config = load_preset(preset, overrides)
    paths = RunPaths(Path(out))
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"{data}: no such folder or file")
    return _prepare_manifest(
        data,
        paths.manifest,
        min_duration=config.data.min_duration,
        require_audio=config.data.require_audio,
        progress=progress,
    )


class IndexedClips(Dataset):
    """An :class:`AVDataset` whose items always carry the index they were asked for.

    ``AVDataset`` replaces a clip that fails to decode by the next video's (and that video's
    index); the trainer needs ``"index"`` to be a permutation of ``0..N-1``. This wrapper keeps
    the requested index, records it in :attr:`substituted` (so its label can be reported as
    missing) and can transform the video tensor (e.g. :func:`degrade_frames`).

    Parameters
    ----------
    dataset : AVDataset
    video_transform : callable, optional
        Applied to ``item["video"]`` of shape (C, T, H, W).

    Attributes
    ----------
    substituted : set of int
        Indices whose own clip could not be decoded in this process.
    """

    def __init__(
        self,
        dataset: AVDataset,
        video_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.dataset = dataset
        self.video_transform = video_transform
        self.substituted: set[int] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        if item["index"] != index:
            self.substituted.add(index)
            item = {**item, "index": index}
        if self.video_transform is not None:
            item = {**item, "video": self.video_transform(item["video"])}
        return item


def _ground_truth(videos: Sequence[VideoInfo], truth: str | Path | None) -> np.ndarray | None:
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


# --------------------------------------------------------------------------------------------
# models and trainer
# --------------------------------------------------------------------------------------------


def build_encoders(config: VideoRecipeConfig) -> dict[str, nn.Module]:
    """Randomly initialised encoders of the recipe, seeded with ``training.seed``.

    Calling it twice with the same configuration gives identical weights: the random-init
    baseline of :func:`evaluate` is the trained model's own initialisation.

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


def trainer_config(
    config: VideoRecipeConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    world_size: int = 1,
    cuda: bool = False,
    progress: bool = True,
) -> TrainerConfig:
    """Translate the recipe configuration into an :class:`otcluster.TrainerConfig`.

    The learning rate is scaled linearly with the number of processes (paper: 0.01 per GPU).

    Parameters
    ----------
    config : VideoRecipeConfig
    checkpoint_dir : str or Path, optional
    world_size : int
        Number of training processes.
    cuda : bool
        Training on CUDA devices (enables SyncBatchNorm when distributed).
    progress : bool
        Progress bars.

    Returns
    -------
    otcluster.TrainerConfig
    """
    t, h = config.training, config.heads
    return TrainerConfig(
        heads=HeadConfig(n_heads=h.n_heads, n_clusters=h.n_clusters, hidden_dim=h.hidden, dropout=h.dropout),
        epochs=t.epochs,
        batch_size=t.batch_size,
        lr=t.lr * world_size,
        momentum=t.momentum,
        weight_decay=t.weight_decay,
        warmup_epochs=t.warmup_epochs,
        lam=t.lam,
        prior={"gauss": "gaussian"}.get(t.prior, t.prior),
        prior_sigma=t.prior_std,
        n_clusterings=config.clustering.n_clusterings,
        schedule_power=config.clustering.power,
        align="exact" if t.align_init else None,
        head_groups=h.groups,
        num_workers=config.data.num_workers,
        amp=cuda,
        sync_batchnorm=bool(cuda and world_size > 1),
        seed=t.seed,
        checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir),
        checkpoint_every=1,
        show_progress=progress,
    )


def _rank_world(process_group: Any) -> tuple[int, int]:
    if process_group is None:
        return 0, 1
    import torch.distributed as dist

    return dist.get_rank(process_group), dist.get_world_size(process_group)


def _barrier(process_group: Any) -> None:
    if process_group is not None:
        import torch.distributed as dist

        dist.barrier(group=process_group)


def _make_trainer(
    config: VideoRecipeConfig,
    dataset: Dataset,
    *,
    checkpoint_dir: Path | None,
    device: str | torch.device,
    process_group: Any = None,
    ground_truth: np.ndarray | None = None,
    progress: bool = True,
) -> SelfLabelTrainer:
    _, world = _rank_world(process_group)
    tcfg = trainer_config(
        config,
        checkpoint_dir=checkpoint_dir,
        world_size=world,
        cuda=torch.device(device).type == "cuda",
        progress=progress,
    )
    return SelfLabelTrainer(
        build_encoders(config),
        dataset,
        tcfg,
        device=device,
        process_group=process_group,
        ground_truth=ground_truth,
    )


@dataclass
class _Loaded:
    config: VideoRecipeConfig
    paths: RunPaths
    videos: list[VideoInfo]
    trainer: SelfLabelTrainer


def _load_run(run: str | Path, device: str | torch.device, progress: bool) -> _Loaded:
    """A trained run: configuration, training manifest and the trainer at its checkpoint."""
    paths = RunPaths(Path(run))
    checkpoint = paths.require_checkpoint()
    config = load_preset(paths.config)
    if not paths.manifest.is_file():
        raise FileNotFoundError(f"{paths.manifest} is missing: the run folder is incomplete")
    videos = load_manifest(paths.manifest)
    dataset = IndexedClips(AVDataset(videos, config, train=True))
    trainer = _make_trainer(config, dataset, checkpoint_dir=None, device=device, progress=progress)
    trainer.load_checkpoint(checkpoint)
    return _Loaded(config, paths, videos, trainer)


def _eval_dataset(
    videos: Sequence[VideoInfo],
    config: VideoRecipeConfig,
    video_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> IndexedClips:
    return IndexedClips(AVDataset(list(videos), config, train=False), video_transform)


def _primary_head(trainer: SelfLabelTrainer) -> int:
    """The unsupervised head choice: the head that agrees most with the others
    (:func:`otcluster.metrics.select_head` on the training self-labels)."""
    if trainer.labels_ is None:
        return 0
    return select_head(trainer.labels_)


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------


def train(
    data: str | Path | None,
    out: str | Path,
    *,
    preset: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    process_group: Any = None,
    resume: bool = True,
    progress: bool = True,
) -> list[dict]:
    """Train SeLaVi on a folder of videos (or a manifest) into the run folder ``out``.

    If ``out`` already holds a checkpoint and ``resume`` is true, training continues from it,
    with the run's own manifest and configuration (``training.epochs`` may be raised to train
    longer; any other change is refused). A finished run returns at once.

    Parameters
    ----------
    data : str, Path or None
        Folder of videos, source CSV (``path``, ``label``) or manifest. May be ``None`` when
        resuming a run that has a manifest.
    out : str or Path
        Run folder.
    preset : str, Path or None
        Bundled preset name (``"cpu"``, ``"paper"``) or a TOML file. ``None``: the run's own
        ``config.toml`` when resuming, else ``"cpu"``.
    overrides : mapping, optional
        Dotted keys replacing preset values, e.g. ``{"training.epochs": 5}``.
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    process_group : torch.distributed ProcessGroup, optional
        Distributed training: every process calls this with the same arguments (the command
        line sets it up under ``torchrun``). The first rank writes the run folder.
    resume : bool
        Continue from ``out/checkpoints/last.pt`` when it exists.
    progress : bool
        Progress bars (first rank only).

    Returns
    -------
    list of dict
        The trainer's history (also written to ``out/history.jsonl``).
    """
    paths = RunPaths(Path(out))
    rank, world = _rank_world(process_group)
    resuming = resume and paths.checkpoint.is_file()
    if preset is None:
        preset = paths.config if resume and paths.config.is_file() else "cpu"
    config = load_preset(preset, overrides)
    if resuming:
        changes = _config_changes(load_preset(paths.config), config)
        if changes:
            raise ValueError(
                f"{paths.root} was trained with another configuration (differences in "
                f"{', '.join(changes)}); use a new --out folder, or resume without changing "
                f"these keys (only training.epochs may change)"
            )
    if rank == 0:
        paths.root.mkdir(parents=True, exist_ok=True)
        _write_atomic(paths.config, config_to_toml(config))
        if resuming and paths.manifest.is_file():
            if data is not None:
                logger.info("resuming %s: using its manifest, not %s", paths.root, data)
        elif data is None:
            raise ValueError("--data is required to start a run")
        else:
            manifest, report = _resolve_manifest(data, paths.manifest, config, progress)
            if report is not None:
                _print(f"prepare: {report.summary()}", quiet=not progress)
            elif manifest.resolve() != paths.manifest.resolve():
                _write_atomic(paths.manifest, manifest.read_text())
    _barrier(process_group)
    config = load_preset(paths.config)
    videos = load_manifest(paths.manifest)
    dataset = IndexedClips(AVDataset(videos, config, train=True))
    trainer = _make_trainer(
        config,
        dataset,
        checkpoint_dir=paths.checkpoints,
        device=device,
        process_group=process_group,
        ground_truth=_ground_truth(videos, None),
        progress=progress and rank == 0,
    )
    if resuming and rank == 0:
        _print(f"resuming from {paths.checkpoint}", quiet=not progress)
    history = trainer.fit(resume=resume)
    if rank == 0:
        _write_atomic(paths.history, "".join(json.dumps(h) + "\n" for h in history))
        if dataset.substituted:
            logger.warning(
                "%d videos failed to decode during training and were replaced by a neighbour",
                len(dataset.substituted),
            )
    return history


# --------------------------------------------------------------------------------------------
# label
# --------------------------------------------------------------------------------------------


def _other_manifest(
    paths: RunPaths, data: str | Path, config: VideoRecipeConfig, progress: bool, tag: str = ""
) -> tuple[list[VideoInfo], PrepareReport | None]:
    data = Path(data)
    name = (tag or data.stem or "data").replace(os.sep, "_")
    manifest, report = _resolve_manifest(data, paths.manifests / f"{name}.csv", config, progress)
    return load_manifest(manifest), report


def label(
    run: str | Path,
    data: str | Path | None = None,
    *,
    out_csv: str | Path | None = None,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    progress: bool = True,
) -> Path:
    """Label videos with a trained run: one CSV row per video.

    Videos need not have been seen in training: every video is labelled by the trained heads
    (:meth:`otcluster.SelfLabelTrainer.predict`: argmax of the mean of the video and audio
    log-probabilities), not by the transport problem.

    Parameters
    ----------
    run : str or Path
        Trained run folder.
    data : str, Path or None
        Folder, source CSV or manifest of the videos to label (default: the training videos).
    out_csv : str or Path, optional
        Output file (default ``RUN/labels.csv`` for the training videos, else
        ``RUN/labels_<data name>.csv``).
    device : str or torch.device
    batch_size : int, optional
        Inference batch size (default: the training batch size).
    progress : bool

    Returns
    -------
    Path
        The CSV, with columns ``path``, ``label`` and ``confidence`` (of the primary head: the
        unsupervised :func:`otcluster.metrics.select_head` choice), ``label_h<i>`` and
        ``confidence_h<i>`` for every head, ``given_label`` (the folder name or CSV label of
        the video, never used for training) and ``status`` (``ok`` or ``decode_failed``, with
        empty labels).
    """
    loaded = _load_run(run, device, progress)
    paths, config, trainer = loaded.paths, loaded.config, loaded.trainer
    if data is None:
        videos = loaded.videos
        default_out = paths.labels
    else:
        videos, report = _other_manifest(paths, data, config, progress)
        if report is not None:
            _print(f"prepare: {report.summary()}", quiet=not progress)
        default_out = paths.root / f"labels_{Path(data).stem or 'data'}.csv"
    out_csv = Path(out_csv) if out_csv is not None else default_out
    dataset = _eval_dataset(videos, config)
    labels, confidence = trainer.predict(dataset, batch_size=batch_size)
    primary = _primary_head(trainer)
    H = labels.shape[0]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["path", "label", "confidence"]
    for h in range(H):
        header += [f"label_h{h}", f"confidence_h{h}"]
    writer.writerow([*header, "given_label", "status"])
    for i, info in enumerate(videos):
        if i in dataset.substituted:
            writer.writerow([info.path, "", "", *([""] * (2 * H)), info.label, "decode_failed"])
            continue
        row = [info.path, int(labels[primary, i]), f"{float(confidence[primary, i]):.4f}"]
        for h in range(H):
            row += [int(labels[h, i]), f"{float(confidence[h, i]):.4f}"]
        writer.writerow([*row, info.label, "ok"])
    _write_atomic(out_csv, buffer.getvalue())
    n_bad = len(dataset.substituted)
    counts = torch.bincount(labels[primary], minlength=config.heads.n_clusters)
    _print(
        f"labelled {len(videos) - n_bad} videos ({n_bad} failed to decode) into "
        f"{int((counts > 0).sum())} clusters with head {primary}: {out_csv}",
        quiet=not progress,
    )
    return out_csv


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------


def _heads_log_probs(
    trainer: SelfLabelTrainer, features: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Log-probabilities (H, N, K) of each modality's heads applied to pooled features."""
    model = trainer.model
    was = model.training
    model.eval()
    out = {}
    try:
        with torch.no_grad():
            for m, z in features.items():
                head = model.heads[m]
                device = next(head.parameters()).device
                parts = [
                    torch.log_softmax(head(z[i : i + 4096].to(device)).float(), -1).cpu()
                    for i in range(0, z.shape[0], 4096)
                ]
                out[m] = torch.cat(parts, 1)
    finally:
        model.train(was)
    return out


def _random_init_features(
    config: VideoRecipeConfig,
    dataset: Dataset,
    *,
    device: str | torch.device,
    batch_size: int,
    progress: bool,
    calibration_samples: int = 512,
) -> dict[str, torch.Tensor]:
    """Pooled features of the randomly initialised encoders (the trained model's own init).

    Batch-norm statistics are first recomputed on up to ``calibration_samples`` clips (a
    forward pass in training mode, no gradient): with the initial running statistics (mean 0,
    variance 1) the activations of an untrained network are not normalised, which would make
    the random baseline needlessly weak.
    """
    encoders = {m: e.to(device) for m, e in build_encoders(config).items()}
    n = len(dataset)
    loader_kw = dict(batch_size=batch_size, num_workers=config.data.num_workers)
    calib = torch.utils.data.Subset(dataset, range(min(n, calibration_samples)))
    for enc in encoders.values():
        for mod in enc.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.reset_running_stats()
                mod.momentum = None  # cumulative average over the calibration pass
        enc.train()
    feats: dict[str, list[torch.Tensor]] = {m: [] for m in encoders}
    with torch.no_grad():
        for batch in tqdm(
            DataLoader(calib, **loader_kw),
            desc="random init: batch-norm stats",
            disable=not progress,
            leave=False,
        ):
            for m, enc in encoders.items():
                if batch[m].shape[0] > 1:
                    enc(batch[m].to(device))
        for enc in encoders.values():
            enc.eval()
        for batch in tqdm(
            DataLoader(dataset, **loader_kw),
            desc="random init: features",
            disable=not progress,
            leave=False,
        ):
            for m, enc in encoders.items():
                feats[m].append(enc(batch[m].to(device)).float().cpu())
    return {m: torch.cat(v) for m, v in feats.items()}


def _l2(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=1)


def _kmeans_labelings(
    name: str, features: Mapping[str, torch.Tensor], k: int, seed: int
) -> list[tuple[str, bool, bool, None, np.ndarray]]:
    """k-means (faiss when available) on L2-normalised pooled features: video, audio, both."""
    both = torch.cat([_l2(features["video"]), _l2(features["audio"])], 1)
    out = []
    for (v, a), x in (
        ((True, False), _l2(features["video"])),
        ((False, True), _l2(features["audio"])),
        ((True, True), both),
    ):
        out.append((name, v, a, None, kmeans_baseline(x, k, seed=seed).labels.numpy()))
    return out


def _head_note(head: int, primary: int) -> str:
    notes = (["paper"] if head == 0 else []) + (["selected"] if head == primary else [])
    return ", ".join(notes)


def _head_labelings(
    name: str, labs: Mapping[str, torch.Tensor], head: int, keep: np.ndarray
) -> list[tuple[str, bool, bool, int, np.ndarray]]:
    return [
        (name, True, False, head, labs["video"][head].numpy()[keep]),
        (name, False, True, head, labs["audio"][head].numpy()[keep]),
        (name, True, True, head, labs["both"][head].numpy()[keep]),
    ]


def evaluate(
    run: str | Path,
    *,
    data: str | Path | None = None,
    truth: str | Path | None = None,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a trained run against ground truth, in the layout of the paper's tables 2 and 5.

    For the video stream alone, the audio stream alone and both (mean log-probabilities,
    eq. 6) the trained heads' labels are scored next to k-means (k = number of classes, faiss)
    on the same encoders' L2-normalised pooled features, and on the features of the same
    architecture at its random initialisation (same seed). On the training videos the
    self-labels of the last clustering (optimal transport, both streams) are scored too.
    Head 0 (the paper's choice) and the head chosen without ground truth
    (:func:`otcluster.metrics.select_head`) are reported; heads are never picked by ground truth.

    Parameters
    ----------
    run : str or Path
        Trained run folder.
    data : str, Path or None
        Videos to evaluate (default: the training videos, as in the paper).
    truth : str or Path, optional
        CSV with ``path`` and ``label`` columns; default: the labels of the manifest (folder
        names or the source CSV's ``label`` column).
    device : str or torch.device
    batch_size : int, optional
    progress : bool

    Returns
    -------
    dict
        ``rows`` (list of dicts, see :class:`EvalRow`), ``table`` (text), ``heads``
        (``paper``: 0, ``selected``), counts; also written to ``RUN/evaluation.json`` and
        ``RUN/evaluation.txt``. Without ground truth, only cluster statistics.
    """
    t0 = time.perf_counter()
    loaded = _load_run(run, device, progress)
    paths, config, trainer = loaded.paths, loaded.config, loaded.trainer
    on_training_data = data is None
    videos = loaded.videos if on_training_data else _other_manifest(paths, data, config, progress)[0]
    dataset = _eval_dataset(videos, config)
    bs = batch_size or config.training.batch_size
    features = trainer.extract(dataset, batch_size=bs)
    log_probs = _heads_log_probs(trainer, features)
    labs = modality_labels(log_probs)
    if on_training_data and trainer.labels_ is not None:
        labs["self"] = trainer.labels_.cpu()
    primary = _primary_head(trainer)
    y = _ground_truth(videos, truth)
    result: dict[str, Any] = {
        "run": str(paths.root),
        "n_videos": len(videos),
        "decode_failed": sorted(dataset.substituted),
        "heads": {"paper": 0, "selected": primary, "n_heads": int(labs["both"].shape[0])},
        "n_clusters": config.heads.n_clusters,
    }
    if y is None:
        sizes = torch.bincount(labs["both"][primary], minlength=config.heads.n_clusters)
        result.update(ground_truth=False, cluster_sizes=sizes.tolist())
        result["table"] = (
            f"no ground truth (need labels of at least two classes): {len(videos)} videos in "
            f"{int((sizes > 0).sum())} non-empty clusters with head {primary}"
        )
        _write_atomic(paths.root / "evaluation.json", json.dumps(result, indent=2))
        _write_atomic(paths.root / "evaluation.txt", result["table"] + "\n")
        return result
    keep = (y >= 0) & ~np.isin(np.arange(len(videos)), list(dataset.substituted))
    yk = y[keep]
    k = int(len(np.unique(yk)))
    seed = config.training.seed
    random_feats = _random_init_features(config, dataset, device=device, batch_size=bs, progress=progress)
    labelings: list[tuple[str, bool, bool, int | None, Any]] = []
    labelings += [
        (n, v, a, h, lab[keep])
        for n, v, a, h, lab in _kmeans_labelings("k-means, random init", random_feats, k, seed)
    ]
    labelings += [
        (n, v, a, h, lab[keep])
        for n, v, a, h, lab in _kmeans_labelings("k-means, SeLaVi features", features, k, seed)
    ]
    heads = [0] if primary == 0 else [0, primary]
    for h in heads:
        labelings += _head_labelings("SeLaVi heads", labs, h, keep)
        if "self" in labs:
            labelings.append(("SeLaVi self-labels (OT)", True, True, h, labs["self"][h].numpy()[keep]))
    rows = score_labelings(yk, labelings)
    rows = [r if r.head is None else replace(r, note=_head_note(r.head, primary)) for r in rows]
    title = (
        f"{paths.root}: {int(keep.sum())} videos, {k} classes, K = {config.heads.n_clusters} "
        f"clusters; head 0 (paper) and head {primary} (selected without labels)"
    )
    table = format_table(rows, title=title)
    result.update(
        ground_truth=True,
        n_scored=int(keep.sum()),
        n_classes=k,
        rows=[r.to_dict() for r in rows],
        table=table,
        seconds=time.perf_counter() - t0,
    )
    _write_atomic(paths.root / "evaluation.json", json.dumps(result, indent=2))
    _write_atomic(paths.root / "evaluation.txt", table + "\n")
    return result


# --------------------------------------------------------------------------------------------
# degraded video (paper fig. 2)
# --------------------------------------------------------------------------------------------


class _Degrade:
    """Picklable ``degrade_frames`` with a fixed factor."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        return degrade_frames(video, self.factor)


def degrade(
    run: str | Path,
    *,
    factors: Sequence[int] = (1, 4, 8, 16),
    truth: str | Path | None = None,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Scores when the video frames are degraded (paper fig. 2): nearest-neighbour down- then
    up-sampling by each factor, audio untouched.

    For every factor, the labels of the video heads alone and of both streams (mean
    log-probabilities) are scored for head 0 and the unsupervised head choice, next to k-means
    on the SeLaVi video features of the degraded clips. Writes ``RUN/degrade.json`` and a plot
    of NMI against the factor, ``RUN/degrade.png``.

    Parameters
    ----------
    run : str or Path
    factors : sequence of int
        Down-sampling factors (1 = clean).
    truth : str or Path, optional
        Ground-truth CSV (default: the manifest labels).
    device, batch_size, progress
        As for :func:`evaluate`.

    Returns
    -------
    dict
        ``factors``, ``rows`` (one list of row dicts per factor), ``png``.
    """
    loaded = _load_run(run, device, progress)
    paths, config, trainer = loaded.paths, loaded.config, loaded.trainer
    y = _ground_truth(loaded.videos, truth)
    if y is None:
        raise ValueError(
            f"{paths.root}: the degraded-video experiment needs ground truth (folder names or "
            f"--truth CSV with at least two classes)"
        )
    primary = _primary_head(trainer)
    heads = [0] if primary == 0 else [0, primary]
    bs = batch_size or config.training.batch_size
    per_factor: dict[int, list[dict[str, Any]]] = {}
    for f in factors:
        dataset = _eval_dataset(loaded.videos, config, _Degrade(int(f)))
        features = trainer.extract(dataset, batch_size=bs)
        labs = modality_labels(_heads_log_probs(trainer, features))
        keep = (y >= 0) & ~np.isin(np.arange(len(y)), list(dataset.substituted))
        k = int(len(np.unique(y[keep])))
        km = kmeans_baseline(_l2(features["video"]), k, seed=config.training.seed).labels.numpy()
        labelings: list[tuple[str, bool, bool, int | None, Any]] = [
            ("k-means, SeLaVi features", True, False, None, km[keep])
        ]
        for h in heads:
            labelings += [
                ("SeLaVi heads", True, False, h, labs["video"][h].numpy()[keep]),
                ("SeLaVi heads", True, True, h, labs["both"][h].numpy()[keep]),
            ]
        rows = score_labelings(y[keep], labelings, note=f"factor {f}")
        per_factor[int(f)] = [r.to_dict() for r in rows]
        if progress:
            print(format_table(rows, title=f"video degraded by factor {f}"), flush=True)
    png = paths.root / "degrade.png"
    _plot_degrade(per_factor, png, heads)
    result = {
        "run": str(paths.root),
        "factors": [int(f) for f in factors],
        "heads": {"paper": 0, "selected": primary},
        "rows": {str(f): rows for f, rows in per_factor.items()},
        "png": str(png),
    }
    _write_atomic(paths.root / "degrade.json", json.dumps(result, indent=2))
    return result


def _plot_degrade(per_factor: Mapping[int, list[dict[str, Any]]], png: Path, heads: Sequence[int]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    factors = sorted(per_factor)
    series: dict[str, list[float]] = {}
    for f in factors:
        for r in per_factor[f]:
            head = "" if r["head"] is None else f", head {r['head']}"
            series.setdefault(f"{r['method']} ({r['streams']}{head})", []).append(100 * r["nmi"])
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=100)
    for name, values in series.items():
        style = "--" if name.startswith("k-means") else "-"
        ax.plot(range(len(factors)), values, style, marker="o", label=name)
    ax.set_xticks(range(len(factors)), [str(f) for f in factors])
    ax.set_xlabel("video down-sampling factor")
    ax.set_ylabel("NMI (%)")
    ax.set_title("Degraded video stream (audio intact)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# retrieval (paper table 4)
# --------------------------------------------------------------------------------------------


def _split_sources(split_csv: Path, out_dir: Path) -> tuple[Path, Path]:
    """Write ``train.csv`` and ``test.csv`` (path, label) from a CSV with a ``split`` column."""
    with split_csv.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if "path" not in columns or "split" not in columns:
            raise ValueError(f"{split_csv}: need columns 'path' and 'split', got {columns}")
        rows = list(reader)
    base = split_csv.resolve().parent
    out = {}
    for split in ("train", "test"):
        chosen = [r for r in rows if r["split"].strip().lower() == split]
        if not chosen:
            raise ValueError(f"{split_csv}: no row has split == {split!r}")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "label"])
        writer.writerows((str((base / r["path"]).resolve()), r.get("label") or "") for r in chosen)
        out[split] = _write_atomic(out_dir / f"split_{split}_source.csv", buffer.getvalue())
    return out["train"], out["test"]


def _clip_features(
    trainer: SelfLabelTrainer,
    videos: Sequence[VideoInfo],
    config: VideoRecipeConfig,
    n_clips: int,
    batch_size: int,
) -> torch.Tensor:
    """Video features averaged over ``n_clips`` evenly spaced clips of every video."""
    total = None
    positions = [0.5] if n_clips == 1 else np.linspace(0.0, 1.0, n_clips).tolist()
    for p in positions:
        ds = IndexedClips(AVDataset(list(videos), config, train=False, position=p))
        z = trainer.extract(ds, modalities=["video"], batch_size=batch_size)["video"]
        total = z if total is None else total + z
    assert total is not None
    return total / len(positions)


def retrieval(
    run: str | Path,
    *,
    train_split: str | Path | None = None,
    test_split: str | Path | None = None,
    split_csv: str | Path | None = None,
    n_clips: int = 10,
    ks: Sequence[int] = (1, 5, 20),
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Video retrieval with the trained visual encoder (paper table 4).

    Each video's feature is the mean of the pooled visual features of ``n_clips`` evenly spaced
    clips; each test video retrieves its nearest training videos by cosine similarity (faiss,
    exact), and counts as found at ``k`` when one of the ``k`` has its class.

    Parameters
    ----------
    run : str or Path
    train_split, test_split : str or Path, optional
        Folders, source CSVs (``path``, ``label``) or manifests of the two splits.
    split_csv : str or Path, optional
        Instead of the two splits: one CSV with columns ``path``, ``label`` and ``split``
        (``train`` or ``test``).
    n_clips : int
        Clips averaged per video (paper: 10).
    ks : sequence of int
        Recall levels (paper: 1, 5, 20).
    device, batch_size, progress
        As for :func:`evaluate`.

    Returns
    -------
    dict
        ``recall`` ({k: value}), counts; also written to ``RUN/retrieval.json``.
    """
    if n_clips < 1:
        raise ValueError(f"n_clips must be >= 1, got {n_clips}")
    if split_csv is not None:
        if train_split is not None or test_split is not None:
            raise ValueError("give either split_csv or train_split and test_split, not both")
    elif train_split is None or test_split is None:
        raise ValueError("retrieval needs --train-split and --test-split, or --split-csv")
    loaded = _load_run(run, device, progress)
    paths, config, trainer = loaded.paths, loaded.config, loaded.trainer
    if split_csv is not None:
        train_split, test_split = _split_sources(Path(split_csv), paths.manifests)
    assert train_split is not None and test_split is not None
    train_videos, _ = _other_manifest(paths, train_split, config, progress, "retrieval_train")
    test_videos, _ = _other_manifest(paths, test_split, config, progress, "retrieval_test")
    names = sorted({v.label for v in [*train_videos, *test_videos] if v.label})
    if not names:
        raise ValueError("retrieval needs class labels (folder names or a 'label' column)")
    ids = {n: i for i, n in enumerate(names)}
    y_train = np.array([ids.get(v.label, -1) for v in train_videos])
    y_test = np.array([ids.get(v.label, -2) for v in test_videos])  # -2 never matches
    bs = batch_size or config.training.batch_size
    z_train = _clip_features(trainer, train_videos, config, n_clips, bs)
    z_test = _clip_features(trainer, test_videos, config, n_clips, bs)
    keep = y_test >= 0
    recall = retrieval_recall(z_train, y_train, z_test[torch.from_numpy(keep)], y_test[keep], ks)
    result = {
        "run": str(paths.root),
        "n_train": len(train_videos),
        "n_test": int(keep.sum()),
        "n_clips": n_clips,
        "recall": {str(k): v for k, v in recall.items()},
    }
    _write_atomic(paths.root / "retrieval.json", json.dumps(result, indent=2))
    _print(
        "retrieval: " + ", ".join(f"R@{k} = {100 * v:.1f}%" for k, v in recall.items()),
        quiet=not progress,
    )
    return result


# --------------------------------------------------------------------------------------------
# explore
# --------------------------------------------------------------------------------------------


def explore(
    run: str | Path,
    *,
    labels_csv: str | Path | None = None,
    head: int | None = None,
    out_html: str | Path | None = None,
    max_members: int = 12,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Path:
    """Write the HTML cluster explorer of a run (``RUN/explorer.html``).

    Parameters
    ----------
    run : str or Path
    labels_csv : str or Path, optional
        Output of :func:`label` (default ``RUN/labels.csv``, written first if missing).
    head : int, optional
        Head whose clusters are shown (default: the ``label`` column, the unsupervised choice).
    out_html : str or Path, optional
        Default ``RUN/explorer.html``.
    max_members : int
        Members shown per cluster.
    device, progress
        As for :func:`label` (used only when the labels must be computed first).

    Returns
    -------
    Path
        The page.
    """
    from .explore import write_explorer

    paths = RunPaths(Path(run))
    if labels_csv is None:
        labels_csv = paths.labels
        if not labels_csv.is_file():
            label(run, device=device, progress=progress)
    labels_csv = Path(labels_csv)
    if not labels_csv.is_file():
        raise FileNotFoundError(f"no labels at {labels_csv}: run `otcluster-video label` first")
    column = "label" if head is None else f"label_h{head}"
    with labels_csv.open(newline="") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise ValueError(f"{labels_csv} has no column {column!r} (columns: {reader.fieldnames})")
        rows = [r for r in reader if r.get("status", "ok") == "ok"]
    items = [(r["path"], f"cluster {r[column]}") for r in rows]
    truth = {r["path"]: r["given_label"] for r in rows if r.get("given_label")}
    which = "the selected head" if head is None else f"head {head}"
    page = write_explorer(
        Path(out_html) if out_html is not None else paths.root / "explorer.html",
        items,
        title=f"SeLaVi clusters of {paths.root.name} ({which})",
        truth=truth or None,
        max_members=max_members,
        progress=progress,
    )
    _print(f"explorer: {page}", quiet=not progress)
    return page
