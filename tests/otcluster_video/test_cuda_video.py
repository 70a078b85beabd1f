"""The video recipe on a CUDA device: the paper's encoders under mixed precision, and a tiny run
trained on CUDA, labelled there and on the CPU from the same checkpoint.

Marked ``cuda``: skipped without a device (CI); run on a lent GPU machine through
``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from otcluster_video import cli, load_preset
from otcluster_video._build import build_encoders
from otcluster_video.recipe import config_to_toml

pytestmark = pytest.mark.cuda

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
    "heads.n_clusters": 3,
    "heads.hidden_dim": 16,
    "training.epochs": 4,
    "training.batch_size": 4,
    "training.warmup_epochs": 1,
    "clustering.n_clusterings": 3,
}


def test_paper_encoders_take_a_mixed_precision_step(cuda_device):
    """R(2+1)D-18 and ResNet-9 at the paper's input sizes: one float16-autocast step with
    gradient scaling gives finite features, loss and gradients."""
    config = load_preset("paper")
    enc = {m: e.to(cuda_device).train() for m, e in build_encoders(config).items()}
    video = torch.randn(2, 3, config.clip.n_frames, config.visual.crop, config.visual.crop,
                        device=cuda_device)
    audio = torch.randn(2, 1, config.audio.n_mels, 199, device=cuda_device)
    params = [p for e in enc.values() for p in e.parameters()]
    opt = torch.optim.SGD(params, lr=0.01)
    scaler = torch.amp.GradScaler("cuda")
    with torch.autocast("cuda"):
        zv, za = enc["video"](video), enc["audio"](audio)
        assert zv.dtype == torch.float16 and zv.shape == (2, 512) and za.shape == (2, 512)
        loss = (zv.float() - za.float()).pow(2).mean()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)


def _labels(run: Path) -> list[int]:
    with open(run / "labels.csv", newline="") as f:
        return [int(r["label"]) for r in csv.DictReader(f)]


def test_a_run_trained_on_cuda_labels_on_cuda_and_on_the_cpu(synth_dir, synth_spec, tmp_path):
    preset = tmp_path / "tiny.toml"
    preset.write_text(config_to_toml(load_preset("cpu", {**TINY, "data.cache_dir": ""})))
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(synth_dir), "--out", str(run), "--preset", str(preset),
                     "--device", "cuda", "--quiet"]) == 0
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")
    assert int(state["epoch"]) == TINY["training.epochs"]
    assert cli.main(["label", "--run", str(run), "--device", "cuda", "--quiet"]) == 0
    on_cuda = _labels(run)
    (run / "labels.csv").rename(run / "labels.cuda.csv")
    assert cli.main(["label", "--run", str(run), "--device", "cpu", "--quiet"]) == 0
    on_cpu = _labels(run)
    assert len(on_cuda) == len(on_cpu) == synth_spec["n_videos"]
    # float16 inference on CUDA, float32 on the CPU: a near tie may flip, not the labelling
    same = sum(a == b for a, b in zip(on_cuda, on_cpu))
    assert same >= len(on_cpu) - 1, (on_cuda, on_cpu)
