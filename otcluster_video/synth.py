"""Synthetic audio-visual data set: real MP4 files whose class shows in both streams.

Every class has a *visual* signature (a large, high-contrast pattern with its own motion) and an
*audio* signature (a fundamental frequency, a rhythm and a timbre). Nuisances are drawn
independently per stream: colours, position, speed and size for video; pitch jitter, volume,
background noise and a distractor tone for audio. In a fraction of the clips one stream is
degraded (video: reduced to 2 x 2 blocks, low contrast, heavy noise; audio: signal buried in
loud noise), so a labelling that uses both streams beats either stream alone. Colour never
carries the class.

The visual patterns are textures and big shapes on purpose: a tiny randomly initialised (2+1)D
network on 8 frames of 32 x 32 pixels must be able to learn them on a CPU in minutes.
"""

from __future__ import annotations

import colorsys
import csv
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ._mp4 import write_mp4

__all__ = ["VISUAL_SIGNATURES", "make_flash_click_video", "make_synthetic_dataset"]

_Grid = tuple[np.ndarray, np.ndarray, np.ndarray]  # t (T,1,1), x (1,1,S), y (1,S,1)


def _soft(signed: np.ndarray, px: float) -> np.ndarray:
    """Anti-aliased indicator of ``signed > 0``, edge width about one pixel."""
    return np.clip(0.5 + signed / px, 0.0, 1.0)


def _square_wave(phase: np.ndarray) -> np.ndarray:
    return np.clip(0.5 + 3.0 * np.sin(phase), 0.0, 1.0)


def _hbars(rng: np.random.Generator, g: _Grid, px: float) -> np.ndarray:
    t, x, y = g
    period, speed = rng.uniform(0.45, 0.65), rng.uniform(0.5, 1.0) * rng.choice([-1, 1])
    return _square_wave(2 * np.pi * (y + speed * period * t) / period + rng.uniform(0, 7))


def _vbars(rng: np.random.Generator, g: _Grid, px: float) -> np.ndarray:
    t, x, y = g
    period, speed = rng.uniform(0.45, 0.65), rng.uniform(0.5, 1.0) * rng.choice([-1, 1])
    return _square_wave(2 * np.pi * (x + speed * period * t) / period + rng.uniform(0, 7))


def _diagonal(rng: np.random.Generator, g: _Grid, px: float) -> np.ndarray:
    t, x, y = g
    period, speed = rng.uniform(0.45, 0.65), rng.uniform(0.5, 1.0)
    u = (x + y) / np.sqrt(2.0)
    return _square_wave(2 * np.pi * (u + speed * period * t) / period + rng.uniform(0, 7))


def _checker_blink(rng: np.random.Generator, g: _Grid, px: float) -> np.ndarray:
    t, x, y = g
    cell, rate = rng.uniform(0.4, 0.55), rng.uniform(1.5, 2.5)
    ox, oy = rng.uniform(0, 2 * cell, size=2)
    board = np.sin(np.pi * (x + ox) / cell) * np.sin(np.pi * (y + oy) / cell)
    polarity = np.sign(np.sin(2 * np.pi * rate * t + rng.uniform(0, 7)) + 1e-9)
    return np.clip(0.5 + 3.0 * board * polarity, 0.0, 1.0)


def _disk_swing(rng: np.random.Generator, g: _Grid, px: float) -> np.ndarray:
    t, x, y = g
    radius, rate = rng.uniform(0.4, 0.55), rng.uniform(0.6, 1.0)
    cx = rng.uniform(-0.15, 0.15) + 0.45 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 7))
    cy = rng.uniform(-0.3, 0.3)
    return _soft(radius - np.sqrt((x - cx) ** 2 + (y - cy) ** 2), px)


def _ring_pulse(rng: np.random.Generator, g: _Grid, px: float) -> np.ndarray:
    t, x, y = g
    r0, rate, width = rng.uniform(0.45, 0.6), rng.uniform(1.0, 1.6), rng.uniform(0.12, 0.16)
    cx, cy = rng.uniform(-0.2, 0.2, size=2)
    radius = r0 * (1.0 + 0.35 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 7)))
    return _soft(width - np.abs(np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - radius), px)


