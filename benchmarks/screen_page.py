"""A screen page: settings of the ``cpu`` preset against the preset on the robustness suite's
tuning runs, paired run by run.

    python benchmarks/screen_page.py \\
        --baseline docs/benchmarks/robustness_av_screen_schedule.json:preset \\
        --setting "H: learning rate 0.02" /tmp/wH "--set training.lr=0.02" \\
        --rule rule.md --findings findings.md --title "..." --name robustness_av_screen_lr

Each setting's runs come from a ``bench_robustness_av.py --seeds 0,4 --tuning-seeds 99
--methods 'both streams,video heads,audio heads' --set ...`` working directory (its
``cells.json`` per world and each run's ``history.jsonl``, which scores every clustering against
the classes: monitoring only, nothing is chosen from it). The baseline's runs are read from an
earlier page's JSON, so the preset is not trained again when the library's draw is unchanged.
A setting passes when its paired change of the both-stream NMI is above +1 and above its
standard error (the rule of these screens). Writes ``<name>.{json,md,png}`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np

ROWS = {"both streams": "both streams (labels.csv)", "video heads": "video heads",
        "audio heads": "audio heads"}
SEEDS = (0, 4)


def run_records(workdir: Path) -> dict[str, dict]:
    """``{"world|seed": record}`` of every finished tuning run under ``workdir``: the three
    rows' NMI (%) and the labels' NMI and churn at each clustering."""
    out = {}
    for cells_file in sorted(workdir.rglob("cells.json")):
        world, cells = cells_file.parent.name, json.loads(cells_file.read_text())
        for seed in SEEDS:
            if any(f"{seed}|{m}" not in cells for m in ROWS.values()):
                continue
            rec: dict = {k: round(100 * cells[f"{seed}|{m}"]["nmi"], 2) for k, m in ROWS.items()}
            hist = cells_file.parent / f"seed{seed}" / "run" / "history.jsonl"
            events = [json.loads(line) for line in hist.read_text().splitlines() if line.strip()]
            clus = [e for e in events if e.get("event") == "clustering"]
            rec.update(steps=[e["step"] for e in clus],
                       total_steps=max(e["step"] for e in events if e.get("event") == "epoch"),
                       nmi=[round(100 * e["nmi"], 2) for e in clus],
                       changed=[None if e["changed"] is None else round(e["changed"], 4) for e in clus])
            out[f"{world}|{seed}"] = rec
    return out


def paired(runs: dict, base: dict) -> dict:
    """Mean ± standard error of ``runs - base`` over the shared runs, per row."""
    keys = [k for k in base if k in runs]
    res = {}
    for row in ROWS:
        d = np.array([runs[k][row] - base[k][row] for k in keys])
        res[row] = {"mean": round(float(d.mean()), 4), "se": round(float(d.std(ddof=1) / np.sqrt(len(d))), 4),
                    "up": int((d > 0).sum()), "down": int((d < 0).sum()), "n": len(d)}
    return res


def passes(p: dict) -> bool:
    both = p["both streams"]
    return bool(both["mean"] > 1 and both["mean"] > both["se"])


def fmt(c: dict) -> str:
    return f"{c['mean']:+.1f} ± {c['se']:.1f} (up {c['up']}, down {c['down']})"


def per_world(runs: dict, row: str) -> dict[str, float]:
    worlds = dict.fromkeys(k.split("|")[0] for k in runs)
    return {w: float(np.mean([runs[f"{w}|{s}"][row] for s in SEEDS if f"{w}|{s}" in runs]))
            for w in worlds}


def curve(runs: dict, bins: int = 10) -> np.ndarray:
    """Mean labels' NMI over the runs in ``bins`` equal fractions of the training steps."""
    out = np.zeros(bins)
    for r in runs.values():
        frac = np.minimum((np.array(r["steps"]) / r["total_steps"] * bins).astype(int), bins - 1)
        nmi = np.array(r["nmi"])
        out += np.array([nmi[frac == b].mean() if (frac == b).any() else np.nan for b in range(bins)])
    return out / len(runs)


