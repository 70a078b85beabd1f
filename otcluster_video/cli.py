"""``otcluster-video``: label unlabelled videos with SeLaVi from the command line.

Commands: ``synth``, ``prepare``, ``train``, ``select``, ``label``, ``evaluate``, ``explore``,
``degrade``, ``retrieval``. Configuration comes from a preset TOML (``--preset
cpu|paper|FILE.toml``) plus a few overrides (``--epochs``, ``--set key=value``).

This module only parses and dispatches: each command lives in :mod:`otcluster_video.commands`
and is imported when it runs (``otcluster-video --help`` never imports torch). ``train`` runs on
one process or, under ``torchrun``, on many: :func:`init_distributed` is the only place that
reads ``LOCAL_RANK`` / ``WORLD_SIZE`` and initialises ``torch.distributed``; the process group
is passed on explicitly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

__all__ = ["build_parser", "main"]

logger = logging.getLogger("otcluster_video")

try:  # TOML values for --set key=value
    import tomllib as _toml
except ModuleNotFoundError:  # Python 3.10
    import tomli as _toml  # type: ignore[no-redef]

#: command -> (module in otcluster_video.commands, function taking the parsed arguments)
COMMANDS = {
    "synth": ("synth", "cli"),
    "prepare": ("prepare", "cli"),
    "train": ("train", "cli"),
    "select": ("select", "cli"),
    "label": ("label", "cli"),
    "evaluate": ("evaluate", "cli"),
    "explore": ("explore", "cli"),
    "degrade": ("evaluate", "cli_degrade"),
    "retrieval": ("retrieval", "cli"),
}


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


# --------------------------------------------------------------------------------------------
# helpers the commands use
# --------------------------------------------------------------------------------------------


def _finite(value: Any, key: str) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise CliError(f"--set {key}: {value} is not a finite number")
    if isinstance(value, list):
        for v in value:
            _finite(v, key)
    return value


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
        out[key.strip()] = _finite(value, key.strip())
    return out


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The preset overrides of ``--set`` and ``--epochs``."""
    over = _parse_set(getattr(args, "set", None) or [])
    if getattr(args, "epochs", None) is not None:
        over["training.epochs"] = args.epochs
    return over


def device_of(name: str, local_rank: int | None = None) -> str:
    """``--device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) as a device name."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CliError(f"--device {name}: CUDA is not available on this machine")
        if local_rank is not None and name == "cuda":
            return f"cuda:{local_rank}"
    return name


def init_distributed(device: str) -> tuple[Any, str]:
    """Under torchrun (``WORLD_SIZE`` > 1): initialise the default process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None, device_of(device)
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = device_of(device, local_rank)
    if dev.startswith("cuda"):
        torch.cuda.set_device(torch.device(dev))
    backend = "nccl" if dev.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return dist.group.WORLD, dev


# --------------------------------------------------------------------------------------------
# parser: one function per command
# --------------------------------------------------------------------------------------------


def _global_options(p: argparse.ArgumentParser, *, top: bool) -> None:
    """``--verbose``, ``--quiet`` and ``--debug``, accepted before or after the command."""
    default = False if top else argparse.SUPPRESS  # a subcommand must not reset the top level
    p.add_argument("-v", "--verbose", action="store_true", default=default,
                   help="log what happens (INFO messages on stderr)")
    p.add_argument("-q", "--quiet", action="store_true", default=default,
                   help="no progress bars or chatter; warnings and errors only")
    p.add_argument("--debug", action="store_true", default=default,
                   help="on an error, show the full traceback, not just one line")


def _common(p: argparse.ArgumentParser, *, device: bool = True, batch: bool = False) -> None:
    if device:
        p.add_argument("--device", default="auto",
                       help="cpu, cuda, cuda:N or auto (default: cuda when available)")
    if batch:
        p.add_argument("--batch-size", type=int, default=None,
                       help="inference batch size (default: the training batch size)")
    _global_options(p, top=False)


def _run_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, metavar="RUN", help="run folder written by train")


def _set_arg(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=help)


def _add_synth(sub: Any) -> None:
    p = sub.add_parser("synth", help="write a synthetic audio-visual dataset of MP4 files",
                       description="Write labelled synthetic MP4 videos (class folders) whose "
                       "class shows in both the frames and the sound.")
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--n-videos", type=int, default=240, help="valid videos (default 240)")
    p.add_argument("--classes", type=int, default=6, help="classes, at most 10 (default 6)")
    p.add_argument("--broken", type=int, default=0, help="extra broken files (default 0)")
    p.add_argument("--seconds", type=float, default=2.0, help="clip length (default 2)")
    p.add_argument("--size", type=int, default=64, help="frame size in pixels (default 64)")
    p.add_argument("--degrade-fraction", type=float, default=0.25,
                   help="fraction of videos with a degraded video stream, and again with a "
                   "degraded audio stream (default 0.25)")
    p.add_argument("--seed", type=int, default=0)
    _global_options(p, top=False)


