"""Overclustered runs merged down to K: the cells of a screen page, from trained runs.

    python benchmarks/screen_merge.py RUNS_DIR OUT_DIR

``RUNS_DIR`` is a ``bench_robustness_av.py`` working directory whose runs were trained with
``--set heads.n_clusters=M`` (M > K, the world's classes) or ``--set heads.overcluster=M/K``.
For every finished run (``<world>/seed<s>/run``) the run is read as if trained with
``heads.overcluster = M / K``: each head's M clusters are merged into K with
:func:`otcluster.merge_clusters` (size-weighted k-means of the clusters' centroids in the
trained features, each stream's pooled features L2-normalised and the two concatenated; written
to the run's ``merge.json``), each stream's log-probabilities become the groups'
(:func:`otcluster.merge_log_probs`) and the ``label`` command's prediction labels the training
videos. ``both streams (mean, then merged)``: the streams' weighted mean at M merged afterwards
(what the session-29 screen's rule described). Writes ``OUT_DIR/<world>/cells.json`` with the
rows :mod:`screen_page` reads (``both streams``: the primary head, as ``labels.csv``; ``video
heads`` / ``audio heads``: head 0 of each stream, as ``evaluate``) and links each run's
``history.jsonl`` (its per-clustering NMI is at M).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from otcluster import cluster_report, merge_log_probs
from otcluster._views import average_views
from otcluster_video.commands import _inference

sys.path.insert(0, str(Path(__file__).parent))
from bench_robustness_av import WORLDS, _truth  # noqa: E402


def merged_rows(run: Path, k: int) -> dict[str, dict]:
    """NMI / ARI / accuracy of the rows of one trained run, merged to ``k`` groups by the
    library's own path (``heads.overcluster``: :func:`_inference.load_run` finds the groups,
    ``heads_log_probs`` merges each stream's log-probabilities, ``predict`` labels)."""
    loaded = _inference.load_run(run, "cpu")
    loaded.groups = None  # a run trained with heads.overcluster: its heads' own M clusters first
    m = loaded.model.heads["video"].last_linear(0).out_features  # the clusters it was trained at
    heads = dataclasses.replace(loaded.config.heads, n_clusters=k, overcluster=m // k)
    loaded.config = dataclasses.replace(loaded.config, heads=heads)
    y = _truth(run / "manifest.csv", run.parent / "data" / "ground_truth.csv")
    feats = _inference.extract(loaded, _inference.eval_dataset(loaded.videos, loaded.config))
    if feats.failed:
        raise SystemExit(f"{run}: {len(feats.failed)} videos failed to decode")
    raw = _inference.heads_log_probs(loaded, feats.z)  # at M: loaded.groups not set yet
    loaded.groups = _inference._merged_groups(loaded)  # writes RUN/merge.json, as train does
    lp = _inference.heads_log_probs(loaded, feats.z)

    def score(labels: torch.Tensor) -> dict:
        r = cluster_report(y, labels.numpy())
        return {"nmi": float(r.nmi), "ari": float(r.ari), "acc": float(r.acc)}

    h = loaded.primary
    labels = _inference.predict(lp, _inference.stream_weights(loaded, lp))[0]
    rows = {"both streams (labels.csv)": score(labels[h])}
    for s in ("video", "audio"):
        rows[f"{s} heads"] = score(lp[s][0].argmax(-1))
    # the screen's rule read the streams' weighted mean at M, then merged it (session 29)
    mean = average_views(list(raw.values()), normalize=False,
                         weights=_inference.stream_weights(loaded, raw)).log_softmax(-1)
    rows["both streams (mean, then merged)"] = score(merge_log_probs(mean[h], loaded.groups[h], k).argmax(-1))
    return rows


def finished_runs(root: Path) -> Iterator[tuple[str, int, Path]]:
    """``(world, seed, run folder)`` of every finished run under a working directory."""
    for run in sorted(root.rglob("seed*/run")):
        if (run / "labels.csv").is_file():
            yield run.parent.parent.name, int(run.parent.name[4:]), run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path)
    p.add_argument("out", type=Path)
    a = p.parse_args()
    torch.set_num_threads(1)
    for world, seed, run in finished_runs(a.runs):
        cells_file = a.out / world / "cells.json"
        cells = json.loads(cells_file.read_text()) if cells_file.is_file() else {}
        for row, v in merged_rows(run, WORLDS[world].n_classes).items():
            cells[f"{seed}|{row}"] = v
        (a.out / world / f"seed{seed}" / "run").mkdir(parents=True, exist_ok=True)
        link = a.out / world / f"seed{seed}" / "run" / "history.jsonl"
        if not link.exists():
            link.symlink_to((run / "history.jsonl").resolve())
        cells_file.write_text(json.dumps(cells, indent=1))
        print(world, seed, {r: round(100 * v["nmi"], 2) for r, v in cells.items()
                            if r.startswith(f"{seed}|")}, flush=True)


if __name__ == "__main__":
    main()
