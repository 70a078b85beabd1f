from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest
import torch

from otcluster_video import make_synthetic_dataset, read_audio, read_clip


def _rows(root):
    with (root / "ground_truth.csv").open() as f:
        return list(csv.DictReader(f))


def test_layout_and_ground_truth(synth_dir, synth_spec):
    rows = _rows(synth_dir)
    assert len(rows) == synth_spec["n_videos"]
    counts = Counter(r["label"] for r in rows)
    assert len(counts) == synth_spec["n_classes"] and len(set(counts.values())) == 1
    for r in rows:
        path = synth_dir / r["path"]
        assert path.is_file() and path.parent.name == r["label"]
    broken = sorted(p.name for p in synth_dir.rglob("broken_*"))
    assert len(broken) == synth_spec["n_broken"]
    assert not {r["path"].split("/")[-1] for r in rows} & set(broken)


def test_degraded_fractions_are_disjoint(tmp_path):
    rows = _rows(
        make_synthetic_dataset(
            tmp_path, n_videos=8, n_classes=2, size=16, seconds=1.2, degrade_fraction=0.25, seed=1
        ).parent
    )
    assert Counter(r["degraded"] for r in rows) == {"": 4, "video": 2, "audio": 2}


def test_same_seed_same_content(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", n_videos=2, n_classes=2, size=16, seconds=1.2)
    b = make_synthetic_dataset(tmp_path / "b", n_videos=2, n_classes=2, size=16, seconds=1.2)
    assert a.read_text() == b.read_text()
    first = _rows(a.parent)[0]["path"]
    assert torch.equal(read_clip(a.parent / first, 0, 4, 16), read_clip(b.parent / first, 0, 4, 16))


def test_audio_carries_the_class_as_a_fundamental(synth_dir):
    """Clean clips: the strongest frequency is the class's fundamental (+- pitch jitter)."""
    rows = _rows(synth_dir)
    n_classes = len({r["label"] for r in rows})
    names = sorted({r["label"] for r in rows})
    for r in rows:
        cls = names.index(r["label"])
        f0 = 220.0 * (3200.0 / 220.0) ** (cls / (n_classes - 1))
        wave = read_audio(synth_dir / r["path"], 0.0, 1.5, 16000).numpy()
        spectrum = np.abs(np.fft.rfft(wave))
        peak = np.fft.rfftfreq(wave.size, 1 / 16000)[spectrum.argmax()]
        assert peak == pytest.approx(f0, rel=0.06), r["path"]


def test_visual_class_is_the_pattern_not_the_colour(synth_dir):
    rows = [r for r in _rows(synth_dir) if r["label"].endswith("hbars")]
    colours = []
    for r in rows:
        clip = read_clip(synth_dir / r["path"], 0.0, 4, 16).float()
        gray = clip.mean(dim=-1)
        along_y = (gray[:, 1:, :] - gray[:, :-1, :]).abs().mean()
        along_x = (gray[:, :, 1:] - gray[:, :, :-1]).abs().mean()
        assert along_y > 3 * along_x  # horizontal bars: edges only along y
        colours.append(clip.amax(dim=(0, 1, 2)))  # brightest colour = foreground
    spread = torch.stack(colours).std(dim=0).max()
    assert spread > 20  # the colour differs between clips of the same class


def test_threads_write_the_same_files(tmp_path):
    # each video draws from its own generator: rendering several at once changes no byte
    spec = {"n_videos": 7, "n_classes": 3, "size": 16, "seconds": 0.6, "degrade_fraction": 0.3,
            "broken": 2}
    one = make_synthetic_dataset(tmp_path / "one", **spec)
    three = make_synthetic_dataset(tmp_path / "three", threads=3, **spec)
    assert one.read_text() == three.read_text()
    files = sorted(p.relative_to(one.parent) for p in one.parent.rglob("*.mp4"))
    assert len(files) == 7 + 2
    assert files == sorted(p.relative_to(three.parent) for p in three.parent.rglob("*.mp4"))
    assert all((one.parent / f).read_bytes() == (three.parent / f).read_bytes() for f in files)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_classes": 11}, "n_classes"),
        ({"size": 15}, "size"),
        ({"degrade_fraction": 0.6}, "degrade_fraction"),
        ({"broken": -1}, "broken"),
        ({"threads": 0}, "threads"),
        ({"threads": True}, "threads"),
    ],
)
def test_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic_dataset(tmp_path, n_videos=2, **kwargs)
