"""``otcluster-video``: label unlabelled videos with SeLaVi from the command line.

Commands: ``synth``, ``prepare``, ``train``, ``label``, ``evaluate``, ``explore``, ``degrade``,
``retrieval``. Configuration comes from a preset TOML (``--preset cpu|paper|FILE.toml``) plus a
few overrides (``--epochs``, ``--set key=value``). ``train`` runs on one process or, under
``torchrun``, on many: this module is the only place that reads ``LOCAL_RANK`` / ``WORLD_SIZE``
and initialises ``torch.distributed``; the process group is passed on explicitly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

logger = logging.getLogger("otcluster_video")

try:  # TOML values for --set key=value
    import tomllib as _toml
except ModuleNotFoundError:  # Python 3.10
    import tomli as _toml  # type: ignore[no-redef]


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``["training.lr=0.1", "heads.n_clusters=8"]`` -> dotted overrides (values as TOML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--set needs KEY=VALUE (e.g. training.lr=0.05), got {item!r}")
        try:
            value = _toml.loads(f"v = {text.strip()}")["v"]
        except _toml.TOMLDecodeError:
            value = text.strip()  # a bare word: a string
        out[key.strip()] = value
    return out


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    over = _parse_set(getattr(args, "set", None) or [])
    if getattr(args, "epochs", None) is not None:
        over["training.epochs"] = args.epochs
    return over


def _device(name: str, local_rank: int | None = None) -> str:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CliError(f"--device {name}: CUDA is not available on this machine")
        if local_rank is not None and name == "cuda":
            return f"cuda:{local_rank}"
    return name


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------


def _cmd_synth(args: argparse.Namespace) -> None:
    from .synth import make_synthetic_dataset

    t0 = time.perf_counter()
    csv_path = make_synthetic_dataset(
        args.out,
        n_videos=args.n_videos,
        n_classes=args.classes,
        seconds=args.seconds,
        size=args.size,
        degrade_fraction=args.degrade_fraction,
        broken=args.broken,
        seed=args.seed,
    )
    print(
        f"wrote {args.n_videos} videos of {args.classes} classes (+{args.broken} broken files) "
        f"to {args.out} in {time.perf_counter() - t0:.1f} s; ground truth: {csv_path}"
    )


def _cmd_prepare(args: argparse.Namespace) -> None:
    from . import recipe

    out = Path(args.out) if args.out else Path("runs") / Path(args.data).resolve().name
    report = recipe.prepare(
        args.data, out, preset=args.preset, overrides=_overrides(args), progress=not args.quiet
    )
    print(f"prepare: {report.summary()}")
    for reason, count in sorted(report.counts.items()):
        print(f"  skipped {count:5d}  {reason}")
    print(f"manifest: {report.manifest}\nskipped files: {report.skipped_report}")


def _init_distributed(device: str) -> tuple[Any, str]:
    """Under torchrun (``WORLD_SIZE`` > 1): initialise the default process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None, _device(device)
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device(device, local_rank)
    if dev.startswith("cuda"):
        torch.cuda.set_device(torch.device(dev))
    backend = "nccl" if dev.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return dist.group.WORLD, dev


