"""Restarts chosen by the agreement of the streams: do they give better labels than one run?

    python benchmarks/bench_restarts.py                      # 7 worlds x held-out seeds 1-3, 3 restarts
    python benchmarks/bench_restarts.py --quick --out /tmp/r # tiny: checks that it runs

At CPU scale two runs that differ only in ``training.seed`` can differ by 10-30 NMI. For every
world of :data:`otcluster_video.worlds.WORLDS` and held-out seed ``s``, the `cpu` preset is run
as a user runs it (the robustness suite's protocol, ``benchmarks/bench_robustness_av.py``:
``train --preset cpu --set heads.n_clusters=K`` -> ``label`` -> ``evaluate``) with ``--restarts``
training seeds ``s, s + 100, s + 200, ...`` on the same videos; restart 0 is the robustness
suite's own run (shared workdir: ``WORKDIR/<scale>/<world>/seed<s>/run``, the others
``.../run_t<seed>``). Then ``otcluster-video select`` (:func:`otcluster_video.commands.select.
select_runs`) ranks the restarts by the agreement of their video and audio heads (no ground
truth), and the labels of the run it ranks first are scored.

Reported per world (mean ± sd over the held-out seeds) and over all world-seeds (mean ± standard
error): NMI of the selected run's ``labels.csv`` minus the mean NMI of the restarts (what
selecting adds over running once with an arbitrary seed), minus restart 0's (the suite's
number), and the best restart minus the mean (what a perfect criterion would add). Finished
restarts are cached in ``WORKDIR/<scale>/<world>/restarts.json``; an interrupted run resumes.
Writes ``<name>.{json,md,png}`` (default ``restarts``) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_grid.py
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _pages, bench_robustness_av

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _pages import add_overwrite_arg, refuse_taken  # noqa: E402
from bench_robustness_av import (  # noqa: E402
    Cells,
    _cli,
    _ints,
    _overrides,
    _recipe_cells,
    _truth,
    run_cell,
    work_tag,
)
from robustness_pairs import mean_se  # noqa: E402
from tqdm import tqdm  # noqa: E402

from otcluster_video import load_preset  # noqa: E402
from otcluster_video.commands.select import select_runs  # noqa: E402
from otcluster_video.worlds import WORLDS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LABELS = "both streams (labels.csv)"
STEP = 100  # restart r of held-out seed s trains with training.seed = s + STEP * r


def _restart(base: Path, seed: int, k: int, epochs: int | None, extra: list[str]) -> Path:
    """Train, label and evaluate one more training seed on the suite's prepared videos."""
    run = base / f"run_t{seed}"
    if not (run / "evaluation.json").is_file():
        sets = [a for o in _overrides(k, seed, base / "cache", extra) for a in ("--set", o)]
        ep = [] if epochs is None else ["--epochs", str(epochs)]
        _cli("train", "--data", str(base / "run" / "manifest.csv"), "--out", str(run), "--preset",
             "cpu", *sets, *ep, "--device", "cpu", "--quiet")
        _cli("label", "--run", str(run), "--device", "cpu", "--quiet")
        _cli("evaluate", "--run", str(run), "--truth", str(base / "data" / "ground_truth.csv"),
             "--device", "cpu", "--quiet")
    return run


def run_world_seed(world: str, seed: int, work: Path, suite: Cells, cache: Cells, *,
                   restarts: int, vpc: int, epochs: int | None, extra: list[str]) -> dict:
    """NMI and agreement of every restart of one (world, seed), and the one selected."""
    done = cache.get(world, seed, f"restarts={restarts}")
    if done is not None:
        return done
    base = work / world / f"seed{seed}"
    run_cell(world, seed, work, suite, vpc=vpc, epochs=epochs, methods={LABELS}, extra=extra)
    runs = [base / "run"] + [_restart(base, seed + STEP * r, WORLDS[world].n_classes, epochs, extra)
                             for r in range(1, restarts)]
    truth = base / "data" / "ground_truth.csv"
    y = _truth(base / "run" / "manifest.csv", truth)
    nmi = {run: _recipe_cells(run, truth, y)[LABELS]["nmi"] for run in runs}
    ranked = select_runs(runs, device="cpu", progress=False)
    rows = [{"training_seed": seed + STEP * i, "nmi": nmi[run],
             "agreement": next(r.agreement for r in ranked if r.run == run)}
            for i, run in enumerate(runs)]
    out = {"restarts": rows, "selected": runs.index(ranked[0].run)}
    cache.put(world, seed, f"restarts={restarts}", out)
    return out


