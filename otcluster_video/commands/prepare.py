"""``otcluster-video prepare``: probe every video once into ``RUN/manifest.csv`` and the report of
skipped files (:func:`otcluster_video.prepare` does the probing)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._preset import load_preset
from .._probe import PrepareReport
from .._probe import prepare as prepare_manifest
from .._run import RunPaths

__all__ = ["prepare"]


def prepare(
    data: str | Path,
    out: str | Path,
    *,
    preset: str | Path = "cpu",
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> PrepareReport:
    """Probe every video of ``data`` and write ``out/manifest.csv`` and the skipped-files report.

    A folder that holds a training run (``config.toml`` or a checkpoint) is refused: its
    manifest defines the samples the run was trained on.

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
    paths.refuse_new_data()
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"{data}: no such folder or file")
    return prepare_manifest(
        data,
        paths.manifest,
        min_duration=config.data.min_duration,
        require_audio=config.data.require_audio,
        progress=progress,
    )


def cli(args: argparse.Namespace) -> None:
    from ..cli import overrides

    out = Path(args.out) if args.out else Path("runs") / Path(args.data).resolve().name
    report = prepare(args.data, out, preset=args.preset, overrides=overrides(args),
                     progress=not args.quiet)
    print(f"prepare: {report.summary()}")
    for reason, count in sorted(report.counts.items()):
        print(f"  skipped {count:5d}  {reason}")
    print(f"manifest: {report.manifest}\nskipped files: {report.skipped_report}")
