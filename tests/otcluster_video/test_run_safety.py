"""Run folders that never swap or lose data, files that are never opened unless regular, clear
errors for bad numbers (issue 12, items 1, 4, 5, 6 and 7)."""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from otcluster_video import AVDataset, DecodeError, cli, load_manifest, load_preset, prepare, read_clip
from otcluster_video._preset import config_to_toml
from otcluster_video._probe import file_problem
from otcluster_video._run import csv_cell

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")


def _videos(synth_dir: Path, n: int = 3) -> list[Path]:
    return sorted(p for p in synth_dir.rglob("*.mp4") if "broken" not in p.name and
                  "truncated" not in p.name)[:n]


# -- item 1: prepare never replaces the data of a trained run --------------------------------


def test_prepare_into_a_trained_run_is_refused(synth_dir, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(config_to_toml(load_preset("cpu")))
    (run / "manifest.csv").write_text("the manifest the run was trained on\n")
    status = cli.main(["prepare", str(synth_dir), "--out", str(run), "--quiet"])
    assert status == 2
    err = capsys.readouterr().err
    assert "holds a training run" in err and "new --out" in err and "label --run" in err
    assert (run / "manifest.csv").read_text() == "the manifest the run was trained on\n"
    with pytest.raises(ValueError, match="holds a training run"):
        from otcluster_video.recipe import prepare as recipe_prepare

        recipe_prepare(synth_dir, run, progress=False)


def test_prepare_into_a_prepared_but_untrained_folder_is_allowed(synth_dir, tmp_path, capsys):
    out = tmp_path / "run"
    for _ in range(2):  # the grown-folder workflow before training: re-prepare in place
        assert cli.main(["prepare", str(synth_dir), "--out", str(out), "--quiet"]) == 0
    assert "usable videos" in capsys.readouterr().out


# -- item 4: FIFOs and link loops are reported, never opened ---------------------------------


@needs_fifo
def test_fifo_and_symlink_loop_are_reported_with_a_reason(synth_dir, tmp_path):
    src = tmp_path / "videos"
    (src / "cats").mkdir(parents=True)
    for v in _videos(synth_dir, 2):
        shutil.copy(v, src / "cats" / v.name)
    os.mkfifo(src / "cats" / "pipe.mp4")
    loop = src / "cats" / "loop.mp4"
    loop.symlink_to(loop)  # points to itself
    done: dict = {}
    worker = threading.Thread(
        target=lambda: done.update(report=prepare(src, tmp_path / "m" / "manifest.csv", progress=False)),
        daemon=True,
    )
    worker.start()
    worker.join(60)
    if worker.is_alive():  # opened the FIFO: unblock it, then fail
        with open(src / "cats" / "pipe.mp4", "wb"):
            pass
        pytest.fail("prepare opened the FIFO and blocked")
    report = done["report"]
    assert len(report.videos) == 2
    reasons = {Path(s.path).name: (s.reason, s.detail) for s in report.skipped}
    assert reasons["pipe.mp4"][0] == "not_a_file" and "FIFO" in reasons["pipe.mp4"][1]
    assert reasons["loop.mp4"][0] == "unreadable" and "loop" in reasons["loop.mp4"][1]
    with open(report.skipped_report, newline="") as f:
        assert {Path(r["path"]).name for r in csv.DictReader(f)} >= {"pipe.mp4", "loop.mp4"}


@needs_fifo
def test_a_fifo_listed_in_a_manifest_is_never_opened(prepared, cpu_config, tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    assert file_problem(fifo)[0] == "not_a_file"
    out: dict = {}

    def work() -> None:
        try:
            read_clip(fifo, 0.0, 4, 8.0)
        except DecodeError as err:
            out["error"] = err
        ds = AVDataset([dataclasses.replace(prepared.videos[0], path=str(fifo)),
                        *prepared.videos[1:3]], cpu_config, train=False, return_source=True)
        out["item"] = ds[0]

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():
        with open(fifo, "wb"):
            pass
        pytest.fail("a FIFO was opened and blocked")
    assert "not_a_file" in str(out["error"])
    assert out["item"]["index"] == 0 and out["item"]["source"] == 1


# -- item 5: relative manifest paths -----------------------------------------------------------


def test_relative_manifest_paths_resolve_against_the_manifest_folder(prepared, tmp_path, monkeypatch):
    folder = tmp_path / "data"
    (folder / "clips").mkdir(parents=True)
    video = Path(prepared.videos[0].path)
    shutil.copy(video, folder / "clips" / video.name)
    rows = [dataclasses.asdict(prepared.videos[0])]
    rows[0]["path"] = f"clips/{video.name}"
    with open(folder / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (info,) = load_manifest(Path("..") / "data" / "manifest.csv")
    assert Path(info.path).is_absolute()
    assert Path(info.path) == (folder / "clips" / video.name).resolve()
    assert Path(info.path).is_file()


# -- item 6: spreadsheet formulas -------------------------------------------------------------


@pytest.mark.parametrize("text", ["=1+1", "+cmd", "-2+3", "@SUM(1+1)", "\tx", "\rx"])
def test_csv_cells_that_look_like_formulas_are_escaped(text):
    assert csv_cell(text) == "'" + text


def test_csv_cells_that_are_safe_are_kept():
    assert [csv_cell(x) for x in ("cats", "/data/a.mp4", "", 3, 0.5)] == ["cats", "/data/a.mp4", "", 3, 0.5]


def test_manifest_escapes_formula_names_and_reads_them_back(synth_dir, tmp_path):
    """prepare writes the user's folder and file names into manifest.csv: a class folder named
    '=cmd' (or a file '@x.mp4') is escaped against spreadsheet formulas and read back as is."""
    src = tmp_path / "videos"
    shutil.copytree(synth_dir / "c00_hbars", src / "=cmd")
    first = sorted((src / "=cmd").iterdir())[0]
    first.rename(first.with_name("@x.mp4"))
    report = prepare(src, tmp_path / "run" / "manifest.csv", progress=False)
    rows = list(csv.DictReader((tmp_path / "run" / "manifest.csv").open(newline="")))
    assert rows and all(r["label"] == "'=cmd" for r in rows)
    assert all(not r["path"].startswith(("=", "+", "-", "@")) for r in rows)
    loaded = load_manifest(tmp_path / "run" / "manifest.csv")
    assert [v.label for v in loaded] == ["=cmd"] * len(rows)
    assert "@x.mp4" in {Path(v.path).name for v in loaded}
    assert [v.path for v in loaded] == [v.path for v in report.videos]
    assert all(Path(v.path).is_file() for v in loaded)


# -- item 7: non-finite numbers, cache entries of the wrong shape -----------------------------


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "+inf"])
def test_non_finite_override_is_refused_naming_the_key(tmp_path, capsys, value):
    (tmp_path / "videos").mkdir()
    status = cli.main(["prepare", str(tmp_path / "videos"), "--out", str(tmp_path / "run"),
                       "--set", f"clip.fps={value}", "--quiet"])
    assert status == 2
    err = capsys.readouterr().err
    assert "clip.fps" in err and "finite" in err
    with pytest.raises(ValueError, match="clip.fps must be a finite number"):
        load_preset("cpu", {"clip.fps": float(value)})


def test_non_finite_numbers_in_a_preset_file_are_refused(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[training]\nlam = inf\n")
    with pytest.raises(ValueError, match="training.lam must be a finite number"):
        load_preset(path)
    path.write_text("[visual]\nmean = [0.5, nan, 0.5]\n")
    with pytest.raises(ValueError, match=r"visual.mean\[1\] must be a finite number"):
        load_preset(path)


def test_cache_entry_of_the_wrong_shape_is_a_miss(prepared, cpu_config, tmp_path, caplog):
    plain = AVDataset(prepared.videos, cpu_config, train=False)
    cached = AVDataset(prepared.videos, cpu_config, train=False, cache_dir=tmp_path)
    first = cached[1]
    (frames_file,) = [p for p in tmp_path.rglob("*.frames.npy")]
    np.save(frames_file, np.zeros((2, 5, 7), dtype=np.float64))  # another shape and dtype
    again = AVDataset(prepared.videos, cpu_config, train=False, cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="otcluster_video"):
        item = again[1]
    assert item["index"] == 1
    assert torch.equal(item["video"], first["video"]) and torch.equal(item["video"], plain[1]["video"])
    assert any(str(frames_file) in r.getMessage() for r in caplog.records)
    assert np.load(frames_file).dtype == np.uint8  # rebuilt
