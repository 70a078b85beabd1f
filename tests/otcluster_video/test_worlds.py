"""The synthetic worlds: class sizes, file formats, nuisances, degradation, determinism."""

from __future__ import annotations

import colorsys
import csv
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from otcluster_video import probe, read_audio, read_clip
from otcluster_video.worlds import (
    _COMBO_SHAPES,
    NUISANCES,
    SHAPES,
    TRAJECTORIES,
    VIDEO_NUISANCES,
    WORLDS,
    WorldSpec,
    _band,
    _object_mask,
    _sound,
    _video,
    class_sizes,
    make_world,
)

# Small versions of the worlds: 32 px, 8 fps, 1.2 s (a few seconds for all the tests).
SMALL = dict(size=32, fps=8, seconds=1.2, sample_rate=16000)


def _rows(csv_path):
    with csv_path.open() as f:
        return list(csv.DictReader(f))


def test_suite_covers_the_issue_factors():
    specs = list(WORLDS.values())
    assert len(specs) >= 6
    assert {"texture", "shape", "motion"} <= {s.video for s in specs} | {
        f for s in specs for f in s.video.split("+")}
    assert {"timbre", "pitch"} <= {f for s in specs for f in s.audio.split("+")}
    assert any(0 < s.degrade_fraction < 1 for s in specs)
    assert any(s.zipf == 1.0 for s in specs)
    assert any((s.size, s.fps, s.sample_rate, s.seconds) == (128, 30, 22050, 2.4) for s in specs)
    assert max(s.n_classes for s in specs) >= 12


@pytest.mark.parametrize("n, total, s", [(6, 96, 0.0), (6, 96, 1.0), (12, 40, 1.0), (3, 3, 2.0)])
def test_class_sizes_follow_zipf_and_sum_to_total(n, total, s):
    sizes = class_sizes(n, total, s)
    assert sizes.sum() == total and sizes.min() >= 1
    expected = 1 + (total - n) * np.arange(1, n + 1) ** -s / (np.arange(1, n + 1) ** -s).sum()
    assert np.all(np.abs(sizes - expected) < 1.0)
    assert np.all(np.diff(sizes) <= 0)  # largest first


def test_class_sizes_refuses_fewer_videos_than_classes():
    with pytest.raises(ValueError, match="at least one video per class"):
        class_sizes(6, 5)


def test_balanced_world_layout(tmp_path):
    spec = replace(WORLDS["shape"], **SMALL)
    rows = _rows(make_world(spec, tmp_path, videos_per_class=3, seed=4))
    counts = Counter(r["label"] for r in rows)
    assert len(counts) == spec.n_classes and set(counts.values()) == {3}
    for r in rows:
        assert (tmp_path / r["path"]).is_file() and r["path"].split("/")[0] == r["label"]
    assert {r["degraded"] for r in rows} == {""}


def test_zipf_world_sizes(tmp_path):
    spec = replace(WORLDS["zipf"], **SMALL)
    rows = _rows(make_world(spec, tmp_path, videos_per_class=4, seed=2))
    sizes = sorted(Counter(r["label"] for r in rows).values(), reverse=True)
    assert sizes == class_sizes(spec.n_classes, 4 * spec.n_classes, 1.0).tolist()
    assert sizes[0] >= 3 * sizes[-1]


def test_source_format_is_what_the_spec_says(tmp_path):
    spec = WORLDS["format"]
    rows = _rows(make_world(spec, tmp_path, videos_per_class=1, seed=0))
    info = probe(tmp_path / rows[0]["path"])
    assert (info.width, info.height) == (128, 128)
    assert info.fps == pytest.approx(30.0, rel=1e-3)
    assert info.sample_rate == 22050 and info.has_audio
    assert info.duration == pytest.approx(2.4, abs=0.05)
    assert info.audio_duration == pytest.approx(2.4, abs=0.1)