def _add_prepare(sub: Any) -> None:
    p = sub.add_parser("prepare", help="probe videos, write a manifest and a skipped-files report",
                       description="Probe every video once; write RUN/manifest.csv (usable "
                       "videos) and RUN/manifest.skipped.csv (with reasons). A folder that "
                       "holds a trained run is refused (use a new --out).")
    p.add_argument("data", metavar="DIR", help="folder of videos (or CSV with path,label)")
    p.add_argument("--out", metavar="RUN", default=None, help="run folder (default runs/<DIR name>)")
    p.add_argument("--preset", default="cpu", help="preset for the [data] rules (default cpu)")
    _set_arg(p, "preset override")
    _common(p, device=False)


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train SeLaVi (single process, or many under torchrun)",
                       description="Train SeLaVi into a run folder; resumes from "
                       "RUN/checkpoints/last.pt. Each epoch and clustering goes to RUN/train.log "
                       "and RUN/history.jsonl as it happens. Multi-process: torchrun "
                       "--nproc-per-node=G -m otcluster_video.cli train ...")
    p.add_argument("--data", metavar="DIR_OR_MANIFEST", default=None,
                   help="folder of videos, source CSV or manifest (optional when resuming)")
    p.add_argument("--out", metavar="RUN", required=True, help="run folder")
    p.add_argument("--preset", default=None,
                   help="cpu, paper or a .toml file (default: the run's config.toml when "
                   "resuming, else cpu)")
    p.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    _set_arg(p, "override any preset key, e.g. --set heads.n_clusters=20 (repeatable)")
    p.add_argument("--no-resume", action="store_true",
                   help="start from scratch even if the run folder has a checkpoint")
    _common(p)


def _add_select(sub: Any) -> None:
    p = sub.add_parser("select", help="rank runs of the same videos by their streams' agreement",
                       description="Rank runs trained on the same videos (e.g. with different "
                       "training.seed) by the agreement (NMI) of their video and audio heads, "
                       "best first; no ground truth used, nothing written.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by train")
    _common(p, batch=True)


def _add_label(sub: Any) -> None:
    p = sub.add_parser("label", help="write one CSV row per video with its clusters",
                       description="Label the training videos, or new ones (--data), with the "
                       "trained heads; writes RUN/labels.csv by default.")
    _run_arg(p)
    p.add_argument("--data", metavar="DIR_OR_MANIFEST", default=None,
                   help="videos to label (default: the training videos)")
    p.add_argument("--out", metavar="CSV", default=None, help="output CSV")
    _common(p, batch=True)


def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="NMI/ARI/acc/<H>/<p_max> vs k-means baselines",
                       description="Score video-only, audio-only and both-streams labels "
                       "against ground truth next to k-means on trained and random-init "
                       "features (paper tables 2 and 5). Writes RUN/evaluation.{txt,json}.")
    _run_arg(p)
    p.add_argument("--data", default=None, help="videos to evaluate (default: training videos)")
    p.add_argument("--truth", default=None, metavar="CSV",
                   help="ground truth CSV with path,label (default: folder names)")
    _common(p, batch=True)


def _add_explore(sub: Any) -> None:
    p = sub.add_parser("explore", help="write the HTML cluster explorer",
                       description="Write RUN/explorer.html: clusters with thumbnails and audio.")
    _run_arg(p)
    p.add_argument("--labels", default=None, metavar="CSV",
                   help="labels CSV (default RUN/labels.csv, computed if missing)")
    p.add_argument("--head", type=int, default=None,
                   help="head to show (default: the unsupervised choice)")
    p.add_argument("--max-members", type=int, default=12, help="members shown per cluster")
    _common(p)


def _add_degrade(sub: Any) -> None:
    p = sub.add_parser("degrade", help="scores vs video down-sampling factor (paper fig. 2)",
                       description="Nearest-neighbour down- and up-sampling of the frames; "
                       "writes RUN/degrade.png and RUN/degrade.json.")
    _run_arg(p)
    p.add_argument("--factors", type=int, nargs="+", default=[1, 4, 8, 16],
                   help="down-sampling factors (default 1 4 8 16)")
    p.add_argument("--truth", default=None, metavar="CSV", help="ground truth CSV")
    _common(p, batch=True)


def _add_retrieval(sub: Any) -> None:
    p = sub.add_parser("retrieval", help="R@1/5/20 of cosine kNN from test to train videos",
                       description="Video retrieval with the trained visual encoder (paper "
                       "table 4); writes RUN/retrieval.json.")
    _run_arg(p)
    p.add_argument("--train-split", default=None, metavar="DATA",
                   help="training videos: folder, CSV (path,label) or manifest")
    p.add_argument("--test-split", default=None, metavar="DATA", help="test videos")
    p.add_argument("--split-csv", default=None, metavar="CSV",
                   help="instead: one CSV with path,label,split (train/test)")
    p.add_argument("--clips", type=int, default=10, help="clips averaged per video (default 10)")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 5, 20], help="recall levels")
    _common(p, batch=True)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("otcluster")
    except PackageNotFoundError:  # a source tree that is not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The ``otcluster-video`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="otcluster-video",
        description="Label unlabelled videos from scratch with multi-modal self-supervision "
        "(SeLaVi). See docs/video.md.",
    )
    parser.add_argument("--version", action="version", version=f"otcluster-video {_version()}")
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_synth, _add_prepare, _add_train, _add_select, _add_label, _add_evaluate,
                _add_explore, _add_degrade, _add_retrieval):
        add(sub)
    return parser


# --------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------


def _setup_logging(args: argparse.Namespace) -> None:
    """Messages on stderr: warnings, or INFO too with ``--verbose`` (``train.log`` always gets
    INFO: its handler is added by the train command)."""
    level = logging.INFO if args.verbose and not args.quiet else logging.WARNING
    root = logging.getLogger()
    fresh = not root.handlers  # inside a host that configured logging (pytest), leave it be
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    root.setLevel(level)
    if fresh:
        for handler in root.handlers:
            handler.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``otcluster-video``; returns the exit status (0 ok, 2 user error, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    _setup_logging(args)
    module, function = COMMANDS[args.command]
    try:
        run = getattr(importlib.import_module(f"otcluster_video.commands.{module}"), function)
        run(args)
    except (CliError, ValueError, FileNotFoundError) as err:
        if args.debug:
            traceback.print_exc()
        hint = "" if args.debug else " (--debug shows the traceback)"
        print(f"otcluster-video {args.command}: error: {err}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"otcluster-video {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