def _cmd_train(args: argparse.Namespace) -> None:
    from . import recipe

    group, device = _init_distributed(args.device)
    rank = 0
    if group is not None:
        import torch.distributed as dist

        rank = dist.get_rank()
    handler = None
    if rank == 0:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(Path(args.out) / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler.setLevel(logging.INFO)
        logging.getLogger().addHandler(handler)
        logger.setLevel(logging.INFO)
    t0 = time.perf_counter()
    try:
        history = recipe.train(
            args.data,
            args.out,
            preset=args.preset,
            overrides=_overrides(args),
            device=device,
            process_group=group,
            resume=not args.no_resume,
            progress=not args.quiet and rank == 0,
        )
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
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
        print(f"run folder: {args.out} (checkpoint: {Path(args.out) / 'checkpoints' / 'last.pt'})")


def _cmd_label(args: argparse.Namespace) -> None:
    from . import recipe

    recipe.label(
        args.run,
        args.data,
        out_csv=args.out,
        device=_device(args.device),
        batch_size=args.batch_size,
        progress=not args.quiet,
    )


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from . import recipe

    result = recipe.evaluate(
        args.run,
        data=args.data,
        truth=args.truth,
        device=_device(args.device),
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    print(result["table"])
    print(f"written: {Path(args.run) / 'evaluation.json'}")


def _cmd_explore(args: argparse.Namespace) -> None:
    from . import recipe

    page = recipe.explore(
        args.run,
        labels_csv=args.labels,
        head=args.head,
        max_members=args.max_members,
        device=_device(args.device),
        progress=not args.quiet,
    )
    if args.quiet:
        print(page)


def _cmd_degrade(args: argparse.Namespace) -> None:
    from . import recipe

    result = recipe.degrade(
        args.run,
        factors=args.factors,
        truth=args.truth,
        device=_device(args.device),
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    print(f"written: {result['png']} and {Path(args.run) / 'degrade.json'}")


def _cmd_retrieval(args: argparse.Namespace) -> None:
    from . import recipe

    result = recipe.retrieval(
        args.run,
        train_split=args.train_split,
        test_split=args.test_split,
        split_csv=args.split_csv,
        n_clips=args.clips,
        ks=args.ks,
        device=_device(args.device),
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    print(json.dumps(result["recall"]))


# --------------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, *, device: bool = True) -> None:
    if device:
        p.add_argument(
            "--device",
            default="auto",
            help="cpu, cuda, cuda:N or auto (default: cuda when available)",
        )
    p.add_argument("--quiet", action="store_true", help="no progress bars or chatter")


def _run_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, metavar="RUN", help="run folder written by train")


def _batch(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="inference batch size (default: the training batch size)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``otcluster-video`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="otcluster-video",
        description="Label unlabelled videos from scratch with multi-modal self-supervision "
        "(SeLaVi). See docs/video.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "synth",
        help="write a synthetic audio-visual dataset of MP4 files",
        description="Write labelled synthetic MP4 videos (class folders) whose "
        "class shows in both the frames and the sound.",
    )
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--n-videos", type=int, default=240, help="valid videos (default 240)")
    p.add_argument("--classes", type=int, default=6, help="classes, at most 10 (default 6)")
    p.add_argument("--broken", type=int, default=0, help="extra broken files (default 0)")
    p.add_argument("--seconds", type=float, default=2.0, help="clip length (default 2)")
    p.add_argument("--size", type=int, default=64, help="frame size in pixels (default 64)")
    p.add_argument(
        "--degrade-fraction",
        type=float,
        default=0.25,
        help="fraction of videos with a degraded video stream, and again with a "
        "degraded audio stream (default 0.25)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser(
        "prepare",
        help="probe videos, write a manifest and a skipped-files report",
        description="Probe every video once; write RUN/manifest.csv (usable "
        "videos) and RUN/manifest.skipped.csv (with reasons).",
    )
    p.add_argument("data", metavar="DIR", help="folder of videos (or CSV with path,label)")
    p.add_argument("--out", metavar="RUN", default=None, help="run folder (default runs/<DIR name>)")
    p.add_argument("--preset", default="cpu", help="preset for the [data] rules (default cpu)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="preset override")
    _common(p, device=False)
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser(
        "train",
        help="train SeLaVi (single process, or many under torchrun)",
        description="Train SeLaVi into a run folder; resumes from RUN/checkpoints/last.pt. "
        "Multi-process: torchrun --nproc-per-node=G -m otcluster_video.cli train ...",
    )
    p.add_argument(
        "--data",
        metavar="DIR_OR_MANIFEST",
        default=None,
        help="folder of videos, source CSV or manifest (optional when resuming)",
    )
    p.add_argument("--out", metavar="RUN", required=True, help="run folder")
    p.add_argument(
        "--preset",
        default=None,
        help="cpu, paper or a .toml file (default: the run's config.toml when resuming, else cpu)",
    )
    p.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override any preset key, e.g. --set heads.n_clusters=20 (repeatable)",
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="start from scratch even if the run folder has a checkpoint",
    )
    _common(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "label",
        help="write one CSV row per video with its clusters",
        description="Label the training videos, or new ones (--data), with the "
        "trained heads; writes RUN/labels.csv by default.",
    )
    _run_arg(p)
    p.add_argument(
        "--data",
        metavar="DIR_OR_MANIFEST",
        default=None,
        help="videos to label (default: the training videos)",
    )
    p.add_argument("--out", metavar="CSV", default=None, help="output CSV")
    _batch(p)
    _common(p)
    p.set_defaults(func=_cmd_label)

    p = sub.add_parser(
        "evaluate",
        help="NMI/ARI/acc/<H>/<p_max> vs k-means baselines",
        description="Score video-only, audio-only and both-streams labels against "
        "ground truth next to k-means on trained and random-init "
        "features (paper tables 2 and 5). Writes "
        "RUN/evaluation.{txt,json}.",
    )
    _run_arg(p)
    p.add_argument("--data", default=None, help="videos to evaluate (default: training videos)")
    p.add_argument(
        "--truth",
        default=None,
        metavar="CSV",
        help="ground truth CSV with path,label (default: folder names)",
    )
    _batch(p)
    _common(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "explore",
        help="write the HTML cluster explorer",
        description="Write RUN/explorer.html: clusters with thumbnails and audio.",
    )
    _run_arg(p)
    p.add_argument(
        "--labels",
        default=None,
        metavar="CSV",
        help="labels CSV (default RUN/labels.csv, computed if missing)",
    )
    p.add_argument("--head", type=int, default=None, help="head to show (default: the unsupervised choice)")
    p.add_argument("--max-members", type=int, default=12, help="members shown per cluster")
    _common(p)
    p.set_defaults(func=_cmd_explore)

    p = sub.add_parser(
        "degrade",
        help="scores vs video down-sampling factor (paper fig. 2)",
        description="Nearest-neighbour down- and up-sampling of the frames; "
        "writes RUN/degrade.png and RUN/degrade.json.",
    )
    _run_arg(p)
    p.add_argument(
        "--factors",
        type=int,
        nargs="+",
        default=[1, 4, 8, 16],
        help="down-sampling factors (default 1 4 8 16)",
    )
    p.add_argument("--truth", default=None, metavar="CSV", help="ground truth CSV")
    _batch(p)
    _common(p)
    p.set_defaults(func=_cmd_degrade)

    p = sub.add_parser(
        "retrieval",
        help="R@1/5/20 of cosine kNN from test to train videos",
        description="Video retrieval with the trained visual encoder (paper "
        "table 4); writes RUN/retrieval.json.",
    )
    _run_arg(p)
    p.add_argument(
        "--train-split",
        default=None,
        metavar="DATA",
        help="training videos: folder, CSV (path,label) or manifest",
    )
    p.add_argument("--test-split", default=None, metavar="DATA", help="test videos")
    p.add_argument(
        "--split-csv",
        default=None,
        metavar="CSV",
        help="instead: one CSV with path,label,split (train/test)",
    )
    p.add_argument("--clips", type=int, default=10, help="clips averaged per video (default 10)")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 5, 20], help="recall levels")
    _batch(p)
    _common(p)
    p.set_defaults(func=_cmd_retrieval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``otcluster-video``; returns the exit status (0 ok, 2 user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except (CliError, ValueError, FileNotFoundError) as err:
        print(f"otcluster-video {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"otcluster-video {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
