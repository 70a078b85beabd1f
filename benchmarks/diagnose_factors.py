"""What do a run's clusters follow: the class, or a nuisance of the synthetic world?

    python benchmarks/diagnose_factors.py RUNS_DIR OUT.json     # also OUT.png, a heatmap

``RUNS_DIR`` is a ``bench_robustness_av.py`` working directory. For every finished run
(``<world>/seed<s>/run``) three labellings are scored: ``both streams`` (the ``label``
command's prediction) and each stream's heads alone (``video`` / ``audio``), all from the
primary head. Each is compared with the class and with every factor the world's
``ground_truth.csv`` records (:data:`otcluster_video.worlds.NUISANCES`: the sound's fundamental
``f0``, its ``volume``, the distractor tone's frequency; the object's ``size``, mean place ``x``
and ``y``, ``speed``, ``hue`` and ``contrast``; each cut into K bins of equal count; and, where
some clips are degraded, which stream is: ``degraded``). The score is the adjusted mutual
information in % (0 = chance, 100 = the same partition), so that factors with other numbers of
values compare. A nuisance scoring near the class means the clusters split by it. (In `motion`
and `twelve` the pitch and the speed are (part of) the class, so there ``f0`` and ``speed`` are
no nuisances. Worlds written before the pictures' nuisances were recorded lack those columns,
and those factors are left out.)
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_mutual_info_score

from otcluster_video import load_manifest
from otcluster_video.commands import _inference
from otcluster_video.worlds import NUISANCES

sys.path.insert(0, str(Path(__file__).parent))
from _pages import add_overwrite_arg, refuse_taken  # noqa: E402
from bench_robustness_av import WORLDS  # noqa: E402
from screen_merge import finished_runs  # noqa: E402


def equal_count_bins(values: np.ndarray, k: int) -> np.ndarray:
    """``values`` cut into ``k`` bins of (nearly) equal count by rank; NaN stays NaN."""
    out = np.full(values.shape, np.nan)
    ok = ~np.isnan(values)
    ranks = values[ok].argsort(kind="stable").argsort(kind="stable")
    out[ok] = ranks * k // max(int(ok.sum()), 1)
    return out


def factors(manifest: Path, truth_csv: Path, k: int) -> dict[str, np.ndarray]:
    """The class and each recorded factor of the manifest's videos, in manifest order
    (recorded nuisances binned into ``k`` bins; NaN where a video has none)."""
    with truth_csv.open(newline="") as f:
        rows = {str((truth_csv.parent / r["path"]).resolve()): r for r in csv.DictReader(f)}
    order = [rows[str(Path(v.path).resolve())] for v in load_manifest(manifest)]
    classes = sorted({r["label"] for r in order})
    out = {"class": np.array([classes.index(r["label"]) for r in order], dtype=float)}
    for name in NUISANCES:
        raw = np.array([float(r[name]) if r.get(name) else np.nan for r in order])
        if not np.isnan(raw).all():
            out[name] = equal_count_bins(raw, k)
    kinds = [r.get("degraded", "") for r in order]
    if any(kinds):
        out["degraded"] = np.array([("", "video", "audio").index(x) for x in kinds], dtype=float)
    return out


def ami_table(labellings: dict[str, np.ndarray], facts: dict[str, np.ndarray]
              ) -> dict[str, dict[str, float]]:
    """AMI (%) of each labelling with each factor, over the videos where the factor is defined."""
    table: dict[str, dict[str, float]] = {}
    for name, labels in labellings.items():
        row = {}
        for f, values in facts.items():
            ok = ~np.isnan(values)
            row[f] = round(100 * float(adjusted_mutual_info_score(values[ok], labels[ok])), 2)
        table[name] = row
    return table


def diagnose(run: Path, k: int) -> dict[str, dict[str, float]]:
    loaded = _inference.load_run(run, "cpu")
    feats = _inference.extract(loaded, _inference.eval_dataset(loaded.videos, loaded.config))
    if feats.failed:
        raise SystemExit(f"{run}: {len(feats.failed)} videos failed to decode")
    lp = _inference.heads_log_probs(loaded, feats.z)  # per stream, (H, N, K)
    h = loaded.primary
    labellings = {"both streams": _inference.predict(lp, _inference.stream_weights(loaded, lp))[0][h]}
    labellings.update({m: v[h].argmax(-1) for m, v in lp.items()})
    facts = factors(run / "manifest.csv", run.parent / "data" / "ground_truth.csv", k)
    return ami_table({n: np.asarray(v) for n, v in labellings.items()}, facts)


def _factor_names(results: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Every factor scored in ``results``, in first-seen order (the table's columns)."""
    return list(dict.fromkeys(f for run in results.values() for row in run.values() for f in row))


def markdown(results: dict[str, dict[str, dict[str, float]]]) -> str:
    names = _factor_names(results)
    lines = ["| run | labels | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for key, run in results.items():
        for labelling, row in run.items():
            cells = [f"{row[f]:.1f}" if f in row else "" for f in names]
            run_name = key.replace("|", " seed ")
            lines.append(f"| {run_name} | {labelling} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict[str, dict[str, dict[str, float]]], png: Path) -> None:
    """A heatmap of :func:`markdown`'s table: one row per run and labelling, one column per
    factor, the AMI in % written in each cell (blank where the world does not record it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = _factor_names(results)
    rows = [(f"{key.replace('|', ' seed ')}: {labelling}", row)
            for key, run in results.items() for labelling, row in run.items()]
    grid = np.array([[row.get(f, np.nan) for f in names] for _, row in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(names), 1.2 + 0.3 * len(rows)))
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0.0, vmax=100.0, aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if v < 50 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=7)
    fig.colorbar(im, ax=ax, label="AMI with the factor, % (0 = chance)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path)
    p.add_argument("out", type=Path)
    add_overwrite_arg(p)
    a = p.parse_args()
    png = a.out.with_suffix(".png")
    refuse_taken(p, a.out.parent, [a.out.name, png.name], a.overwrite)
    torch.set_num_threads(1)
    results = {f"{world}|{seed}": diagnose(run, WORLDS[world].n_classes)
               for world, seed, run in finished_runs(a.runs)}
    a.out.write_text(json.dumps(results, indent=1))
    plot(results, png)
    print(markdown(results))
    print(f"wrote {a.out} and {png}")


if __name__ == "__main__":
    main()