def _gains(cells: list[dict]) -> dict[str, list[float]]:
    g: dict[str, list[float]] = {"selected - mean": [], "selected - restart 0": [],
                                 "best - mean": []}
    for c in cells:
        nmis = [r["nmi"] for r in c["restarts"]]
        chosen = nmis[c["selected"]]
        g["selected - mean"].append(100 * (chosen - statistics.mean(nmis)))
        g["selected - restart 0"].append(100 * (chosen - nmis[0]))
        g["best - mean"].append(100 * (max(nmis) - statistics.mean(nmis)))
    return g


def _mean_se(x: list[float]) -> str:
    mean, se = mean_se(x)
    return f"{mean:+.1f} ± {se:.1f}"


def write_report(res: dict, out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(res, indent=1))
    n = res["restarts"]
    L = ["# Restarts chosen by the agreement of the streams", "",
         f"Measured by `{res['command']}` on {res['machine']} (load average "
         f"{res['load_avg_start']:.1f} at the start; wall time {res['wall_s'] / 60:.1f} min in this "
         f"invocation, finished restarts reused). {n} training seeds per world and held-out seed "
         f"{res['held_out']} ({res['scale']}); the run selected without labels by `otcluster-video "
         f"select`.", "",
         "Protocol: docstring of `benchmarks/bench_restarts.py`. NMI in % of `labels.csv` against "
         "the classes.", "",
         "## Summary", "",
         f"Over all {res['n_cells']} world-seeds (mean ± standard error; better / worse by more than 1 "
         "NMI):", "", "| comparison | NMI change | better | worse |", "|---|---|---|---|"]
    for k, v in res["gains"].items():
        L.append(f"| {k} | {_mean_se(v)} | {sum(x > 1 for x in v)} | {sum(x < -1 for x in v)} |")
    L += ["", "## Per world (NMI %, mean ± sd over the held-out seeds)", "",
          f"| world | one run (mean of the {n} restarts) | restart 0 | selected | best of {n} | "
          "agreement of the selected |", "|---|---|---|---|---|---|"]
    def col(cells: list[dict], f) -> str:
        x = [100 * f(c) for c in cells]
        return f"{np.mean(x):.1f} ± {np.std(x):.1f}"

    for w, cells in res["worlds"].items():
        L.append(f"| {w} | {col(cells, lambda c: np.mean([r['nmi'] for r in c['restarts']]))} | "
                 f"{col(cells, lambda c: c['restarts'][0]['nmi'])} | "
                 f"{col(cells, lambda c: c['restarts'][c['selected']]['nmi'])} | "
                 f"{col(cells, lambda c: max(r['nmi'] for r in c['restarts']))} | "
                 f"{col(cells, lambda c: c['restarts'][c['selected']]['agreement'])} |")
    L += ["", "Every restart (NMI / agreement, %; the selected one in bold):", "",
          "| world | seed | " + " | ".join(f"restart {i}" for i in range(n)) + " |",
          "|---|---|" + "---|" * n]
    for w, cells in res["worlds"].items():
        for s, c in zip(res["held_out"], cells):
            parts = [f"{100 * r['nmi']:.1f} / {100 * r['agreement']:.1f}" for r in c["restarts"]]
            parts[c["selected"]] = f"**{parts[c['selected']]}**"
            L.append(f"| {w} | {s} | " + " | ".join(parts) + " |")
    L += ["", f"![NMI of every restart and of the selected one]({name}.png)", ""]
    if res.get("findings"):
        L[6:6] = ["## Findings", "", res["findings"], ""]
    (out / f"{name}.md").write_text("\n".join(L))
    plot(res, out / f"{name}.png")


