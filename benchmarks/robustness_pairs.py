"""Two pages of the robustness suite side by side: paired changes over the same world-seeds.

    python benchmarks/robustness_pairs.py docs/benchmarks/robustness_av_preset.json \\
        docs/benchmarks/robustness_av_moment.json

Both JSON files are written by ``bench_robustness_av.py``. Every world and held-out seed that
both pages ran is a pair (the same generated videos, the same ``training.seed``); for each
method the change ``new - old`` of the NMI is reported as mean ± standard error over the pairs,
with how many pairs went up and down, and per world the mean NMI of both pages and the issue-10
targets each met. Prints Markdown; ``--json`` writes the numbers too.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

ROWS = ("both streams (labels.csv)", "video heads", "audio heads", "OT self-labels",
        "k-means, trained (both)")


def _per_seed(page: dict, world: str, method: str) -> dict[int, float]:
    r = page["worlds"].get(world, {}).get("methods", {}).get(method, {})
    seeds = page["split"]["held_out"]
    return dict(zip(seeds, r.get("nmi_all", []), strict=False))


def mean_se(x: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (nan for a single value)."""
    return statistics.mean(x), (statistics.stdev(x) / len(x) ** 0.5 if len(x) > 1 else math.nan)


def paired(new: dict, old: dict, method: str) -> dict:
    """The NMI change ``new - old`` of ``method`` over the world-seeds both pages ran (in %)."""
    diffs = []
    for world in new["worlds"]:
        a, b = _per_seed(new, world, method), _per_seed(old, world, method)
        diffs += [100 * (a[s] - b[s]) for s in sorted(a.keys() & b.keys())]
    if not diffs:
        return {"n": 0}
    mean, se = mean_se(diffs)
    return {"n": len(diffs), "mean": mean, "se": se, "up": sum(d > 0 for d in diffs),
            "down": sum(d < 0 for d in diffs), "diffs": diffs}


def targets_met(page: dict, world: str) -> int:
    return sum(v is True for v in page["worlds"][world]["targets"].values())


def compare(new: dict, old: dict, rows: tuple[str, ...] = ROWS) -> dict:
    worlds = [w for w in new["worlds"] if w in old["worlds"]]
    return {
        "worlds": {w: {"nmi": {m: [100 * p["worlds"][w]["methods"].get(m, {}).get("nmi", math.nan)
                                   for p in (new, old)] for m in rows},
                       "targets": [targets_met(new, w), targets_met(old, w)]} for w in worlds},
        "targets": [sum(targets_met(p, w) for w in worlds) for p in (new, old)],
        "paired": {m: paired(new, old, m) for m in rows},
    }


def markdown(res: dict, rows: tuple[str, ...] = ROWS[:3]) -> str:
    """Per-world means (new / old) and targets met, then the paired changes."""
    head = "| world | " + " | ".join(rows) + " | targets met |"
    lines = [head, "|---" * (len(rows) + 2) + "|"]
    for w, r in res["worlds"].items():
        cells = [" / ".join(f"{v:.1f}" for v in r["nmi"][m]) for m in rows]
        lines.append(f"| {w} | " + " | ".join(cells) + " | " + " / ".join(map(str, r["targets"])) + " |")
    new, old = res["targets"]
    lines += ["", f"Targets met: {new} of {5 * len(res['worlds'])} (the other page: {old}).", ""]
    lines += ["| row | paired change (new - old), mean ± s.e. | up | down | pairs |", "|---|---|---|---|---|"]
    for m, p in res["paired"].items():
        if p["n"]:
            lines.append(f"| {m} | {p['mean']:+.1f} ± {p['se']:.1f} | {p['up']} | {p['down']} | {p['n']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("new", type=Path)
    p.add_argument("old", type=Path)
    p.add_argument("--json", type=Path, help="also write the numbers here (refuses an existing file)")
    a = p.parse_args(argv)
    res = compare(json.loads(a.new.read_text()), json.loads(a.old.read_text()))
    print(markdown(res))
    if a.json is not None:
        if a.json.exists():
            p.error(f"{a.json} exists; not overwriting it")
        a.json.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