def test_degradation_hits_one_stream_never_both(tmp_path):
    spec = replace(WORLDS["degraded"], **SMALL)
    rows = _rows(make_world(spec, tmp_path, videos_per_class=3, seed=1))
    counts = Counter(r["degraded"] for r in rows)
    assert set(counts) == {"", "video", "audio"}
    assert counts["video"] + counts["audio"] == round(2 / 3 * len(rows))
    assert abs(counts["video"] - counts["audio"]) <= 1
    for r in rows:  # the file's content agrees with the column, stream by stream
        path = tmp_path / r["path"]
        frames = read_clip(path, 0.2, 4, 8).float().mean(dim=-1)  # (T, H, W) gray
        grain = (frames[:, :, 1:] - frames[:, :, :-1]).abs().mean()  # heavy noise when degraded
        wave = read_audio(path, 0.2, 0.8, 16000).numpy()
        spectrum = np.abs(np.fft.rfft(wave))
        tonal = spectrum.max() / np.median(spectrum)  # the tone buried in noise when degraded
        video_bad, audio_bad = grain > 25, tonal < 15
        assert not (video_bad and audio_bad), r
        assert video_bad == (r["degraded"] == "video"), (r, float(grain))
        assert audio_bad == (r["degraded"] == "audio"), (r, float(tonal))


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    spec = replace(WORLDS["motion"], **SMALL)
    a = make_world(spec, tmp_path / "a", videos_per_class=1, seed=5)
    b = make_world(spec, tmp_path / "b", videos_per_class=1, seed=5)
    c = make_world(spec, tmp_path / "c", videos_per_class=1, seed=6)
    assert a.read_text() == b.read_text()
    first = _rows(a)[0]["path"]
    assert np.array_equal(read_clip(a.parent / first, 0, 4, 8), read_clip(b.parent / first, 0, 4, 8))
    rng = [np.random.default_rng([s, 12, 0]) for s in (5, 6)]
    assert not np.array_equal(_video(rng[0], spec, 0, False)[0], _video(rng[1], spec, 0, False)[0])
    assert c.read_text() != a.read_text() or not np.array_equal(
        read_clip(c.parent / first, 0, 4, 8), read_clip(a.parent / first, 0, 4, 8))


def _centroids(mask):
    """(T, 2) centre of mass of a (T, S, S) mask, in pixels."""
    ys, xs = np.mgrid[: mask.shape[1], : mask.shape[2]]
    w = mask.sum(axis=(1, 2))
    return np.stack([(mask * xs).sum(axis=(1, 2)) / w, (mask * ys).sum(axis=(1, 2)) / w], 1)


def _grid(spec):
    axis = np.linspace(-1.0, 1.0, spec.size, dtype=np.float32)
    t = np.arange(int(spec.seconds * spec.fps), dtype=np.float32) / spec.fps
    return t, axis[None, None, :], axis[None, :, None]


@pytest.mark.parametrize("world", ["shape", "motion", "twelve"])
def test_objects_are_small(world):
    spec = WORLDS[world]
    for cls in range(spec.n_classes):
        for seed in range(3):
            mask = _object_mask(np.random.default_rng([seed, cls]), spec, cls, *_grid(spec))[0]
            assert mask.mean(axis=(1, 2)).max() <= 0.15, (world, cls)
            assert mask.mean() > 0.005  # and visible


def test_shape_world_nuisance_varies_within_a_class():
    """Same class, different clips: colour, position, size and volume all differ."""
    spec = WORLDS["shape"]
    fg, starts, areas, rms = [], [], [], []
    for seed in range(6):
        rng = np.random.default_rng([seed, 0])
        frames = _video(rng, spec, 2, False)[0].astype(float)
        fg.append(frames.reshape(-1, 3)[frames.sum(-1).argmax()])
        mask = _object_mask(np.random.default_rng([seed, 9]), spec, 2, *_grid(spec))[0]
        starts.append(_centroids(mask)[0])
        areas.append(mask[0].sum())
        rms.append(np.sqrt(np.mean(_sound(np.random.default_rng([seed, 1]), spec, 2, False)[0] ** 2)))
    assert np.std(fg, axis=0).max() > 20
    assert np.std(starts, axis=0).min() > 3  # pixels
    assert np.std(areas) / np.mean(areas) > 0.1
    assert np.std(rms) / np.mean(rms) > 0.1


