"""A page of demo runs under settings: the demo's verdict, its NMIs, the merge's diagnosis.

    python benchmarks/demo_page.py --run LABEL SEED DEMO_OUT [--run ...] --rule RULE.md \
        --findings FINDINGS.md --title TITLE --name NAME [--out docs/benchmarks]

Each ``--run`` is one finished ``python -m otcluster_video.demo`` folder (or ``run_demo``'s
``out``) with its setting's label and seed. For each the page gives :func:`demo.headline`'s
NMIs and the printed :func:`demo.verdict`, the demo's times (``run/demo-timings.json``) and,
for an overclustered run (``RUN/merge.json``), :func:`diagnose_merge.diagnose`'s rows (the fine
clusters' homogeneity, an oracle merge, alternative merges). Writes ``NAME.json`` and
``NAME.md``; refuses to overwrite either.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from otcluster_video.demo import headline, verdict

sys.path.insert(0, str(Path(__file__).parent))
from diagnose_merge import diagnose  # noqa: E402

#: Columns of the main table: (key of the run's ``nmi``, header).
COLUMNS = (("both", "both streams"), ("video", "video heads"), ("audio", "audio heads"),
           ("self_labels", "self-labels (OT)"), ("kmeans_trained", "k-means trained (best)"))


def collect(label: str, seed: int, out: Path) -> dict:
    """One demo folder's numbers (NMI in %)."""
    run = out / "run"
    result = json.loads((run / "evaluation.json").read_text())
    cell = {"setting": label, "seed": seed, "nmi": headline(result),
            "verdict": verdict(result, seed),
            "seconds": json.loads((run / "demo-timings.json").read_text())}
    if (run / "merge.json").is_file():
        cell["merge"] = diagnose(run, int(result["n_clusters"]))
    return cell


def markdown(page: dict) -> str:
    lines = [f"# {page['title']}", "", f"Made by `{page['command']}` on {page['machine']}.", "",
             "## Findings", "", page["findings"].strip(), "",
             "## The demo's numbers (NMI %, head 0)", "",
             "| setting | seed | " + " | ".join(h for _, h in COLUMNS) + " | verdict | demo time |",
             "|---|---|" + "---|" * len(COLUMNS) + "---|---|"]
    for r in page["runs"]:
        holds = "beat" if "together beat" in r["verdict"] else "NOT beat"
        lines.append(f"| {r['setting']} | {r['seed']} | "
                     + " | ".join(f"{r['nmi'][k]:.1f}" for k, _ in COLUMNS)
                     + f" | {holds} | {r['seconds']['total']:.0f} s |")
    merged = [r for r in page["runs"] if "merge" in r]
    if merged:
        names = list(merged[0]["merge"])
        lines += ["", "## The merge (`benchmarks/diagnose_merge.py`, primary head, NMI % "
                  "unless named)", "", "| setting | seed | " + " | ".join(names) + " |",
                  "|---|---|" + "---|" * len(names)]
        lines += [f"| {r['setting']} | {r['seed']} | "
                  + " | ".join(f"{r['merge'][n]:.1f}" for n in names) + " |" for r in merged]
    lines += ["", "## Printed verdicts", ""]
    lines += [f"- {r['setting']}, seed {r['seed']}: {r['verdict']}" for r in page["runs"]]
    lines += ["", "## The rule", "", *("> " + s if s else ">" for s in page["rule"].splitlines())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", nargs=3, action="append", required=True, metavar=("LABEL", "SEED", "DIR"))
    p.add_argument("--rule", type=Path, required=True)
    p.add_argument("--findings", type=Path, required=True)
    p.add_argument("--title", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--out", type=Path, default=Path(__file__).parent.parent / "docs" / "benchmarks")
    a = p.parse_args(argv)
    targets = [a.out / f"{a.name}.{ext}" for ext in ("json", "md")]
    if any(t.exists() for t in targets):
        raise SystemExit(f"{a.out / a.name}.json or .md exists: pick another --name")
    torch.set_num_threads(1)
    page = {"title": a.title, "command": "python benchmarks/demo_page.py " + " ".join(
                f"--run {label!r} {seed} {d}" for label, seed, d in a.run),
            "machine": f"{platform.machine()}, torch {torch.__version__}",
            "rule": a.rule.read_text(), "findings": a.findings.read_text(),
            "runs": [collect(label, int(seed), Path(d)) for label, seed, d in a.run]}
    a.out.mkdir(parents=True, exist_ok=True)
    targets[0].write_text(json.dumps(page, indent=1) + "\n")
    targets[1].write_text(markdown(page))
    print("wrote", *targets)


if __name__ == "__main__":
    main()
