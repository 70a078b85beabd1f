from __future__ import annotations

import csv
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from otcluster_video import write_explorer

EVIL = "<script>alert(1)</script>.mp4"  # a folder "<script>alert(1)<" + file "script>.mp4"
EVIL_IMG = "<img src=x onerror=alert(2)>.mp4"


class _Page(HTMLParser):
    """Collects text, tags and local asset URLs of an HTML document."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []
        self.srcs: list[str] = []
        self.sections: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag in ("img", "audio") and attrs.get("src"):
            self.srcs.append(attrs["src"])
        if tag == "section":
            self.sections.append(attrs.get("id", ""))

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


@pytest.fixture(scope="module")
def items(synth_dir, tmp_path_factory):
    """Clusters of sizes 4, 3, 2 and 1; two members have hostile names, one is broken."""
    root = tmp_path_factory.mktemp("explore")
    videos = sorted(synth_dir.rglob("0*.mp4"))
    evil, evil_img = root / EVIL, root / EVIL_IMG
    evil.parent.mkdir()
    shutil.copy(videos[0], evil)
    shutil.copy(videos[1], evil_img)
    broken = next(synth_dir.rglob("*not_video.mp4"))
    labels = [7, 7, 7, 7, 3, 3, 3, 12, 12, 5]
    paths = [evil, evil_img, *videos[2:8], broken, videos[8]]
    return list(zip(paths, labels))


@pytest.fixture(scope="module")
def page(items, tmp_path_factory):
    out = tmp_path_factory.mktemp("page") / "explorer.html"
    truth = {str(p): p.parent.name for p, _ in items}
    return write_explorer(out, items, title="Test <clusters>", truth=truth, progress=False)


def test_every_cluster_sorted_by_size(page):
    html = page.read_text()
    sizes = [int(s) for s in re.findall(r'<span class="size">(\d+) video', html)]
    assert sizes == [4, 3, 2, 1]
    order = re.findall(r"<h2>Cluster (\S+) ", html)
    assert order == ["7", "3", "12", "5"]
    assert "Test &lt;clusters&gt;" in html


def test_names_are_escaped_and_there_is_no_script(page):
    html = page.read_text()
    parsed = _parse(html)
    assert "script" not in parsed.tags
    assert EVIL in "".join(parsed.text) and EVIL_IMG in "".join(parsed.text)  # shown as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.mp4" in html
    assert all(not s.startswith("x") for s in parsed.srcs)  # no injected <img src=x>


def test_assets_exist_beside_the_page(page):
    parsed = _parse(page.read_text())
    assert sum(s.endswith(".jpg") for s in parsed.srcs) == 9  # 10 members, one undecodable
    assert sum(s.endswith(".wav") for s in parsed.srcs) == 9
    for src in parsed.srcs:
        assert not src.startswith(("/", "http", "file:"))
        assert (page.parent / unquote(src)).is_file(), src
    assert "no preview" in page.read_text()


def test_csv_input_and_member_limit(items, tmp_path):
    labels_csv = tmp_path / "labels.csv"
    with labels_csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "cluster"])
        writer.writerows((str(p), lab) for p, lab in items)
    out = write_explorer(tmp_path / "x.html", labels_csv, max_members=2, progress=False)
    html = out.read_text()
    assert html.count('<figure class="member">') == 2 + 2 + 2 + 1
    assert "+ 2 more" in html and "+ 1 more" in html


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _load_in_chromium(html_file: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """DOM after load, and console messages logged by headless Chromium."""
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        html_file.resolve().as_uri(),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return run.stdout, console


@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (make browser)")
def test_page_in_headless_chromium(page, tmp_path):
    # the harness does catch console errors and executed scripts
    control = tmp_path / "control.html"
    control.write_text("<!DOCTYPE html><p>x</p><script>console.error('boom'); nope();</script>")
    _, console = _load_in_chromium(control, tmp_path)
    assert any("boom" in line for line in console) and any("nope" in line for line in console)

    dom, console = _load_in_chromium(page, tmp_path)
    assert console == []
    parsed = _parse(dom)
    assert parsed.sections == [f"cluster-{i}" for i in range(4)]
    assert "script" not in parsed.tags
    assert EVIL in "".join(parsed.text) and EVIL_IMG in "".join(parsed.text)
    assert all(not s.startswith("x") for s in parsed.srcs)
    assert parsed.tags.count("audio") == 9 and parsed.tags.count("img") == 9 + 1  # + size chart
