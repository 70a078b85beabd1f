"""``otcluster-video explore``: the HTML cluster explorer of a run (``RUN/explorer.html``),
drawn by :func:`otcluster_video.write_explorer` from ``RUN/labels.csv``."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from .._run import RunPaths

__all__ = ["explore"]


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
        Output of ``label`` (default ``RUN/labels.csv``, written first if missing).
    head : int, optional
        Head whose clusters are shown (default: the ``label`` column, the unsupervised choice).
    out_html : str or Path, optional
        Default ``RUN/explorer.html``.
    max_members : int
        Members shown per cluster.
    device, progress
        As for ``label`` (used only when the labels must be computed first).

    Returns
    -------
    Path
        The page.
    """
    from ..explore import write_explorer

    paths = RunPaths(Path(run))
    if labels_csv is None:
        labels_csv = paths.labels
        if not labels_csv.is_file():
            from .label import label

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
    conf_column = "confidence" if head is None else f"confidence_h{head}"
    confidence = {r["path"]: float(r[conf_column]) for r in rows if r.get(conf_column)}
    which = "the selected head" if head is None else f"head {head}"
    page = write_explorer(
        Path(out_html) if out_html is not None else paths.explorer,
        items,
        title=f"SeLaVi clusters of {paths.root.name} ({which})",
        truth=truth or None,
        max_members=max_members,
        confidence=confidence or None,
        progress=progress,
    )
    if progress:
        print(f"explorer: {page}", flush=True)
    return page


def cli(args: argparse.Namespace) -> None:
    from ..cli import device_of

    page = explore(args.run, labels_csv=args.labels, head=args.head,
                   max_members=args.max_members, device=device_of(args.device),
                   progress=not args.quiet)
    if args.quiet:
        print(page)
