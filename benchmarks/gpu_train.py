"""Training steps of the ``paper`` preset on one device, with mixed precision (issue 13, step 3).

    python benchmarks/gpu_train.py                          # CUDA: R(2+1)D-18 + ResNet-9, K = 309
    python benchmarks/gpu_train.py --device cpu --quick     # tiny encoders and clips (CI)

Measures, in one process, on synthetic clips (this machine may have no videos):

* ``loader``: clips/s of the recipe's own data pipeline (PyAV decoding, resizing, cropping and
  the log-mel spectrogram of ``AVDataset``) through a ``DataLoader`` with the preset's
  ``data.num_workers``, on generated MP4s at the preset's frame rate and sample rate (no
  resampling) and 128 px. No model runs: this is the rate the data side can feed.
* ``fit_b<B>``: :class:`otcluster.SelfLabelTrainer` for one epoch of the preset (10 heads in 2
  decorrelated groups, K = 309, float16 autocast and gradient scaling on CUDA) at batch size B
  on a pool of clips already decoded (one ``AVDataset`` item per generated video, repeated): the
  alignment pass, one clustering of the whole (synthetic) dataset at step 0 (its two inference
  passes and the solver, timed), then the epoch's training steps (clips/s), and the peak device
  memory. Timestamps come from the trainer's ``on_record`` callback.

The loader's rate against the training steps' rate says whether data loading or compute limits
a real run on this machine. Writes ``gpu_train.json`` into ``$OUT`` if that variable is set,
else to ``--out``. Each step checks a deadline (``--budget-s``) and is skipped, with the reason,
when the run is out of time.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_grid.py

import torch  # noqa: E402

from otcluster import SelfLabelTrainer  # noqa: E402
from otcluster_video import AVDataset, load_preset, make_synthetic_dataset, prepare  # noqa: E402
from otcluster_video._build import build_encoders, trainer_config  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_bench import json_out  # noqa: E402

QUICK = {
    "clip.n_frames": 4, "clip.fps": 8.0, "audio.sample_rate": 16000, "audio.n_mels": 16,
    "visual.resize": 18, "visual.scale_jitter": [16, 20], "visual.crop": 16,
    "encoder.video.widths": [4, 8, 8, 8], "encoder.audio.widths": [4, 8, 8, 8],
    "heads.n_heads": 2, "heads.n_clusters": 4, "heads.hidden_dim": 16, "data.num_workers": 0,
}


class Pool(torch.utils.data.Dataset):
    """``n`` items drawn in turn from a few decoded clips (their ``index`` set to the position)."""

    def __init__(self, items: list[dict], n: int):
        self.items, self.n = items, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        item = self.items[i % len(self.items)]
        return {"index": i, "video": item["video"], "audio": item["audio"]}


class Stamps:
    """``on_record`` callback: each record with the time it arrived."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.records: list[tuple[float, dict]] = []

    def __call__(self, record: dict) -> None:
        self.records.append((time.perf_counter() - self.t0, dict(record)))


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def loader_rate(dataset: AVDataset, workers: int, batch: int, n_batches: int) -> dict:
    """Clips/s of the data pipeline alone (the first batch, worker start-up, not counted)."""
    sampler = [i % len(dataset) for i in range(batch * (n_batches + 1))]
    dl = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                                     persistent_workers=False)
    it = iter(dl)
    next(it)
    t = time.perf_counter()
    n = sum(b["video"].shape[0] for b in it)
    s = time.perf_counter() - t
    return {"num_workers": workers, "batch_size": batch, "clips": n, "seconds": s, "clips_per_s": n / s}


