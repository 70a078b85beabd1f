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
    assert html.count('<figure class="member') == 2 + 2 + 2 + 1
    assert "+ 2 more" in html and "+ 1 more" in html


# --- which members are shown (missing files: "no preview", fast) ----------------------------------

def _shown(html: str) -> list[list[str]]:
    """Member names shown per cluster, in page order."""
    return [re.findall(r'<span class="name">([^<]*)</span>', sec)
            for sec in html.split('<section class="cluster"')[1:]]


def _fake(tmp_path: Path, n: int) -> list[Path]:
    return [tmp_path / "videos" / f"v{i:02d}.mp4" for i in range(n)]  # never created


def test_titles_do_not_repeat_the_word_cluster(tmp_path):
    paths = _fake(tmp_path, 3)
    items = [(paths[0], "cluster 0"), (paths[1], "cluster 0"), (paths[2], "4")]
    html = write_explorer(tmp_path / "p.html", items, progress=False).read_text()
    assert re.findall(r"<h2>(.*?) <span", html) == ["Cluster 0", "Cluster 4"]
    assert "cluster cluster" not in html.lower()


def test_most_confident_members_first_then_a_random_sample(tmp_path):
    paths = _fake(tmp_path, 20)
    conf = {str(p): 0.2 + 0.01 * i for i, p in enumerate(paths)}  # the last files are surest
    items = [(p, 1) for p in paths]
    out = write_explorer(tmp_path / "p.html", items, confidence=conf, max_members=6,
                         progress=False)
    html = out.read_text()
    (shown,) = _shown(html)
    assert shown[:3] == ["v19.mp4", "v18.mp4", "v17.mp4"]  # half the slots: by confidence
    assert len(shown) == 6 and len(set(shown)) == 6
    assert not set(shown[3:]) & {"v19.mp4", "v18.mp4", "v17.mp4"}
    assert "confidence 0.39" in html and "random sample" in html and "+ 14 more" in html
    # the sample is seeded: same seed, same page; other seeds draw other members
    again = write_explorer(tmp_path / "q.html", items, confidence=conf, max_members=6,
                           progress=False).read_text()
    assert _shown(again) == [shown]
    samples = {tuple(_shown(write_explorer(tmp_path / "r.html", items, confidence=conf,
                                           max_members=6, seed=s, progress=False)
                            .read_text())[0][3:]) for s in range(5)}
    assert len(samples) > 1


def test_without_confidence_large_clusters_show_a_random_sample_not_file_order(tmp_path):
    paths = _fake(tmp_path, 30)
    items = [(p, "a") for p in paths] + [(tmp_path / "small.mp4", "b")]
    firsts = set()
    for seed in range(4):
        html = write_explorer(tmp_path / "p.html", items, max_members=5, seed=seed,
                              progress=False).read_text()
        big, small = _shown(html)
        assert len(set(big)) == 5 and small == ["small.mp4"]
        firsts.add(tuple(big))
        assert "random sample of the cluster" in html and "confidence" not in html
    assert tuple(f"v{i:02d}.mp4" for i in range(5)) not in firsts or len(firsts) > 1
    assert len(firsts) > 1


def test_csv_confidence_column_and_status(tmp_path):
    paths = _fake(tmp_path, 8)
    labels_csv = tmp_path / "labels.csv"
    with labels_csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "confidence", "status"])
        for i, p in enumerate(paths):
            writer.writerow([p.relative_to(tmp_path), 0, f"{i / 10:.4f}", "ok"])
        writer.writerow(["videos/broken.mp4", "", "", "decode_failed"])
    html = write_explorer(tmp_path / "p.html", labels_csv, max_members=4,
                          progress=False).read_text()
    (shown,) = _shown(html)
    assert shown[:2] == ["v07.mp4", "v06.mp4"] and "broken" not in html
    assert "8 videos in 1 clusters" in html


def test_bad_confidences_are_refused(tmp_path):
    paths = _fake(tmp_path, 2)
    items = [(p, 0) for p in paths]
    with pytest.raises(ValueError, match="finite"):
        write_explorer(tmp_path / "p.html", items, confidence={str(paths[0]): float("nan")},
                       progress=False)
    with pytest.raises(ValueError, match="number"):
        write_explorer(tmp_path / "p.html", items, confidence={str(paths[0]): "high"},
                       progress=False)
    bad_csv = tmp_path / "labels.csv"
    bad_csv.write_text("path,label,confidence\nvideos/v00.mp4,0,inf\n")
    with pytest.raises(ValueError, match=r"labels.csv, line 2: confidence must be finite"):
        write_explorer(tmp_path / "p.html", bad_csv, progress=False)
    with pytest.raises(ValueError, match="own 'confidence' column"):
        write_explorer(tmp_path / "p.html", bad_csv, confidence={}, progress=False)


# --- the assets folder: only what the explorer wrote is ever removed ------------------------------

def test_a_users_folder_named_like_the_assets_is_never_touched(tmp_path):
    user = tmp_path / "report_files"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    items = [(tmp_path / "v.mp4", 0)]
    with pytest.raises(FileExistsError, match="not written by the explorer"):
        write_explorer(tmp_path / "report.html", items, progress=False)
    assert (user / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "report.html").exists()


def test_rerun_replaces_its_own_assets_and_keeps_other_files(items, tmp_path):
    out = tmp_path / "x.html"
    write_explorer(out, items[:4], progress=False)
    assets = tmp_path / "x_files"
    first = {f.name for f in assets.iterdir()}
    assert "c0000_003.jpg" in first and "sizes.png" in first
    (assets / "mine.txt").write_text("keep me")
    write_explorer(out, items[:1], progress=False)  # fewer members: stale previews go
    names = {f.name for f in assets.iterdir()}
    assert "c0000_003.jpg" not in names and "c0000_000.jpg" in names
    assert (assets / "mine.txt").read_text() == "keep me"


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


def test_csv_cells_escaped_against_formulas_are_read_back(tmp_path):
    """labels.csv writes '@x' as "'@x" (spreadsheet formula injection); the explorer reads the
    file and the cluster name back as written, not with the quote."""
    from otcluster_video._run import csv_cell

    labels_csv = tmp_path / "labels.csv"
    with labels_csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerow([csv_cell("@odd.mp4"), csv_cell("=SUM(1+1)")])
        writer.writerow([csv_cell("-dash.mp4"), csv_cell("=SUM(1+1)")])
    html = write_explorer(tmp_path / "p.html", labels_csv, progress=False).read_text()
    names = [n for cluster in _shown(html) for n in cluster]
    assert sorted(names) == ["-dash.mp4", "@odd.mp4"]
    assert "Cluster =SUM(1+1)" in html and "&#39;=SUM" not in html and "'=SUM" not in html
