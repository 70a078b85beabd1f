"""Cold start: whole-process wall time of importing the packages and of ``otcluster-video --help``.

Each command runs in a fresh interpreter (``subprocess``), as a user meets it; the table gives the
best and the median of ``--repeats`` runs after one untimed warm-up run (file-system cache), and
the overhead of each import over ``import torch`` (which every use of the core pays anyway).

The CPU time of each process (user + system, from ``getrusage``) is reported beside the wall
time: on a loaded machine it moves much less than the wall time, so it shows whether a slow
wall time is the program's or the neighbours'.

Targets (issue 12): ``import otcluster`` at most 0.3 s over ``import torch``; ``otcluster-video
--help`` at most 1 s in all. They are printed as PASS / FAIL; the exit status is 0 unless
``--strict`` is given. Best-of timings are used for the verdicts: on a shared machine the other
runs measure the neighbours.

Usage: python benchmarks/bench_startup.py [--repeats 7] [--json out.json] [--strict] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_CORE_OVER_TORCH_S = 0.3  # import otcluster, minus import torch
TARGET_HELP_S = 1.0  # otcluster-video --help, whole process


def _help_command() -> tuple[list[str], str]:
    """The installed console script beside this interpreter, else the CLI module."""
    script = Path(sys.executable).parent / "otcluster-video"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script), "--help"], "otcluster-video --help"
    return [sys.executable, "-m", "otcluster_video.cli", "--help"], "python -m otcluster_video.cli --help"


def commands() -> list[tuple[str, list[str]]]:
    py = sys.executable
    help_cmd, help_name = _help_command()
    return [
        ("python -c pass", [py, "-c", "pass"]),
        ("import torch", [py, "-c", "import torch"]),
        ("import otcluster", [py, "-c", "import otcluster"]),
        ("import otcluster_video", [py, "-c", "import otcluster_video"]),
        (help_name, help_cmd),
    ]


def time_command(cmd: list[str], repeats: int, warmup: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    runs, cpu = [], []
    for i in range(repeats + int(warmup)):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, timeout=600)
        dt = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # runs are sequential: this child
        if proc.returncode != 0:
            return {"failed": f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"}
        if i >= int(warmup):
            runs.append(dt)
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {"best_s": min(runs), "median_s": statistics.median(runs), "runs_s": runs,
            "cpu_best_s": min(cpu)}


def verdicts(rows: dict[str, dict]) -> list[dict]:
    """PASS / FAIL of the two targets (best-of times)."""
    out = []
    torch_t = rows["import torch"].get("best_s")
    core_t = rows["import otcluster"].get("best_s")
    if torch_t is not None and core_t is not None:
        over = core_t - torch_t
        out.append({"target": f"import otcluster over import torch <= {TARGET_CORE_OVER_TORCH_S} s",
                    "measured_s": over, "pass": over <= TARGET_CORE_OVER_TORCH_S})
    help_name = next(name for name in rows if "--help" in name)
    help_t = rows[help_name].get("best_s")
    if help_t is not None:
        out.append({"target": f"{help_name} <= {TARGET_HELP_S} s", "measured_s": help_t,
                    "pass": help_t <= TARGET_HELP_S})
    return out


def format_table(rows: dict[str, dict], checks: list[dict]) -> str:
    torch_t = rows["import torch"].get("best_s")
    lines = [f"{'command':<32} {'best':>8} {'median':>8} {'over torch':>11} {'CPU best':>9}"]
    for name, r in rows.items():
        if "failed" in r:
            lines.append(f"{name:<32} FAILED {r['failed']}")
            continue
        # only the core imports torch: the video package and --help are lazy (absolute times)
        over = f"{r['best_s'] - torch_t:+.3f} s" if name == "import otcluster" and torch_t else ""
        lines.append(f"{name:<32} {r['best_s']:>6.3f} s {r['median_s']:>6.3f} s {over:>11} "
                     f"{r['cpu_best_s']:>7.3f} s")
    core = rows["import otcluster"]
    if torch_t is not None and "cpu_best_s" in core:
        lines.append(f"{'':<32} import otcluster over import torch in CPU time: "
                     f"{core['cpu_best_s'] - rows['import torch']['cpu_best_s']:+.3f} s")
    lines.append("")
    for c in checks:
        lines.append(f"{'PASS' if c['pass'] else 'FAIL'}  {c['target']}: {c['measured_s']:.3f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per command (best is used)")
    ap.add_argument("--quick", action="store_true", help="one run per command, no warm-up (CI)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = ap.parse_args(argv)
    repeats, warmup = (1, False) if args.quick else (max(1, args.repeats), True)

    rows = {name: time_command(cmd, repeats, warmup) for name, cmd in commands()}
    checks = verdicts(rows)
    print(f"cold start, best of {repeats}{' after a warm-up run' if warmup else ''} "
          f"({platform.python_implementation()} {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(format_table(rows, checks))
    if args.json is not None:
        args.json.write_text(json.dumps({
            "python": sys.version, "machine": platform.machine(), "cpus": os.cpu_count(),
            "load_avg": os.getloadavg()[0], "repeats": repeats, "warmup": warmup,
            "commands": rows, "checks": checks,
        }, indent=1))
    failed = any("failed" in r for r in rows.values())
    return 1 if failed or (args.strict and not all(c["pass"] for c in checks)) else 0


if __name__ == "__main__":
    sys.exit(main())