def fit_rate(config, items: list[dict], batch: int, steps: int, dev: torch.device) -> dict:
    """One epoch of the preset's trainer at batch size ``batch``: ``steps`` steps."""
    n = batch * steps
    pool = Pool(items, n)
    cfg = trainer_config(config, world_size=1, cuda=dev.type == "cuda", progress=False)
    cfg = dataclasses.replace(cfg, batch_size=batch,
                              num_workers=min(cfg.num_workers, 4))  # the pool only copies tensors
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    trainer = SelfLabelTrainer(build_encoders(config), pool, cfg, device=dev)
    stamps = Stamps()
    trainer.fit(on_record=stamps)
    _sync(dev)
    wall = time.perf_counter() - stamps.t0
    rec = {r["event"]: (t, r) for t, r in stamps.records}  # the last of each kind
    t_cluster, cluster = rec["clustering"]
    t_epoch, _ = rec["epoch"]
    train_s = t_epoch - t_cluster
    out = {
        "batch_size": batch, "steps": steps, "clips": n, "n_heads": cfg.heads.n_heads,
        "n_clusters": cfg.heads.n_clusters, "head_groups": cfg.head_groups, "amp": trainer._amp,
        "align_s": stamps.records[0][0] if stamps.records[0][1]["event"] == "align" else None,
        "clustering_s": cluster["seconds"], "clustering_n_iter": cluster["n_iter"],
        "clustering_memory_bounded": cluster["memory_bounded"],
        "train_s": train_s, "train_clips_per_s": n / train_s, "step_s": train_s / steps,
        "wall_s": wall,
    }
    if dev.type == "cuda":
        out["peak_memory_bytes"] = torch.cuda.max_memory_allocated(dev)
    del trainer
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny encoders and clips (CPU CI)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default $OUT/gpu_train.json, else ./gpu_train.json)")
    p.add_argument("--budget-s", type=float, default=240.0, help="deadline for starting new steps")
    p.add_argument("--batch-sizes", default=None, help="comma-separated (default 16,64; 8 with --quick)")
    p.add_argument("--clips", type=int, default=None,
                   help="clips in the synthetic dataset (default 3200: 200 steps at batch size 16)")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        p.error("CUDA is not available: use --device cpu --quick")
    batches = [int(b) for b in (a.batch_sizes or ("8" if a.quick else "16,64")).split(",")]
    n_clips = a.clips or (32 if a.quick else 3200)
    one_epoch = {"training.epochs": 1, "training.warmup_epochs": 0, "clustering.n_clusterings": 1}
    config = load_preset("paper", {**(QUICK if a.quick else {}), **one_epoch})
    args = sys.argv[1:] if argv is None else argv
    res: dict = {"command": "python benchmarks/gpu_train.py " + " ".join(args), "device": str(dev),
                 "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda"
                 else platform.processor() or platform.machine(),
                 "torch": torch.__version__, "quick": a.quick, "cpu_count": os.cpu_count(),
                 "preset": "paper" + (" (--quick overrides)" if a.quick else ""),
                 "clip": {"n_frames": config.clip.n_frames, "fps": config.clip.fps,
                          "crop": config.visual.crop, "sample_rate": config.audio.sample_rate,
                          "audio_seconds": config.audio.seconds, "n_mels": config.audio.n_mels},
                 "skipped": []}
    print(f"{res['device_name']} ({dev}), torch {torch.__version__}", flush=True)
    out, save = json_out(a.out, "gpu_train.json", res, t0)
    with tempfile.TemporaryDirectory() as tmp:
        n_videos = 4 if a.quick else 32
        make_synthetic_dataset(Path(tmp) / "v", n_videos=n_videos, n_classes=4, seconds=3.0,
                               fps=round(config.clip.fps), size=32 if a.quick else 128,
                               sample_rate=config.audio.sample_rate, degrade_fraction=0.0, seed=0)
        report = prepare(Path(tmp) / "v", Path(tmp) / "manifest.csv", progress=False)
        dataset = AVDataset(report.videos, config, train=True)
        workers = config.data.num_workers
        res["loader"] = loader_rate(dataset, workers, batches[0], 4 if a.quick else 40)
        res["loader"]["videos"] = n_videos
        print(f"loader: {res['loader']['clips_per_s']:.1f} clips/s with {workers} workers", flush=True)
        save()
        items = [dataset[i] for i in range(n_videos)]
    res["video_shape"] = list(items[0]["video"].shape)
    res["audio_shape"] = list(items[0]["audio"].shape)
    for b in batches:
        if time.perf_counter() - t0 > a.budget_s:
            res["skipped"].append(f"fit at batch size {b}: deadline of {a.budget_s:.0f} s reached")
            continue
        try:
            row = fit_rate(config, items, b, max(1, n_clips // b), dev)
        except torch.cuda.OutOfMemoryError as e:
            row = {"batch_size": b, "oom": str(e).split("\n")[0][:200]}
        res[f"fit_b{b}"] = row
        save()
        if "oom" not in row:
            print(f"batch {b}: {row['train_clips_per_s']:.1f} clips/s ({row['step_s'] * 1e3:.0f} ms/step), "
                  f"clustering of {row['clips']} clips {row['clustering_s']:.1f} s, "
                  f"peak memory {row.get('peak_memory_bytes', 0) / 2**30:.1f} GiB", flush=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    save()
    print(f"wrote {out} ({res['wall_s']:.0f} s)", flush=True)
    return res


if __name__ == "__main__":
    main()
