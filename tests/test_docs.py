"""Every ```python block of README.md and docs/*.md runs, and docs/api.md is up to date.

Blocks of one file run in order in one namespace (later blocks may use earlier names), in a
fresh interpreter whose working directory is a temporary folder. Blocks fenced as
```python no-run (or ```text, ```bash, ...) are not run. Each file is a separate test, so a
failure names the page and the block.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of the runnable python blocks of a Markdown text."""
    out = []
    for m in FENCE.finditer(text):
        info = m.group(1).strip().split()
        if not info or info[0] not in ("python", "py") or "no-run" in info[1:]:
            continue
        line = text.count("\n", 0, m.start()) + 2
        out.append((line, m.group(2)))
    return out


def test_fence_parser():
    text = ("intro\n```python\na = 1\n```\n```python no-run\nraise SystemExit\n```\n"
            "```bash\nmake test\n```\n```text\nx\n```\n```py\nb = a + 1\n```\n")
    blocks = python_blocks(text)
    assert [code for _, code in blocks] == ["a = 1\n", "b = a + 1\n"]
    assert blocks[0][0] == 3


# Runs in a fresh interpreter per page: examples cannot leak state (seeds, warnings filters,
# monkeypatches) into each other or into the test process, and the package is imported the way a
# user imports it (pytest puts tests/ on sys.path for top-level test files, and tests/otcluster/,
# a folder without __init__.py, would then shadow the real package as a namespace package).
_RUNNER = r"""
import json, sys, traceback, warnings
blocks = json.load(open(sys.argv[1]))
ns = {"__name__": "__docs__"}
warnings.simplefilter("error", DeprecationWarning)  # examples must not use deprecated APIs
for line, code in blocks:
    try:
        exec(compile(code, f"{sys.argv[2]}:{line}", "exec"), ns)
    except BaseException:
        print(f"\nDOC BLOCK FAILED: {sys.argv[2]}, block starting at line {line}", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
"""


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_code_blocks_run(page: Path, tmp_path):
    blocks = python_blocks(page.read_text())
    if not blocks:
        pytest.skip(f"{page.name} has no python blocks")
    spec = tmp_path / "blocks.json"
    spec.write_text(json.dumps(blocks))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    proc = subprocess.run([sys.executable, "-c", _RUNNER, str(spec), page.relative_to(ROOT).as_posix()],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_api_reference_up_to_date(tmp_path):
    """docs/api.md (otcluster) and docs/api_video.md (otcluster_video) are what docs/gen_api.py
    generates now (regenerate them: python docs/gen_api.py)."""
    subprocess.run([sys.executable, str(ROOT / "docs" / "gen_api.py"), "--out-dir", str(tmp_path)],
                   check=True, cwd=tmp_path, timeout=300)
    pages = sorted(p.name for p in tmp_path.glob("api*.md"))
    assert pages == ["api.md", "api_video.md"]
    for page in pages:
        committed = (ROOT / "docs" / page).read_text()
        assert (tmp_path / page).read_text() == committed, \
            f"docs/{page} is stale: run `python docs/gen_api.py`"
    video = (tmp_path / "api_video.md").read_text()
    import otcluster_video

    for name in otcluster_video.__all__:  # every public name of the video package has an entry
        assert f"### `{name}`" in video, name


def test_doc_links_resolve():
    """Relative links between the Markdown pages point to files that exist."""
    bad = []
    for page in [*PAGES, *sorted((ROOT / "docs" / "benchmarks").glob("*.md"))]:
        text = FENCE.sub("", page.read_text())
        text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                bad.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not bad, "broken links:\n" + "\n".join(bad)