def _square_spin(rng: np.random.Generator, g: _Grid, px: float) -> np.ndarray:
    t, x, y = g
    half, turns = rng.uniform(0.4, 0.55), rng.uniform(0.25, 0.45) * rng.choice([-1, 1])
    cx, cy = rng.uniform(-0.2, 0.2, size=2)
    theta = 2 * np.pi * turns * t + rng.uniform(0, 7)
    xr = (x - cx) * np.cos(theta) + (y - cy) * np.sin(theta)
    yr = -(x - cx) * np.sin(theta) + (y - cy) * np.cos(theta)
    return _soft(half - np.maximum(np.abs(xr), np.abs(yr)), px)


def _cross_bob(rng: np.random.Generator, g: _Grid, px: float) -> np.ndarray:
    t, x, y = g
    arm, width, rate = rng.uniform(0.65, 0.85), rng.uniform(0.16, 0.22), rng.uniform(0.6, 1.0)
    cx = rng.uniform(-0.15, 0.15)
    cy = 0.3 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 7))
    dx, dy = np.abs(x - cx), np.abs(y - cy)
    bar_h = np.minimum(width - dy, arm - dx)
    bar_v = np.minimum(width - dx, arm - dy)
    return _soft(np.maximum(bar_h, bar_v), px)


def _triangle_rise(rng: np.random.Generator, g: _Grid, px: float) -> np.ndarray:
    t, x, y = g
    half, rate = rng.uniform(0.5, 0.65), rng.uniform(0.6, 1.0)
    cx = rng.uniform(-0.2, 0.2)
    cy = 0.3 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 7))
    u, v = x - cx, y - cy  # y grows downwards: apex at the top
    base = half - v
    side = (v + half) / 2.0 - np.abs(u)  # width grows towards the base
    return _soft(np.minimum(np.minimum(base, side), v + half), px)


def _dots_drift(rng: np.random.Generator, g: _Grid, px: float) -> np.ndarray:
    t, x, y = g
    period, speed = rng.uniform(0.5, 0.65), rng.uniform(0.3, 0.6)
    ox, oy = rng.uniform(0, period, size=2)
    u = np.mod(x + ox + speed * t, period) - period / 2
    v = np.mod(y + oy + speed * t, period) - period / 2
    return _soft(0.3 * period - np.sqrt(u**2 + v**2), px)


#: Visual class signatures, in class order: name -> pattern generator.
VISUAL_SIGNATURES: dict[str, Callable[[np.random.Generator, _Grid, float], np.ndarray]] = {
    "hbars": _hbars,
    "vbars": _vbars,
    "disk": _disk_swing,
    "checker": _checker_blink,
    "ring": _ring_pulse,
    "square": _square_spin,
    "cross": _cross_bob,
    "diagonal": _diagonal,
    "triangle": _triangle_rise,
    "dots": _dots_drift,
}

_RHYTHMS = (0.0, 2.0, 4.0, 6.0)  # Hz of on/off pulses; 0 = steady tone
_TIMBRES = ((1.0,), (1.0, 0.0, 0.4, 0.0, 0.25), (1.0, 0.5, 0.33, 0.25, 0.2, 0.16))


def _random_colour(rng: np.random.Generator, value: tuple[float, float]) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.4, 1.0), rng.uniform(*value))
    return np.asarray(rgb, dtype=np.float32)