def test_motion_world_class_is_the_trajectory():
    spec = WORLDS["motion"]
    names = list(TRAJECTORIES)
    for seed in range(3):
        paths = {n: _centroids(_object_mask(np.random.default_rng([seed, c]), spec, c, *_grid(spec))[0])
                 for c, n in enumerate(names)}
        span = {n: p.max(axis=0) - p.min(axis=0) for n, p in paths.items()}
        assert span["still"].max() < 3
        assert span["horizontal"][0] > 10 * max(span["horizontal"][1], 1)
        assert span["vertical"][1] > 10 * max(span["vertical"][0], 1)
        for n in ("diagonal", "circle", "figure8"):
            assert span[n].min() > 5, (n, span[n])
        # identical appearance: same object area whatever the class (up to the size nuisance)
        areas = [_object_mask(np.random.default_rng([seed, c]), spec, c, *_grid(spec))[0][0].sum()
                 for c in range(len(names))]
        assert max(areas) < 2.5 * min(areas)


def _peak_hz(wave, sr):
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return np.fft.rfftfreq(wave.size, 1 / sr)[spectrum.argmax()]


def test_pitch_world_bands_do_not_overlap_and_timbre_varies():
    spec = WORLDS["motion"]  # audio = pitch band, timbre a nuisance
    rng = np.random.default_rng(0)
    bands = [[_band(rng, c, spec.n_classes) for _ in range(200)] for c in range(spec.n_classes)]
    assert all(max(lo) < min(hi) / 1.3 for lo, hi in zip(bands[:-1], bands[1:]))
    assert min(bands[0]) >= 150 / 1.2 and max(bands[-1]) <= 4000 * 1.2
    # the timbre differs between clips of one class: the number of strong partials varies
    counts = set()
    for seed in range(12):
        wave = _sound(np.random.default_rng([seed, 1]), spec, 1, False)[0]
        spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
        peaks = (spectrum[1:-1] > spectrum[:-2]) & (spectrum[1:-1] >= spectrum[2:])
        counts.add(int((peaks & (spectrum[1:-1] > 0.2 * spectrum.max())).sum()))
    assert len(counts) >= 3 and min(counts) <= 2 and max(counts) >= 5, counts


def test_timbre_world_pitch_is_a_nuisance():
    spec = WORLDS["shape"]  # audio = timbre
    peaks = [_peak_hz(_sound(np.random.default_rng([s, 0]), spec, 0, False)[0], spec.sample_rate)
             for s in range(8)]  # class 0 = sine: the peak is the fundamental
    assert max(peaks) / min(peaks) > 1.5


def test_ground_truth_records_the_sounds_nuisances(tmp_path):
    rows = _rows(make_world(replace(WORLDS["degraded"], **SMALL), tmp_path / "d",
                            videos_per_class=3, seed=2))
    assert {"f0", "volume", "distractor"} <= set(rows[0])
    for r in rows:
        assert 200.0 <= float(r["f0"]) <= 200.0 * 2**1.5 and 0.3 <= float(r["volume"]) <= 0.9
        assert (r["distractor"] == "") == (r["degraded"] == "audio"), r  # no distractor in noise
        assert r["distractor"] == "" or 150.0 <= float(r["distractor"]) <= 4000.0
    # the recorded fundamental is the sound's: a sine clip's spectral peak (class 0 = sine)
    rows = _rows(make_world(replace(WORLDS["shape"], **SMALL), tmp_path / "s", videos_per_class=3,
                            seed=5))
    sines = [r for r in rows if r["label"].startswith("c00_")]
    assert len(sines) == 3 and len({r["f0"] for r in sines}) == 3
    for r in sines:
        wave = read_audio(tmp_path / "s" / r["path"], 0.1, 1.0, 16000).numpy().ravel()
        assert abs(_peak_hz(wave, 16000) / float(r["f0"]) - 1) < 0.02, r
    # the tone sound (texture) draws its nuisances elsewhere: the columns stay empty
    rows = _rows(make_world(replace(WORLDS["texture"], **SMALL), tmp_path / "t",
                            videos_per_class=1, seed=0))
    assert all(r["f0"] == r["volume"] == r["distractor"] == "" for r in rows)


