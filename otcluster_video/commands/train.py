"""``otcluster-video train``: SeLaVi on a folder of videos (or a manifest) into a run folder.

The recipe's part is small: write ``config.toml`` and the manifest, build the dataset and the
encoders, and hand them to :class:`otcluster.SelfLabelTrainer`, whose ``fit`` does the rest
(alignment, clusterings with :class:`otcluster.SinkhornLabeler`, SGD epochs, checkpoints).
Every record of the trainer (alignment, each clustering, each epoch) goes to ``train.log`` and
is appended to ``history.jsonl`` as it happens.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from otcluster import ConvergenceWarning, SelfLabelTrainer
from otcluster._checkpoint import load_checkpoint
from otcluster._threads import limit_threads

from .._adapt import SourceFormat, adapt_to_source
from .._build import build_encoders, kernel_scope, trainer_config
from .._config import VideoRecipeConfig
from .._preset import load_preset
from .._probe import VideoInfo, load_manifest
from .._run import (
    ConfigChangedError,
    RunPaths,
    barrier,
    config_changes,
    ground_truth,
    rank_world,
    resolve_manifest,
    save_run_config,
    write_text,
)
from ..dataset import AVDataset
from . import _inference

__all__ = ["train"]

logger = logging.getLogger("otcluster_video")


def _describe(record: Mapping[str, Any]) -> str:
    """One log line for a trainer record."""
    r, event = record, record.get("event", "?")
    if event == "epoch":
        lrs = r.get("lr_per_modality") or {}
        lr = ", ".join(f"{m} {v:.4g}" for m, v in lrs.items()) or f"{r['lr']:.4g}"
        return f"epoch {r['epoch']}: loss {r['loss']:.4f}, lr {lr}"
    if event == "clustering":
        parts = [f"clustering {r.get('clustering', '?')} at step {r.get('step', '?')}"]
        if "min_size" in r:
            parts.append(f"cluster sizes {r['min_size']}-{r['max_size']}")
        if isinstance(r.get("changed"), float):
            parts.append(f"{100 * r['changed']:.1f}% of labels changed")
        if "n_iter" in r:
            parts.append(f"{r['n_iter']} solver passes" + ("" if r.get("converged", True)
                                                           else " (not converged)"))
        if "seconds" in r:
            parts.append(f"{r['seconds']:.1f} s")
        if isinstance(r.get("modality_weights"), dict):
            parts.append("stream weights " + ", ".join(
                f"{m} {w:.2f}" for m, w in r["modality_weights"].items()))
        if isinstance(r.get("vetoed"), dict):
            parts.append("clips labelled without " + ", ".join(
                f"{m} {100 * v:.1f}%" for m, v in r["vetoed"].items()))
        if "nmi" in r:
            parts.append(f"NMI to the folder names (head 0) {100 * r['nmi']:.1f}")
        return ", ".join(parts)
    return f"{event}: " + json.dumps({k: v for k, v in r.items() if k != "event"})[:300]


def _unconverged_summary(history: Sequence[Mapping[str, Any]], config: VideoRecipeConfig
                        ) -> str | None:
    """A warning line when some clusterings of ``history`` stopped at the solver's pass cap
    short of its tolerance (their cluster sizes are off the prior), else None."""
    clusterings = [h for h in history if h.get("event") == "clustering" and "converged" in h]
    short = [h for h in clusterings if not h["converged"]]
    if not short:
        return None
    c = config.clustering
    which = ", ".join(str(h.get("clustering", "?")) for h in short[:10])
    more = f" and {len(short) - 10} more" if len(short) > 10 else ""
    return (f"{len(short)} of {len(clusterings)} clusterings ({which}{more}) stopped at "
            f"clustering.sinkhorn_max_iter = {c.sinkhorn_max_iter} passes short of "
            f"clustering.sinkhorn_tol = {c.sinkhorn_tol:g}: their cluster sizes are off the prior; "
            f"raise clustering.sinkhorn_max_iter to let them converge (docs/video.md)")


class _History:
    """Appends each trainer record to ``history.jsonl`` (flushed) and logs it, as it happens."""

    def __init__(self, path: Path, earlier: list[dict]) -> None:
        self.path = path
        # the history of the checkpoint resumed from: drops records of an epoch that was lost
        write_text(path, "".join(json.dumps(r) + "\n" for r in earlier))
        self.n_written = len(earlier)

    def __call__(self, record: Mapping[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(dict(record)) + "\n")
        self.n_written += 1
        logger.info("%s", _describe(record))


def _resumed_history(paths: RunPaths) -> list[dict]:
    if not paths.has_checkpoint():
        return []
    state = load_checkpoint(paths.checkpoint, fallback=paths.previous_checkpoint)
    return list(state.get("history", []))


def _start_log(paths: RunPaths) -> tuple[logging.Handler, int]:
    handler = logging.FileHandler(paths.log, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler, level


def _adapted(config: VideoRecipeConfig, videos: list[VideoInfo],
             fixed: Any) -> tuple[VideoRecipeConfig, list[str]]:
    """The configuration fitted to the run's videos (:func:`adapt_to_source`) and what
    changed; the same on every rank (it depends on the manifest only)."""
    if not videos:
        return config, []
    return adapt_to_source(config, SourceFormat.of(videos), fixed)


def _prepare_run(paths: RunPaths, data: Any, config: VideoRecipeConfig, resuming: bool,
                 progress: bool, fixed: Any = ()
                 ) -> tuple[VideoRecipeConfig, list[str], list[VideoInfo] | None]:
    """First rank: the run folder's manifest, then its configuration, fitted to the videos
    (``config.toml`` marks a folder where training started: ``prepare`` then refuses to replace
    the manifest). Returns the configuration, what adapting changed, and the manifest's videos
    when it read them (a new run)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    if resuming and paths.manifest.is_file():
        if data is not None:
            logger.warning("resuming %s: training goes on with the videos of its manifest, "
                           "not %s (use a new --out to train on other videos)", paths.root, data)
    elif data is None:
        raise ValueError("--data is required to start a run")
    else:
        manifest, report = resolve_manifest(data, paths.manifest, config, progress)
        if report is not None:
            if progress:
                print(f"prepare: {report.summary()}", flush=True)
        elif manifest.resolve() != paths.manifest.resolve():
            write_text(paths.manifest, manifest.read_text())
    adapted: list[str] = []
    videos = None
    if not resuming:
        videos = load_manifest(paths.manifest)
        config, adapted = _adapted(config, videos, fixed)
    save_run_config(paths, config)
    return config, adapted, videos


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
        The trainer's history (also in ``out/history.jsonl``, appended as training goes, and
        one line per record in ``out/train.log``).
    """
    paths = RunPaths(Path(out))
    rank, world = rank_world(process_group)
    resuming = resume and paths.has_checkpoint()
    if preset is None:
        preset = paths.config if resume and paths.config.is_file() else "cpu"
    config = load_preset(preset, overrides)
    fixed = set(overrides or ())
    videos = None  # the manifest, read once per process
    if resuming:
        if paths.manifest.is_file():
            videos = load_manifest(paths.manifest)
            config = _adapted(config, videos, fixed)[0]
        changes = config_changes(load_preset(paths.config), config)
        if changes:
            raise ConfigChangedError(paths.root, changes)
    handler = None
    try:
        if rank == 0:
            config, adapted, read = _prepare_run(paths, data, config, resuming, progress, fixed)
            videos = read if read is not None else videos
            handler, level = _start_log(paths)
            for line in adapted:
                logger.warning("adapted to the videos: %s", line)
                if progress:
                    print(f"adapted to the videos: {line}", flush=True)
        barrier(process_group)
        if videos is None:
            videos = load_manifest(paths.manifest)
        if rank != 0 and not resuming:
            config = _adapted(config, videos, fixed)[0]
        with kernel_scope(config):
            return _fit(paths, videos, config, device, process_group, resume, resuming,
                        progress and rank == 0)
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
            logger.setLevel(level)


def _keeping_content(config: VideoRecipeConfig) -> VideoRecipeConfig:
    """``config`` without the augmentations that destroy a clip's content (``audio.noise``,
    ``visual.degrade``): the ``"stability"`` weights measure how a stream's clusters hold under
    nuisances (crop, flip, gain, pitch), not whether a buried signal survives."""
    return dataclasses.replace(config, audio=dataclasses.replace(config.audio, noise=0.0),
                               visual=dataclasses.replace(config.visual, degrade=0.0))


def _fit(paths: RunPaths, videos: list[VideoInfo], config: VideoRecipeConfig, device: Any,
         process_group: Any, resume: bool, resuming: bool, progress: bool) -> list[dict]:
    rank, world = rank_world(process_group)
    dataset = AVDataset(videos, config, train=True)
    at = config.clustering.stability_position  # the two clips of "stability" at one moment
    stability = None if at is None or config.clustering.modality_weights != "stability" \
        else AVDataset(videos, _keeping_content(config), train=True, position=at)
    tcfg = trainer_config(
        config,
        checkpoint_dir=paths.checkpoints,
        world_size=world,
        cuda=torch.device(device).type == "cuda",
        progress=progress,
    )
    trainer = SelfLabelTrainer(
        build_encoders(config),
        dataset,
        tcfg,
        device=device,
        process_group=process_group,
        ground_truth=ground_truth(videos, None),
        stability_dataset=stability,
    )
    if resuming and progress:
        print(f"resuming from {paths.checkpoint}", flush=True)
    logger.info("%s %s: %d videos, device %s, %d process(es)",
                "resuming" if resuming else "training", paths.root, len(videos), device, world)
    history_file = None
    if rank == 0:
        history_file = _History(paths.history, _resumed_history(paths) if resuming else [])
    threads = config.training.threads or torch.get_num_threads()
    # a clustering that stops at the pass cap is in its history record and train.log, and the
    # run ends with one warning that counts them: not one solver warning per head and clustering
    with limit_threads(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if "on_record" in inspect.signature(trainer.fit).parameters:
            history = trainer.fit(resume=resume, on_record=history_file)
        else:  # an otcluster without the callback: the whole history at the end
            history = trainer.fit(resume=resume)
            if history_file is not None:
                for record in history[history_file.n_written :]:
                    history_file(record)
    if rank == 0:
        write_text(paths.history, "".join(json.dumps(h) + "\n" for h in history))
        short = _unconverged_summary(history, config)
        if short is not None:  # a warning: train.log and stderr (--quiet keeps warnings)
            logger.warning("%s", short)
        if dataset.decode_failures:
            logger.warning(
                "%d videos failed to decode during training; a neighbour's clip stood in",
                len(dataset.decode_failures),
            )
        if config.heads.overcluster > 1:  # merge now (RUN/merge.json), not at the first label
            groups = _inference.load_run(paths.root, device).groups
            logger.info("merged each head's %d clusters into %d groups (head 0: %s clusters "
                        "per group)", groups.shape[1], config.heads.n_clusters,
                        torch.bincount(groups[0], minlength=config.heads.n_clusters).tolist())
    return history


def cli(args: argparse.Namespace) -> None:
    from ..cli import init_distributed, overrides

    group, device = init_distributed(args.device)
    rank = 0
    if group is not None:
        import torch.distributed as dist

        rank = dist.get_rank()
    t0 = time.perf_counter()
    try:
        history = train(
            args.data,
            args.out,
            preset=args.preset,
            overrides=overrides(args),
            device=device,
            process_group=group,
            resume=not args.no_resume,
            progress=not args.quiet and rank == 0,
        )
    finally:
        if group is not None:
            import torch.distributed as dist

            dist.destroy_process_group()
    if rank == 0:
        clusterings = [h for h in history if h.get("event") == "clustering"]
        epochs = [h for h in history if h.get("event") == "epoch"]
        last = clusterings[-1] if clusterings else {}
        msg = (
            f"trained {len(epochs)} epochs, {len(clusterings)} clusterings in "
            f"{time.perf_counter() - t0:.0f} s (this call)"
        )
        if epochs:
            msg += f"; last loss {epochs[-1]['loss']:.3f}"
        if "nmi" in last:
            msg += f"; last clustering NMI to the folder labels (head 0) {100 * last['nmi']:.1f}"
        print(msg)
        print(f"run folder: {args.out} (checkpoint: {RunPaths(Path(args.out)).checkpoint})")
