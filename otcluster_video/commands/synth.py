"""``otcluster-video synth``: write a synthetic labelled audio-visual dataset of MP4 files
(:func:`otcluster_video.make_synthetic_dataset`)."""

from __future__ import annotations

import argparse
import time

__all__: list[str] = []


def cli(args: argparse.Namespace) -> None:
    from ..synth import make_synthetic_dataset

    t0 = time.perf_counter()
    csv_path = make_synthetic_dataset(
        args.out,
        n_videos=args.n_videos,
        n_classes=args.classes,
        seconds=args.seconds,
        size=args.size,
        degrade_fraction=args.degrade_fraction,
        broken=args.broken,
        seed=args.seed,
    )
    print(
        f"wrote {args.n_videos} videos of {args.classes} classes (+{args.broken} broken files) "
        f"to {args.out} in {time.perf_counter() - t0:.1f} s; ground truth: {csv_path}"
    )
