from __future__ import annotations

import csv
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

import otcluster_video._probe as probe_mod
from otcluster_video import ProbeError, index_videos, load_manifest, prepare, probe

N_VIDEOS, N_CLASSES, N_BROKEN = 9, 3, 4  # as in conftest.synth_dir


def test_synth_sizes_match(synth_spec):
    assert synth_spec == {"n_videos": N_VIDEOS, "n_classes": N_CLASSES, "n_broken": N_BROKEN}


def _truth(root: Path) -> dict[str, str]:
    with (root / "ground_truth.csv").open() as f:
        return {str((root / r["path"]).resolve()): r["label"] for r in csv.DictReader(f)}


def test_index_folder_labels_are_parent_folders(synth_dir):
    entries = index_videos(synth_dir)
    assert len(entries) == N_VIDEOS + N_BROKEN
    assert {label for _, label in entries} == set(_truth(synth_dir).values())
    assert all(p.parent.name == label for p, label in entries)


def test_index_csv_resolves_relative_paths(synth_dir):
    entries = index_videos(synth_dir / "ground_truth.csv")
    assert dict((str(p), lab) for p, lab in entries) == _truth(synth_dir)
    assert all(p.is_file() for p, _ in entries)


def test_index_rejects_csv_without_path_column(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("file,label\na.mp4,b\n")
    with pytest.raises(ValueError, match="'path' column"):
        index_videos(bad)


def test_probe_reads_streams(synth_dir):
    path = next(iter(_truth(synth_dir)))
    info = probe(path, label="x")
    assert (info.width, info.height, info.fps, info.n_frames) == (32, 32, 16.0, 24)
    assert info.duration == pytest.approx(1.5, abs=1e-6)
    assert info.has_audio and info.sample_rate == 16000
    assert info.audio_duration == pytest.approx(1.5, abs=0.1)
    assert info.label == "x"


def test_prepare_skips_and_reports_every_broken_file(synth_dir, prepared):
    truth = _truth(synth_dir)
    assert {v.path for v in prepared.videos} == set(truth)
    assert all(v.label == truth[v.path] for v in prepared.videos)
    assert prepared.counts == {"truncated": 1, "no_audio": 1, "corrupt": 1, "too_short": 1}
    reasons = {Path(s.path).name.split("_", 2)[2]: s.reason for s in prepared.skipped}
    assert reasons == {
        "truncated.mp4": "truncated",
        "no_audio.mp4": "no_audio",
        "not_video.mp4": "corrupt",
        "too_short.mp4": "too_short",
    }
    with prepared.skipped_report.open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["reason"] for r in rows) == sorted(reasons.values())
    assert prepared.summary().startswith(f"{N_VIDEOS} usable videos; skipped {N_BROKEN}")


def test_manifest_round_trip(prepared, tmp_path):
    assert load_manifest(prepared.manifest) == prepared.videos
    one_class = Path(prepared.videos[0].path).parent
    jsonl = prepare(one_class, tmp_path / "m.jsonl", progress=False)
    assert load_manifest(jsonl.manifest) == jsonl.videos
    assert len(jsonl.videos) == N_VIDEOS // N_CLASSES  # one class folder


def test_prepare_probes_each_file_once(synth_dir, tmp_path, monkeypatch):
    root = tmp_path / "data"
    shutil.copytree(synth_dir, root)
    first = prepare(root, tmp_path / "m.csv", progress=False)
    assert first.n_probed == N_VIDEOS + N_BROKEN

    def boom(*args, **kwargs):
        raise AssertionError("probe called although the cache is fresh")

    monkeypatch.setattr(probe_mod, "probe", boom)
    second = prepare(root, tmp_path / "m.csv", progress=False)
    assert second.n_probed == 0
    assert second.videos == first.videos and second.skipped == first.skipped

    # a changed file is probed again (here: the fake probe fails, and the file is skipped)
    def fails(path):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(probe_mod, "probe", fails)
    changed = first.videos[0].path
    Path(changed).write_bytes(Path(changed).read_bytes() + b"\0")
    third = prepare(root, tmp_path / "m.csv", progress=False)
    assert third.n_probed == 1
    assert len(third.videos) == N_VIDEOS - 1
    assert [s.reason for s in third.skipped if s.path == changed] == ["corrupt"]


def test_probe_detects_truncation_with_index_at_front(tmp_path):
    """moov before mdat (faststart): the file opens, but its packets stop early."""
    path = tmp_path / "fast.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=10)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        rng = np.random.default_rng(0)
        for i in range(40):  # noise: every frame is big, so cutting the file drops many
            img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    assert probe(path).duration == pytest.approx(4.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ProbeError) as err:
        probe(path)
    assert err.value.reason == "truncated"


def test_probe_missing_file(tmp_path):
    with pytest.raises(ProbeError, match="missing"):
        probe(tmp_path / "nope.mp4")


def test_skip_report_escapes_names_a_spreadsheet_would_run(tmp_path):
    """File and folder names go into manifest.skipped.csv: one starting with = + - @ gets a
    leading quote there, as in labels.csv (spreadsheet formula injection)."""
    from otcluster_video import prepare

    folder = tmp_path / "@SUM(1+1)"
    folder.mkdir()
    (folder / "=cmd.mp4").write_bytes(b"not a video")
    report = prepare(tmp_path, tmp_path / "out" / "manifest.csv", progress=False)
    assert [s.reason for s in report.skipped] == ["corrupt"]
    with report.skipped_report.open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["label"] == "'@SUM(1+1)"
    assert not row["path"].startswith(("=", "+", "-", "@"))
