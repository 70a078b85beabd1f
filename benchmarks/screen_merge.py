"""Overclustered runs merged down to K: the cells of a screen page, from trained runs.

    python benchmarks/screen_merge.py RUNS_DIR OUT_DIR

``RUNS_DIR`` is a ``bench_robustness_av.py`` working directory whose runs were trained with
``--set heads.n_clusters=M`` (M > K, the world's classes). For every finished run
(``<world>/seed<s>/run``) the trained model labels its own training videos as the ``label``
command does (centre clips, the run's stream weights), and each head's M clusters are merged
into K with :func:`otcluster.merge_clusters` (size-weighted k-means of the clusters' centroids
in the trained features, each stream's pooled features L2-normalised and the two concatenated);
a video takes the group with the largest summed probability (:func:`otcluster.merge_log_probs`).
Writes ``OUT_DIR/<world>/cells.json`` with the rows :mod:`screen_page` reads (``both streams``:
the primary head, as ``labels.csv``; ``video heads`` / ``audio heads``: head 0 of each stream,
as ``evaluate``) and links each run's ``history.jsonl`` (its per-clustering NMI is at M).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from otcluster import cluster_report, merge_clusters, merge_log_probs
from otcluster._views import average_views
from otcluster_video.commands import _inference

sys.path.insert(0, str(Path(__file__).parent))
from bench_robustness_av import WORLDS, _truth  # noqa: E402


def merged_rows(run: Path, k: int) -> dict[str, dict]:
    """NMI / ARI / accuracy of the three rows for one trained run, merged to ``k`` groups."""
    loaded = _inference.load_run(run, "cpu")
    y = _truth(run / "manifest.csv", run.parent / "data" / "ground_truth.csv")
    feats = _inference.extract(loaded, _inference.eval_dataset(loaded.videos, loaded.config))
    if feats.failed:
        raise SystemExit(f"{run}: {len(feats.failed)} videos failed to decode")
    lp = _inference.heads_log_probs(loaded, feats.z)
    weights = _inference.stream_weights(loaded, lp)
    mean = average_views(list(lp.values()), normalize=False, weights=weights).log_softmax(-1)
    x = torch.cat([torch.nn.functional.normalize(feats.z[m], dim=1) for m in ("video", "audio")], 1)
    rows = {}

    def score(labels: torch.Tensor) -> dict:
        r = cluster_report(y, labels.numpy())
        return {"nmi": float(r.nmi), "ari": float(r.ari), "acc": float(r.acc)}

    h = loaded.primary
    groups = merge_clusters(x, mean[h].argmax(-1), k, n_clusters=mean.shape[-1]).groups
    rows["both streams (labels.csv)"] = score(merge_log_probs(mean[h], groups, k).argmax(-1))
    groups0 = merge_clusters(x, mean[0].argmax(-1), k, n_clusters=mean.shape[-1]).groups
    for m in ("video", "audio"):
        rows[f"{m} heads"] = score(merge_log_probs(lp[m][0], groups0, k).argmax(-1))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path)
    p.add_argument("out", type=Path)
    a = p.parse_args()
    torch.set_num_threads(1)
    for run in sorted(a.runs.rglob("seed*/run")):
        if not (run / "labels.csv").is_file():
            continue  # not finished
        world, seed = run.parent.parent.name, int(run.parent.name[4:])
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