@pytest.mark.parametrize("world", ["shape", "motion", "twelve"])
def test_recorded_picture_nuisances_are_the_rendered_ones(world):
    """Place, speed, size and hue recorded for a clip are those of the object in its frames."""
    spec = WORLDS[world]
    for cls in range(0, spec.n_classes, 2):
        for seed in range(2):
            mask, seen = _object_mask(np.random.default_rng([seed, cls]), spec, cls, *_grid(spec))
            px = 2.0 / (spec.size - 1)  # axis units per pixel
            path = _centroids(mask) * px - 1.0  # (T, 2) in -1..1
            shape = (list(SHAPES)[cls] if world == "shape" else "disk" if world == "motion"
                     else _COMBO_SHAPES[cls % len(_COMBO_SHAPES)])
            if shape != "triangle":  # the place is the box's centre: a triangle's centroid is not
                assert np.allclose(path.mean(0), [seen["x"], seen["y"]], atol=0.25 * px), (cls, seen)
            moved = np.hypot(*np.diff(path, axis=0).T).mean() * spec.fps
            assert abs(moved - seen["speed"]) <= 0.02 * seen["speed"], (cls, moved, seen)
            # the object's width: r of the frame's, so its area is about (2r)^2 / 4 of it or less
            assert mask.mean(axis=(1, 2)).max() <= seen["size"] ** 2 * 1.1, (cls, seen)
            assert mask.mean(axis=(1, 2)).max() >= seen["size"] ** 2 * 0.3, (cls, seen)
    frames, seen = _video(np.random.default_rng([0, 1]), spec, 1, False)
    brightest = frames.reshape(-1, 3)[frames.astype(int).sum(-1).argmax()] / 255.0
    hue = colorsys.rgb_to_hsv(*brightest)[0]
    assert min(abs(hue - seen["hue"]), 1 - abs(hue - seen["hue"])) < 0.05, (hue, seen)
    assert 0.0 < seen["contrast"] <= 1.0  # a bright object on a dark background


def test_ground_truth_records_the_pictures_nuisances(tmp_path):
    rows = _rows(make_world(replace(WORLDS["motion"], **SMALL), tmp_path / "m",
                            videos_per_class=2, seed=1))
    assert set(VIDEO_NUISANCES) <= set(rows[0]) and set(NUISANCES) <= set(rows[0])
    for r in rows:
        assert 0.2 <= float(r["size"]) <= 0.3 and 0.0 <= float(r["hue"]) <= 1.0, r
        assert all(-1.0 <= float(r[k]) <= 1.0 for k in ("x", "y")), r
        still = r["label"].endswith("_still")  # jitters by 0.03: the slowest
        assert float(r["speed"]) < 0.3 if still else float(r["speed"]) > 0.5, r
    rows = _rows(make_world(replace(WORLDS["texture"], **SMALL), tmp_path / "t",
                            videos_per_class=1, seed=0))
    assert all(r[k] == "" for r in rows for k in VIDEO_NUISANCES)  # drawn elsewhere


def test_world_spec_validation():
    with pytest.raises(ValueError, match="video must be one of"):
        WorldSpec("x", "colour", "timbre")
    with pytest.raises(ValueError, match="n_classes must be in"):
        WorldSpec("x", "shape", "timbre", n_classes=len(SHAPES) + 1)
    with pytest.raises(ValueError, match="even size"):
        WorldSpec("x", "shape", "timbre", size=33)
    with pytest.raises(ValueError, match="degrade_fraction"):
        WorldSpec("x", "shape", "timbre", degrade_fraction=1.5)
