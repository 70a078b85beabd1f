"""The whole recipe through the command line on a tiny synthetic dataset, with the real trainer.

synth (with broken files) -> prepare (broken ones counted) -> train in a subprocess, killed
after its first checkpoint and resumed -> select (against a second seed) -> label (training and
new videos) -> evaluate -> explore -> degrade -> retrieval. Tiny encoders and clips keep it to a
minute or two on 2 cores.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from otcluster_video import cli, load_preset, make_synthetic_dataset
from otcluster_video.recipe import config_to_toml

pytestmark = pytest.mark.slow

N_VIDEOS, N_CLASSES, N_BROKEN, EPOCHS = 12, 3, 4, 40

TINY = {
    "clip.n_frames": 4,
    "clip.fps": 4.0,
    "audio.n_mels": 16,
    "visual.resize": 18,
    "visual.scale_jitter": [16, 20],
    "visual.crop": 16,
    "encoder.video.widths": [4, 8, 8, 8],
    "encoder.audio.widths": [4, 8, 8, 8],
    "heads.n_heads": 2,
    "heads.n_clusters": N_CLASSES,
    "heads.hidden_dim": 16,
    "heads.head_groups": 2,
    "training.epochs": EPOCHS,
    "training.batch_size": 4,
    "training.warmup_epochs": 1,
    "clustering.n_clusterings": 6,
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    status = cli.main(
        [
            "synth",
            str(root / "videos"),
            "--n-videos",
            str(N_VIDEOS),
            "--classes",
            str(N_CLASSES),
            "--broken",
            str(N_BROKEN),
            "--seconds",
            "1.5",
            "--size",
            "32",
        ]
    )
    assert status == 0
    preset = root / "tiny.toml"
    config = load_preset("cpu", {**TINY, "data.cache_dir": str(root / "cache")})
    preset.write_text(config_to_toml(config))
    return root


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "otcluster_video.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_prepare_counts_broken_files(workspace, capsys):
    assert cli.main(["prepare", str(workspace / "videos"), "--out", str(workspace / "prep"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{N_VIDEOS} usable videos; skipped {N_BROKEN}" in out
    with open(workspace / "prep" / "manifest.skipped.csv", newline="") as f:
        skipped = list(csv.DictReader(f))
    assert len(skipped) == N_BROKEN
    assert all(row["reason"] for row in skipped)


@pytest.fixture(scope="module")
def run(workspace):
    """Train in a subprocess, kill it after the first checkpoint, resume to the end."""
    run_dir = workspace / "run"
    ckpt = run_dir / "checkpoints" / "last.pt"
    args = [
        "train",
        "--data",
        str(workspace / "videos"),
        "--out",
        str(run_dir),
        "--preset",
        str(workspace / "tiny.toml"),
        "--device",
        "cpu",
        "--quiet",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "otcluster_video.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while not ckpt.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert ckpt.is_file(), f"no checkpoint written:\n{out}\n{err}"
    state = torch.load(ckpt, weights_only=True)
    killed_at = int(state["epoch"])
    assert 1 <= killed_at < EPOCHS, "training was not interrupted before its end"
    assert proc.returncode == -signal.SIGKILL
    # history.jsonl and train.log grew as training went (not written at the end)
    seen = []
    for line in (run_dir / "history.jsonl").read_text().splitlines():
        try:
            seen.append(json.loads(line))
        except json.JSONDecodeError:  # the line being written when the process was killed
            pass
    assert killed_at in [h["epoch"] for h in seen if h["event"] == "epoch"]
    assert any(h["event"] == "clustering" for h in seen)
    log = (run_dir / "train.log").read_text()
    assert "epoch 1: loss" in log and re.search(r"clustering \d+ at step \d+", log)

    res = _cli(*args[:-1])  # with progress output, to see the resume message
    assert res.returncode == 0, res.stderr
    assert "resuming from" in res.stdout
    state = torch.load(ckpt, weights_only=True)
    assert int(state["epoch"]) == EPOCHS
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    epochs = [h["epoch"] for h in history if h["event"] == "epoch"]
    assert epochs == list(range(1, EPOCHS + 1))  # nothing repeated, nothing lost
    assert sum(h["event"] == "clustering" for h in history) >= 2
    assert (run_dir / "train.log").is_file()
    return run_dir


def test_finished_run_returns_at_once(run, workspace):
    res = _cli(
        "train", "--out", str(run), "--preset", str(workspace / "tiny.toml"), "--device", "cpu", "--quiet"
    )
    assert res.returncode == 0, res.stderr
    assert f"trained {EPOCHS} epochs" in res.stdout


def test_resume_with_another_configuration_is_refused(run, workspace, capsys):
    status = cli.main(
        [
            "train",
            "--out",
            str(run),
            "--preset",
            str(workspace / "tiny.toml"),
            "--set",
            "heads.n_clusters=5",
            "--quiet",
        ]
    )
    assert status == 2
    assert "heads.n_clusters" in capsys.readouterr().err


def test_label_training_videos(run, capsys):
    assert cli.main(["label", "--run", str(run), "--device", "cpu", "--quiet"]) == 0
    with open(run / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N_VIDEOS
    assert {"path", "label", "confidence", "label_h0", "confidence_h1", "given_label", "status"} <= set(
        rows[0]
    )
    for row in rows:
        assert row["status"] == "ok"
        assert 0 <= int(row["label"]) < N_CLASSES
        assert 0.0 < float(row["confidence"]) <= 1.0
        assert Path(row["path"]).is_file()


def test_label_weighs_the_streams_as_the_configuration_says(run, workspace):
    """cpu preset: each stream (per head) by its heads' confidence; "training": the weights
    it was trained with (the preset's stability weights). Checked against an independent
    computation from the heads' log-probabilities."""
    import math

    from otcluster_video.commands import _inference

    loaded = _inference.load_run(run, "cpu")
    assert loaded.config.clustering.label_weights == "confidence"
    feats = _inference.extract(loaded, _inference.eval_dataset(loaded.videos, loaded.config))
    lp = _inference.heads_log_probs(loaded, feats.z)
    h = loaded.primary

    def confidence(m):
        p = lp[m][h].double()
        return max(1 - float(-(p.exp() * p).sum(-1).mean()) / math.log(N_CLASSES), 0.0)

    cv, ca = confidence("video"), confidence("audio")
    wv, wa = (float(w) for w in loaded.model.modality_weights)  # the stability weights
    assert abs(wv - wa) > 1e-3, "the tiny run trained with equal weights: nothing to tell apart"
    weighted = (cv * lp["video"][h].double() + ca * lp["audio"][h].double()).argmax(-1)
    trained = (wv * lp["video"][h].double() + wa * lp["audio"][h].double()).argmax(-1)
    for mode, expected in (("confidence", weighted), ("training", trained)):
        other = workspace / f"run_{mode}"
        shutil.copytree(run, other)
        cfg = other / "config.toml"
        text = cfg.read_text()
        assert 'label_weights = "confidence"' in text
        cfg.write_text(text.replace('label_weights = "confidence"', f'label_weights = "{mode}"'))
        assert cli.main(["label", "--run", str(other), "--device", "cpu", "--quiet"]) == 0
        with open(other / "labels.csv", newline="") as f:
            got = [int(r["label"]) for r in csv.DictReader(f)]
        assert got == expected.tolist(), mode
        # the weights themselves (on this tiny run both give the same labels as the plain mean)
        relabel = _inference.load_run(other, "cpu")
        given = _inference.stream_weights(relabel, lp)
        if mode == "confidence":
            assert given == "confidence"
        else:
            assert given == pytest.approx([wv, wa])


def test_label_new_videos(run, workspace):
    new = workspace / "new_videos"
    make_synthetic_dataset(new, n_videos=3, n_classes=N_CLASSES, seconds=1.5, size=32, seed=7, broken=1)
    out = workspace / "new_labels.csv"
    assert (
        cli.main(
            ["label", "--run", str(run), "--data", str(new), "--out", str(out), "--device", "cpu", "--quiet"]
        )
        == 0
    )
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3  # the broken file is skipped by prepare
    assert all(r["label"] != "" for r in rows)


def test_label_escapes_spreadsheet_formulas_in_folder_names(run, workspace):
    videos = sorted(p for p in (workspace / "videos").rglob("*.mp4") if not p.name.startswith("broken"))
    new = workspace / "formula_videos"
    for name, video in zip(("@SUM(1+1)", "=cmd"), videos):
        (new / name).mkdir(parents=True)
        shutil.copy(video, new / name / video.name)
    out = workspace / "formula_labels.csv"
    argv = ["label", "--run", str(run), "--data", str(new), "--out", str(out), "--device", "cpu", "--quiet"]
    assert cli.main(argv) == 0
    with open(out, newline="") as f:
        given = sorted(r["given_label"] for r in csv.DictReader(f))
    assert given == ["'=cmd", "'@SUM(1+1)"]


def test_select_ranks_runs_of_the_same_videos_by_the_agreement_of_their_streams(run, workspace, capsys):
    from sklearn.metrics import normalized_mutual_info_score

    from otcluster_video.commands import _inference
    from otcluster_video.commands.select import select_runs

    other = workspace / "run_seed1"
    # this run also weighs the streams by their stability, on 8 of the 12 videos, both clips
    # of a video at its middle, measured at every second clustering
    stable = ['clustering.modality_weights="stability"', "clustering.stability_max_samples=8",
              "clustering.stability_position=0.5", "clustering.stability_every=2"]
    argv = ["train", "--data", str(run / "manifest.csv"), "--out", str(other), "--preset",
            str(workspace / "tiny.toml"), "--epochs", "3", "--set", "training.seed=1", "--device", "cpu",
            "--quiet", *(a for o in stable for a in ("--set", o))]
    assert cli.main(argv) == 0
    history = [json.loads(line) for line in (other / "history.jsonl").read_text().splitlines()]
    weights = [h["modality_weights"] for h in history if h["event"] == "clustering"]
    assert weights and all(sum(w.values()) == pytest.approx(1.0) for w in weights)
    ranked = select_runs([run, other], progress=False)
    assert {r.run for r in ranked} == {run, other}
    assert ranked[0].agreement >= ranked[1].agreement
    for r in ranked:  # the same number, computed independently
        loaded = _inference.load_run(r.run, "cpu")
        feats = _inference.extract(loaded, _inference.eval_dataset(loaded.videos, loaded.config))
        lp = _inference.heads_log_probs(loaded, feats.z)
        video, audio = (lp[m][loaded.primary].argmax(-1).numpy() for m in ("video", "audio"))
        collapsed = min(len(set(video.tolist())), len(set(audio.tolist()))) == 1
        expected = 0.0 if collapsed else normalized_mutual_info_score(video, audio)
        assert r.agreement == pytest.approx(expected, abs=1e-9)
        assert (r.head, r.n_videos) == (loaded.primary, N_VIDEOS)
    assert {r.seed for r in ranked} == {0, 1}

    capsys.readouterr()
    assert cli.main(["select", str(other), str(run), "--device", "cpu", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["agreement", "head", "seed", "videos", "run"]
    assert lines[1].endswith(f"{ranked[0].run}  <- selected")
    assert lines[2].endswith(str(ranked[1].run))
    # errors name the problem
    assert cli.main(["select", str(run), str(run / "."), "--device", "cpu", "--quiet"]) == 2
    assert "is given twice" in capsys.readouterr().err
    moved = workspace / "run_moved_videos"
    shutil.copytree(run, moved)
    copies = workspace / "video_copies"
    copies.mkdir()
    with (moved / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):
        target = copies / f"{i}.mp4"
        shutil.copy(row["path"], target)
        row["path"] = str(target)
    with (moved / "manifest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert cli.main(["select", str(run), str(moved), "--device", "cpu", "--quiet"]) == 2
    assert "was trained on other videos" in capsys.readouterr().err
    assert cli.main(["select", str(workspace / "videos"), "--device", "cpu", "--quiet"]) == 2


def test_stability_clips_are_taken_where_the_configuration_says(run, workspace, monkeypatch):
    from otcluster_video.commands import train as train_cmd

    seen = []

    class Stop(Exception):
        pass

    def fake(encoders, dataset, config, **kw):
        seen.append((dataset, kw["stability_dataset"], config))
        raise Stop

    monkeypatch.setattr(train_cmd, "SelfLabelTrainer", fake)
    tiny = load_preset(workspace / "tiny.toml")
    assert tiny.clustering.stability_position == 0.5  # the cpu preset's
    anywhere = workspace / "tiny_anywhere.toml"  # the same without a position
    anywhere.write_text(config_to_toml(dataclasses.replace(
        tiny, clustering=dataclasses.replace(tiny.clustering, stability_position=None))))
    base = ["train", "--data", str(run / "manifest.csv"), "--device", "cpu", "--quiet",
            "--set", 'clustering.modality_weights="stability"']
    for i, extra in enumerate([["--preset", str(anywhere)],
                               ["--preset", str(workspace / "tiny.toml")],
                               ["--preset", str(anywhere), "--set",
                                "clustering.stability_position=0.25"]]):
        with pytest.raises(Stop):
            cli.main([*base, "--out", str(workspace / f"run_stability{i}"), *extra])
    with pytest.raises(Stop):  # a position without "stability" builds no second dataset
        cli.main([*base[:-2], "--preset", str(workspace / "tiny.toml"), "--out",
                  str(workspace / "run_stability3"), "--set", 'clustering.modality_weights="equal"'])
    with pytest.raises(Stop):  # the destructive augmentations train, they are not measured
        cli.main([*base, "--preset", str(workspace / "tiny.toml"), "--out",
                  str(workspace / "run_stability4"), "--set", "audio.noise=0.5",
                  "--set", "visual.degrade=0.5"])
    (train0, none, cfg), (_, middle, _), (train2, at, _), (_, unused, equal), (noisy, kept, _) = seen
    assert none is None and cfg.modality_weights == "stability"
    assert middle.train and middle.position == 0.5
    assert at.train and at.position == 0.25 and train2.position is None and len(at) == len(train2)
    assert unused is None and equal.modality_weights == "equal"
    assert (noisy.config.audio.noise, noisy.config.visual.degrade) == (0.5, 0.5)
    assert (kept.config.audio.noise, kept.config.visual.degrade) == (0.0, 0.0) and kept.train
    assert "RandomDegrade" in repr(noisy.transform) and "RandomDegrade" not in repr(kept.transform)
    assert dataclasses.replace(kept.config, audio=noisy.config.audio,
                               visual=noisy.config.visual) == noisy.config


def test_a_replaced_manifest_is_refused(run, workspace, capsys):
    copy = workspace / "run_replaced"
    shutil.copytree(run, copy)
    lines = (copy / "manifest.csv").read_text().splitlines()
    (copy / "manifest.csv").write_text("\n".join(lines[:-2]) + "\n")
    assert cli.main(["label", "--run", str(copy), "--device", "cpu", "--quiet"]) == 2
    assert "the manifest was replaced" in capsys.readouterr().err


def test_the_model_loads_the_same_without_from_checkpoint(run, monkeypatch):
    from otcluster import SelfLabelModel
    from otcluster_video.commands import _inference

    a = _inference.load_run(run, "cpu")
    if hasattr(SelfLabelModel, "from_checkpoint"):
        monkeypatch.delattr(SelfLabelModel, "from_checkpoint")
    b = _inference.load_run(run, "cpu")
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not b.model.training and torch.equal(a.train_labels, b.train_labels)


def test_evaluate_table(run, capsys):
    assert cli.main(["evaluate", "--run", str(run), "--device", "cpu", "--quiet"]) == 0
    out = capsys.readouterr().out
    for method in (
        "k-means, random init",
        "k-means, SeLaVi features",
        "SeLaVi heads",
        "SeLaVi self-labels (OT)",
    ):
        assert method in out
    result = json.loads((run / "evaluation.json").read_text())
    assert result["ground_truth"] and result["n_scored"] == N_VIDEOS
    streams = {(r["method"], r["streams"]) for r in result["rows"]}
    for method in ("k-means, random init", "k-means, SeLaVi features", "SeLaVi heads"):
        for s in ("video", "audio", "video+audio"):
            assert (method, s) in streams
    for r in result["rows"]:
        assert 0.0 <= r["nmi"] <= 1.0 + 1e-9 and 0.0 <= r["acc"] <= 1.0
    assert (run / "evaluation.txt").read_text().strip() == result["table"].strip()


def test_explore_page(run, capsys):
    assert cli.main(["explore", "--run", str(run), "--device", "cpu", "--quiet"]) == 0
    page = Path(capsys.readouterr().out.strip())
    assert page == run / "explorer.html" and page.is_file()
    html = page.read_text()
    assert "cluster " in html and "<audio" in html


def test_degrade_writes_plot_and_json(run):
    assert (
        cli.main(["degrade", "--run", str(run), "--factors", "1", "4", "16", "--device", "cpu", "--quiet"])
        == 0
    )
    png = run / "degrade.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((run / "degrade.json").read_text())
    assert result["factors"] == [1, 4, 16]
    for f in ("1", "4", "16"):
        streams = {r["streams"] for r in result["rows"][f]}
        assert streams == {"video", "video+audio"}


def test_retrieval_from_split_csv(run, workspace):
    with open(workspace / "videos" / "ground_truth.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    split = workspace / "split.csv"
    with open(split, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for i, r in enumerate(rows):
            path = workspace / "videos" / r["path"]  # relative paths are relative to the CSV
            w.writerow([path, r["label"], "test" if i % 3 == 0 else "train"])
    assert (
        cli.main(
            [
                "retrieval",
                "--run",
                str(run),
                "--split-csv",
                str(split),
                "--clips",
                "2",
                "--ks",
                "1",
                "5",
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    result = json.loads((run / "retrieval.json").read_text())
    assert result["n_test"] == 4 and result["n_train"] == 8
    assert set(result["recall"]) == {"1", "5"}
    assert 0.0 <= result["recall"]["1"] <= result["recall"]["5"] <= 1.0


def test_torchrun_two_processes(workspace):
    """The command line under torchrun: 2 CPU processes (Gloo), rank 0 writes the run folder."""
    out = workspace / "run_ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "otcluster_video.cli",
            "train",
            "--data",
            str(workspace / "videos"),
            "--out",
            str(out),
            "--preset",
            str(workspace / "tiny.toml"),
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert res.stdout.count("trained 2 epochs") == 1  # printed by rank 0 only
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["world_size"] == 2 and int(state["epoch"]) == 2
    assert tuple(state["labels"].shape) == (2, N_VIDEOS)
    config = load_preset(out / "config.toml")
    assert config.training.epochs == 2