def plot(configs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = configs["preset"]["runs"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, c in configs.items():
        x = (np.arange(10) + 0.5) / 10
        b.plot(x, curve(c["runs"]), marker="o", label=name)
        if name == "preset":
            continue
        keys = list(base)
        a.scatter([base[k]["both streams"] for k in keys], [c["runs"][k]["both streams"] for k in keys],
                  label=name)
    a.plot([0, 100], [0, 100], "k--", lw=0.8)
    a.set(xlabel="preset: both streams NMI (%)", ylabel="setting: both streams NMI (%)",
          title="each tuning run, paired")
    b.set(xlabel="fraction of the training steps", ylabel="labels' NMI (%), mean over runs",
          title="labels during training (monitoring)")
    for ax in (a, b):
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build(baseline: str, settings: list[list[str]]) -> dict:
    page, _, name = baseline.partition(":")
    base = json.loads(Path(page).read_text())["configs"][name or "preset"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    configs = {"preset": {**base, "from": page}}
    for label, workdir, how in settings:
        runs = run_records(Path(workdir))
        missing = sorted(set(base["runs"]) - set(runs))
        if missing:
            raise SystemExit(f"setting {label!r}: runs missing under {workdir}: {missing}")
        configs[label] = {"how": how, "commit": commit, "runs": {k: runs[k] for k in base["runs"]}}
    res = {name: paired(c["runs"], base["runs"]) for name, c in configs.items() if name != "preset"}
    return {"configs": configs, "paired": res, "passed": {k: passes(v) for k, v in res.items()}}


def markdown(data: dict, title: str, findings: str) -> str:
    configs = data["configs"]
    lines = [f"# {title}", "", "Measured on the **tuning seeds 0 and 4** of the seven worlds of "
             "`benchmarks/bench_robustness_av.py` (one run per world and seed, 14 runs per setting, "
             "16 videos per class, the preset's portable kernels and one torch thread per run). No "
             "held-out seed was used. Page: `benchmarks/screen_page.py`. Settings: "
             + "; ".join(f"**{n}**: {c['how']} (commit `{c['commit']}`)" for n, c in configs.items())
             + ".", "", "## The rule, written before the runs", "", data["rule"].strip(), "",
             "## Result", "", "| setting | both streams | video heads | audio heads | passes |",
             "|---|---|---|---|---|"]
    for n, p in data["paired"].items():
        lines.append(f"| {n} − preset | " + " | ".join(fmt(p[r]) for r in ROWS)
                     + f" | {'**yes**' if data['passed'][n] else 'no'} |")
    lines += ["", "Paired change in NMI points, mean ± standard error over the 14 runs.", "",
              "| world | " + " | ".join(f"{n}: both / video / audio" for n in configs) + " |",
              "|---|" + "---|" * len(configs)]
    worlds = {n: {r: per_world(c["runs"], r) for r in ROWS} for n, c in configs.items()}
    for w in worlds["preset"]["both streams"]:
        lines.append(f"| {w} | " + " | ".join(" / ".join(f"{worlds[n][r][w]:.1f}" for r in ROWS)
                                              for n in configs) + " |")
    lines += ["", "NMI in %, mean of the two tuning seeds.", "", "## Findings", "", findings.strip(),
              "", f"![paired runs and the labels during training]({data['name']}.png)", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", required=True, help="PAGE.json:CONFIG of the preset's runs")
    p.add_argument("--setting", nargs=3, action="append", required=True,
                   metavar=("LABEL", "WORKDIR", "HOW"))
    p.add_argument("--rule", type=Path, required=True)
    p.add_argument("--findings", type=Path, required=True)
    p.add_argument("--title", required=True)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "benchmarks")
    p.add_argument("--name", required=True)
    a = p.parse_args()
    taken = [f"{a.name}.{ext}" for ext in ("json", "md", "png") if (a.out / f"{a.name}.{ext}").exists()]
    if taken:  # a page is the record of a screen: never overwrite one
        raise SystemExit(f"{a.out} already holds {', '.join(taken)}: give the page another --name")
    data = {"rule": a.rule.read_text(), "name": a.name,
            "protocol": "bench_robustness_av.py --worlds W --seeds 0,4 --tuning-seeds 99 "
                        "--videos-per-class 16 --methods 'both streams,video heads,audio heads' "
                        "[--set ...]; NMI in %", **build(a.baseline, a.setting)}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{a.name}.json").write_text(json.dumps(data, indent=1) + "\n")
    (a.out / f"{a.name}.md").write_text(markdown(data, a.title, a.findings.read_text()))
    plot(data["configs"], a.out / f"{a.name}.png")
    for n, v in data["paired"].items():
        print(n, {r: fmt(c) for r, c in v.items()}, "passes" if data["passed"][n] else "fails")


if __name__ == "__main__":
    main()