def _render_video(
    rng: np.random.Generator, cls: int, n_frames: int, fps: int, size: int, degraded: bool
) -> np.ndarray:
    """Frames of shape (n_frames, size, size, 3), uint8, for class ``cls``."""
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    t = (np.arange(n_frames, dtype=np.float32) / fps)[:, None, None]
    grid = (t, axis[None, None, :], axis[None, :, None])
    pattern = list(VISUAL_SIGNATURES.values())[cls]
    mask = np.broadcast_to(pattern(rng, grid, 2.0 / size), (n_frames, size, size))
    fg, bg = _random_colour(rng, (0.8, 1.0)), _random_colour(rng, (0.0, 0.3))
    frames = bg + mask[..., None] * (fg - bg)
    if degraded:  # 2 x 2 blocks (shapes and textures gone), low contrast, heavy noise
        block = max(size // 2, 1)
        coarse = frames.reshape(n_frames, size // block, block, size // block, block, 3)
        frames = np.repeat(np.repeat(coarse.mean(axis=(2, 4)), block, 1), block, 2)
        frames = frames.mean() + 0.25 * (frames - frames.mean())
        frames = frames + rng.normal(0.0, 0.25, size=frames.shape)
    else:
        frames = frames + rng.normal(0.0, 0.03, size=frames.shape)
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _render_audio(
    rng: np.random.Generator, cls: int, n_classes: int, seconds: float, sr: int, degraded: bool
) -> np.ndarray:
    """Mono waveform of shape (seconds * sr,), float32, for class ``cls``."""
    t = np.arange(round(seconds * sr)) / sr
    top = 3200.0 if n_classes > 1 else 220.0
    f0 = 220.0 * (top / 220.0) ** (cls / max(n_classes - 1, 1)) * rng.uniform(0.96, 1.04)
    tone = np.zeros_like(t)
    for k, amp in enumerate(_TIMBRES[cls % len(_TIMBRES)], start=1):
        if k * f0 < sr / 2:
            tone += amp * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 7))
    rate = _RHYTHMS[cls % len(_RHYTHMS)]
    if rate > 0:
        tone *= np.sin(2 * np.pi * rate * t + rng.uniform(0, 7)) > -0.2
    tone /= np.abs(tone).max() + 1e-9
    distractor = 0.1 * np.sin(2 * np.pi * rng.uniform(150.0, 4000.0) * t)
    volume = rng.uniform(0.3, 0.9)
    if degraded:
        wave = 0.04 * volume * tone + rng.normal(0.0, 0.35, t.size)
    else:
        wave = volume * (tone + distractor) + rng.normal(0.0, rng.uniform(0.005, 0.05), t.size)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def _write_broken(path: Path, kind: str, rng: np.random.Generator, fps: int, sr: int) -> None:
    frames = _render_video(rng, 0, 2 * fps, fps, 32, False)
    wave = _render_audio(rng, 0, 2, 2.0, sr, False)
    if kind == "truncated":
        write_mp4(path, frames, fps, wave, sr)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 3 // 5])
    elif kind == "no_audio":
        write_mp4(path, frames, fps, None, sr)
    elif kind == "not_video":
        path.write_text("this is a text file with an .mp4 extension\n")
    elif kind == "too_short":
        write_mp4(path, frames[: max(fps // 2, 1)], fps, wave[: sr // 2], sr)
    else:  # pragma: no cover - internal
        raise AssertionError(kind)


_BROKEN_KINDS = ("truncated", "no_audio", "not_video", "too_short")


def make_synthetic_dataset(
    out_dir: str | Path,
    *,
    n_videos: int = 120,
    n_classes: int = 6,
    seconds: float = 2.0,
    fps: int = 16,
    size: int = 64,
    sample_rate: int = 16000,
    degrade_fraction: float = 0.25,
    seed: int = 0,
    broken: int = 0,
    threads: int = 1,
) -> Path:
    """Write a folder of labelled synthetic MP4 videos and a ground-truth CSV.

    Files go to ``out_dir/<class_name>/<index>.mp4`` (H.264 + AAC, mono audio). Classes are
    balanced (video ``i`` has class ``i % n_classes``). A fraction ``degrade_fraction`` of the
    videos has a degraded visual stream and another, disjoint, fraction a degraded audio stream.

    Parameters
    ----------
    out_dir : str or Path
        Output folder (created).
    n_videos : int
        Number of valid videos.
    n_classes : int
        Number of classes, at most ``len(VISUAL_SIGNATURES)`` (10).
    seconds : float
        Duration of each clip in seconds.
    fps : int
        Frame rate of the written videos.
    size : int
        Frame height and width in pixels (even).
    sample_rate : int
        Audio sample rate in Hz.
    degrade_fraction : float
        Fraction of videos whose video stream is degraded; the same fraction (disjoint) gets a
        degraded audio stream. Must be in [0, 0.5].
    seed : int
        Seed; the output is a deterministic function of all arguments.
    broken : int
        Number of extra broken files (cycling through a truncated MP4, a video without audio,
        a text file named ``.mp4`` and a 0.5 s clip) written into the class folders as
        ``broken_<k>_<kind>.mp4``. They are *not* listed in the ground truth.
    threads : int
        Videos rendered and encoded at once (each from its own generator, so the files are
        the same on any number; the demo uses 2).

    Returns
    -------
    Path
        ``out_dir/ground_truth.csv`` with columns ``path`` (relative to ``out_dir``, POSIX),
        ``label`` (class name) and ``degraded`` (``""``, ``"video"`` or ``"audio"``).

    Examples
    --------
    >>> import tempfile
    >>> csv_path = make_synthetic_dataset(tempfile.mkdtemp(), n_videos=4, n_classes=2)
    >>> csv_path.name
    'ground_truth.csv'
    """
    if not 1 <= n_classes <= len(VISUAL_SIGNATURES):
        raise ValueError(f"n_classes must be in [1, {len(VISUAL_SIGNATURES)}], got {n_classes}")
    if n_videos < 1 or broken < 0:
        raise ValueError(f"need n_videos >= 1 and broken >= 0, got {n_videos} and {broken}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if size < 8 or size % 2:
        raise ValueError(f"size must be an even number >= 8, got {size}")
    if not 0.0 <= degrade_fraction <= 0.5:
        raise ValueError(f"degrade_fraction must be in [0, 0.5], got {degrade_fraction}")
    if seconds <= 0 or fps < 1:
        raise ValueError(f"need seconds > 0 and fps >= 1, got {seconds} and {fps}")
    out_dir = Path(out_dir)
    names = [f"c{c:02d}_{name}" for c, name in enumerate(list(VISUAL_SIGNATURES)[:n_classes])]
    order = np.random.default_rng([seed, 1]).permutation(n_videos)
    n_deg = int(round(degrade_fraction * n_videos))
    degraded = np.full(n_videos, "", dtype=object)
    degraded[order[:n_deg]] = "video"
    degraded[order[n_deg : 2 * n_deg]] = "audio"
    n_frames = max(int(round(seconds * fps)), 1)

    def write_video(i: int) -> tuple[str, str, str]:
        cls = i % n_classes
        rng = np.random.default_rng([seed, 2, i])
        frames = _render_video(rng, cls, n_frames, fps, size, degraded[i] == "video")
        wave = _render_audio(rng, cls, n_classes, seconds, sample_rate, degraded[i] == "audio")
        rel = f"{names[cls]}/{i:05d}.mp4"
        write_mp4(out_dir / rel, frames, fps, wave, sample_rate)
        return rel, names[cls], degraded[i]

    if threads == 1:
        rows = [write_video(i) for i in range(n_videos)]
    else:
        with ThreadPoolExecutor(min(threads, n_videos)) as pool:
            rows = list(pool.map(write_video, range(n_videos)))
    for k in range(broken):
        kind = _BROKEN_KINDS[k % len(_BROKEN_KINDS)]
        path = out_dir / names[k % n_classes] / f"broken_{k:03d}_{kind}.mp4"
        _write_broken(path, kind, np.random.default_rng([seed, 3, k]), fps, sample_rate)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "degraded"])
    writer.writerows(rows)
    csv_path = out_dir / "ground_truth.csv"
    csv_path.write_text(buffer.getvalue())
    return csv_path


def make_flash_click_video(
    path: str | Path,
    *,
    events: tuple[float, ...] = (0.8,),
    seconds: float = 2.0,
    fps: int = 25,
    size: int = 32,
    sample_rate: int = 16000,
) -> Path:
    """Write a dark, silent video with a white flash frame and an audio click at each event.

    For testing audio-visual alignment: at every time in ``events`` the frame shown is white
    and a 5 ms click starts in the audio.

    Parameters
    ----------
    path : str or Path
        Output MP4 file.
    events : tuple of float
        Event times in seconds; each is rounded to the nearest frame time ``k / fps``.
    seconds, fps, size, sample_rate
        Duration, frame rate, frame size (even) and audio sample rate.

    Returns
    -------
    Path
        ``path``.
    """
    n_frames = int(round(seconds * fps))
    frames = np.full((n_frames, size, size, 3), 16, dtype=np.uint8)
    wave = np.zeros(int(round(seconds * sample_rate)), dtype=np.float32)
    for when in events:
        k = int(round(when * fps))
        if not 0 <= k < n_frames:
            raise ValueError(f"event at {when} s is outside the {seconds} s video")
        frames[k] = 255
        start = int(round(k / fps * sample_rate))
        wave[start : start + max(sample_rate // 200, 1)] = 0.9
    return write_mp4(path, frames, fps, wave, sample_rate)
