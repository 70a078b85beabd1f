"""Decoding throughput of the video recipe's data pipeline, in clips per second per worker.

Generates small synthetic videos, then times, on one thread (as in a DataLoader worker):

* ``decode``: ``read_clip`` + ``read_audio`` of one training window (no transforms);
* ``item, no cache``: ``AVDataset[i]`` in training mode (decode, transforms, log-mel);
* ``item, cache fill``: first pass with ``cache_dir`` (decodes whole videos and writes them);
* ``item, cache warm``: later passes with ``cache_dir`` (memory-mapped reads, transforms, log-mel).

Both wall-clock clips/s and clips per CPU-second are printed: on a shared machine the second is
the one to compare (it is what one worker on a free core would do).

Two settings: the CPU preset on 64 x 64 px, 16 fps clips, and the paper preset (30 frames of
112 x 112, 2 s of 257-band log-mels at 48 kHz) on 240 x 240 px, 30 fps clips.

Usage: ``python benchmarks/bench_decode.py [--n-videos 8] [--passes 3] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from otcluster_video import (  # noqa: E402
    AVDataset,
    load_preset,
    make_synthetic_dataset,
    prepare,
    read_audio,
    read_clip,
)

SETTINGS = (
    # name, preset, synthetic video size, fps, seconds
    ("cpu preset, 64 px 16 fps", "cpu", 64, 16, 3.0),
    ("paper preset, 240 px 30 fps", "paper", 240, 30, 3.0),
)


class _Timer:
    """Wall-clock and process CPU time of a block (CPU time is robust to a busy machine)."""

    def __enter__(self) -> _Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def _row(name: str, measure: str, n: int, t: _Timer) -> tuple[str, str, float, float]:
    return name, measure, n / max(t.wall, 1e-9), n / max(t.cpu, 1e-9)


def bench(workdir: Path, n_videos: int, passes: int) -> list[tuple[str, str, float, float]]:
    results = []
    for name, preset, size, fps, seconds in SETTINGS:
        root = workdir / f"{preset}-{size}"
        with _Timer() as t:
            make_synthetic_dataset(
                root, n_videos=n_videos, n_classes=4, seconds=seconds, fps=fps, size=size, seed=0
            )
        report = prepare(root, root / "manifest.csv", progress=False)
        cfg = load_preset(preset, {"data.cache_dir": ""})
        print(
            f"# {name}: generated {n_videos} videos in {t.wall:.1f} s; clip {cfg.clip.n_frames} "
            f"frames at {cfg.clip.fps:g} fps, crop {cfg.visual.crop}, audio {cfg.audio.seconds:g} s"
            f" -> {cfg.audio.n_mels} x {cfg.audio.n_frames}"
        )
        plain = AVDataset(report.videos, cfg, train=True)
        cached = AVDataset(report.videos, cfg, train=True, cache_dir=root / "cache")
        n = len(plain)

        def decode_only(i: int, ds: AVDataset = plain) -> None:
            c = ds.config
            video_start, audio_start = ds.windows(i)
            path = ds.videos[i].path
            short = c.visual.decode_short_side
            read_clip(path, video_start, c.clip.n_frames, c.clip.fps, short_side=short)
            read_audio(path, audio_start, c.audio.seconds, c.audio.sample_rate)

        for measure, fetch, n_passes in (
            ("decode only", decode_only, passes),
            ("item, no cache", plain.__getitem__, passes),
            ("item, cache fill", cached.__getitem__, 1),
            ("item, cache warm", cached.__getitem__, passes),
        ):
            with _Timer() as t:
                for _ in range(n_passes):
                    for i in range(n):
                        fetch(i)
            results.append(_row(name, measure, n_passes * n, t))
        size_mb = sum(p.stat().st_size for p in (root / "cache").rglob("*.npy")) / 2**20
        print(f"#   cache: {size_mb:.1f} MiB for {n} videos")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-videos", type=int, default=8)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one DataLoader worker
    with tempfile.TemporaryDirectory() as tmp:
        results = bench(args.workdir or Path(tmp), args.n_videos, args.passes)
    print(f"\n{'setting':<28} {'measure':<17} {'clips/s (wall)':>15} {'clips/CPU-s':>12}")
    for name, measure, wall, cpu in results:
        print(f"{name:<28} {measure:<17} {wall:>15.1f} {cpu:>12.1f}")


if __name__ == "__main__":
    main()