def plot(res: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ticks, fig = [], plt.figure(figsize=(max(8, 0.55 * res["n_cells"]), 4.5))
    ax = fig.add_subplot()
    x = 0
    for w, cells in res["worlds"].items():
        for s, c in zip(res["held_out"], cells):
            nmis = [100 * r["nmi"] for r in c["restarts"]]
            ax.scatter([x] * len(nmis), nmis, color="0.6", s=18,
                       label="a restart" if x == 0 else None)
            ax.scatter([x], [np.mean(nmis)], marker="_", color="k", s=160,
                       label="mean of the restarts" if x == 0 else None)
            ax.scatter([x], [nmis[c["selected"]]], marker="*", color="C3", s=90,
                       label="selected by agreement" if x == 0 else None)
            ticks.append((x, f"{w} {s}"))
            x += 1
    ax.set_xticks([t[0] for t in ticks])
    ax.set_xticklabels([t[1] for t in ticks], rotation=90, fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel("NMI of labels.csv, %")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worlds", default=",".join(WORLDS), help="comma-separated world names")
    p.add_argument("--seeds", type=_ints, default=[1, 2, 3], help="held-out seeds, e.g. 1,2,3")
    p.add_argument("--restarts", type=int, default=3, help="training seeds per world-seed (>= 2)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the cpu preset's)")
    p.add_argument("--videos-per-class", type=int, default=16)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="extra preset override for every run (repeatable)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    p.add_argument("--name", default="restarts", help="stem of the output files")
    add_overwrite_arg(p)
    p.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench-robustness-av",
                   help="shared with bench_robustness_av.py (its runs are restart 0)")
    p.add_argument("--findings", type=Path, help="Markdown file of findings to put in the report")
    p.add_argument("--quick", action="store_true",
                   help="1 tiny world (2 videos per class), 1 seed, 2 restarts of 1 epoch")
    a = p.parse_args(argv)
    refuse_taken(p, a.out, [f"{a.name}.{ext}" for ext in ("json", "md", "png")], a.overwrite)
    worlds = [w.strip() for w in a.worlds.split(",") if w.strip()]
    unknown = sorted(set(worlds) - set(WORLDS))
    if unknown:
        p.error(f"unknown worlds {unknown}; choose from {sorted(WORLDS)}")
    if a.restarts < 2:
        p.error("--restarts must be at least 2")
    if a.quick:
        worlds = worlds if a.worlds != p.get_default("worlds") else ["shape"]
        a.seeds, a.epochs, a.videos_per_class, a.restarts = a.seeds[:1], 1, 2, 2
    preset = load_preset("cpu", {})
    if preset.training.kernels == "portable":
        os.environ.setdefault("MKL_CBWR", "COMPATIBLE")  # select's inference, as the runs
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    work = a.workdir / work_tag(a.videos_per_class, a.epochs, a.sets)
    suite, cache = Cells(work), Cells(work, "restarts.json")
    per: dict[str, list[dict]] = {w: [] for w in worlds}
    bar = tqdm([(w, s) for w in worlds for s in a.seeds], desc="world-seeds", unit="cell")
    for w, s in bar:
        bar.set_postfix_str(f"{w} seed {s}")
        c = run_world_seed(w, s, work, suite, cache, restarts=a.restarts, vpc=a.videos_per_class,
                           epochs=a.epochs, extra=a.sets)
        per[w].append(c)
        tqdm.write(f"{w:>9} seed {s}: " + ", ".join(
            f"{100 * r['nmi']:.1f}{'*' if i == c['selected'] else ''}"
            for i, r in enumerate(c["restarts"])))
    cells = [c for w in worlds for c in per[w]]
    res: dict = {
        "command": " ".join(["python benchmarks/bench_restarts.py",
                             *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "load_avg_start": load0, "wall_s": time.perf_counter() - t0,
        "held_out": a.seeds, "restarts": a.restarts, "step": STEP, "n_cells": len(cells),
        "scale": (f"{a.videos_per_class} videos per class, "
                  f"{a.epochs or preset.training.epochs} epochs, `--preset cpu`"
                  + "".join(f", `--set {o}`" for o in a.sets)),
        "overrides": a.sets, "gains": _gains(cells), "worlds": per,
    }
    if a.findings is not None:
        res["findings"] = a.findings.read_text().strip()
    write_report(res, a.out, a.name)
    for k, v in res["gains"].items():
        print(f"{k}: {_mean_se(v)} NMI over {len(v)} world-seeds")
    print(f"wrote {a.out / (a.name + '.md')}")
    return res


if __name__ == "__main__":
    main()
