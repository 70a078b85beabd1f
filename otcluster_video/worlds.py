"""Synthetic audio-visual *worlds*: families of MP4 data sets that stress one factor each.

Every world defines its classes in **both** streams (SeLaVi finds what the streams share), by
one visual factor and one acoustic factor; everything else is a nuisance drawn per clip:

============  =================================================================================
visual        class carried by
============  =================================================================================
texture       a large, high-contrast pattern with its own motion (:mod:`otcluster_video.synth`)
shape         a small object's shape (bounding box at most 9 % of the frame); it drifts in a
              random direction at a random speed from a random place
motion        the trajectory of an identical small disk (still, horizontal, vertical, diagonal,
              circle, figure eight); mirror images are the same class (the presets flip
              frames), so diagonals and circles take a random direction
shape+motion  both: class ``c`` is shape ``c % 4`` on trajectory ``c // 4``
============  =================================================================================

============  =================================================================================
audio         class carried by
============  =================================================================================
tone          fundamental, rhythm and timbre together (:mod:`otcluster_video.synth`)
timbre        the spectrum's shape (sine, odd harmonics, sawtooth, bell, buzz, hollow); the
              fundamental is drawn from the same 1.5 octaves for every class
pitch         a pitch band (log-spaced from 150 Hz to 4 kHz, one third of the spacing wide); the
              timbre is a nuisance
timbre+pitch  both: class ``c`` is timbre ``c % 4`` in pitch band ``c // 4``
============  =================================================================================

Nuisances: colours, position, speed, size (video); volume, background noise and a distractor
tone (audio). In a share ``degrade_fraction`` of the clips exactly one stream is degraded
(half of them the picture, half the sound; never both): the picture reduced to 2 x 2 blocks,
low contrast, heavy noise; the sound buried in loud noise. Class sizes are balanced or
Zipf-distributed (``zipf = s``: size of the ``r``-th largest class proportional to ``r**-s``).

:data:`WORLDS` holds the suite of ``benchmarks/bench_robustness_av.py``; :func:`make_world`
writes one. From the command line: ``python -m otcluster_video.worlds OUT --world shape``.
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ._mp4 import write_mp4
from .synth import VISUAL_SIGNATURES, _random_colour, _render_audio, _render_video, _soft

__all__ = ["AUDIO_NUISANCES", "NUISANCES", "VIDEO_NUISANCES", "WORLDS", "WorldSpec", "class_sizes",
           "make_world"]

_Grid = tuple[np.ndarray, np.ndarray, np.ndarray]  # t (T,1,1), x (1,1,S), y (1,S,1)
VIDEO_FACTORS = ("texture", "shape", "motion", "shape+motion")
AUDIO_FACTORS = ("tone", "timbre", "pitch", "timbre+pitch")


@dataclass(frozen=True)
class WorldSpec:
    """One synthetic world: what carries the class, the source format, the class sizes.

    Attributes
    ----------
    name : str
    video, audio : str
        Factors that carry the class (see the module docstring).
    n_classes : int
    size, fps, sample_rate, seconds
        Source format: square frames of ``size`` px, frame rate, audio rate in Hz, duration.
    degrade_fraction : float
        Share of clips with one degraded stream (half picture, half sound), in [0, 1].
    zipf : float
        Zipf exponent of the class sizes; 0 = balanced.
    note : str
        What the world tests.
    """

    name: str
    video: str
    audio: str
    n_classes: int = 6
    size: int = 64
    fps: int = 16
    sample_rate: int = 16000
    seconds: float = 2.0
    degrade_fraction: float = 0.0
    zipf: float = 0.0
    note: str = ""

    def __post_init__(self) -> None:
        if self.video not in VIDEO_FACTORS or self.audio not in AUDIO_FACTORS:
            raise ValueError(f"world {self.name!r}: video must be one of {VIDEO_FACTORS} and "
                             f"audio one of {AUDIO_FACTORS}, got {self.video!r} / {self.audio!r}")
        limit = min(_N_VISUAL[self.video], _N_AUDIO[self.audio])
        if not 2 <= self.n_classes <= limit:
            raise ValueError(f"world {self.name!r}: n_classes must be in [2, {limit}] for "
                             f"{self.video} / {self.audio}, got {self.n_classes}")
        if self.size < 16 or self.size % 2 or self.fps < 1 or self.seconds <= 0:
            raise ValueError(f"world {self.name!r}: need an even size >= 16, fps >= 1 and "
                             f"seconds > 0, got {self.size}, {self.fps}, {self.seconds}")
        if not 0.0 <= self.degrade_fraction <= 1.0 or self.zipf < 0:
            raise ValueError(f"world {self.name!r}: need degrade_fraction in [0, 1] and zipf >= 0")


# ---------------------------------------------------------------------------------- visual
# Shapes as signed distances (> 0 inside) in the object's frame, half-size ``r``: every shape
# fits in the box [-r, r]^2.
def _disk(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return r - np.sqrt(u**2 + v**2)


def _square(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return 0.8 * r - np.maximum(np.abs(u), np.abs(v))


def _triangle(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return np.minimum(np.minimum(r - v, (v + r) / 2.0 - np.abs(u)), v + r)


def _cross(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    w, au, av = 0.3 * r, np.abs(u), np.abs(v)
    return np.maximum(np.minimum(w - av, r - au), np.minimum(w - au, r - av))


def _ring(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return 0.25 * r - np.abs(np.sqrt(u**2 + v**2) - 0.72 * r)


def _bar(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return np.minimum(r - np.abs(u), 0.3 * r - np.abs(v))


SHAPES: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "disk": _disk, "square": _square, "triangle": _triangle, "cross": _cross, "ring": _ring,
    "bar": _bar,
}


def _still(rng: np.random.Generator, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return 0.03 * np.sin(7 * t + rng.uniform(0, 7)), 0.03 * np.cos(5 * t + rng.uniform(0, 7))


def _horizontal(rng: np.random.Generator, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ph = 2 * np.pi * rng.uniform(0.6, 1.0) * t + rng.uniform(0, 7)
    return rng.uniform(0.35, 0.5) * np.sin(ph), np.zeros_like(t)


def _vertical(rng: np.random.Generator, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ph = 2 * np.pi * rng.uniform(0.6, 1.0) * t + rng.uniform(0, 7)
    return np.zeros_like(t), rng.uniform(0.35, 0.5) * np.sin(ph)


def _diagonal(rng: np.random.Generator, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ph = 2 * np.pi * rng.uniform(0.6, 1.0) * t + rng.uniform(0, 7)
    a = rng.uniform(0.3, 0.4) * np.sin(ph)
    return a, a * rng.choice([-1.0, 1.0])


def _circle(rng: np.random.Generator, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ph = 2 * np.pi * rng.uniform(0.6, 1.0) * t * rng.choice([-1.0, 1.0]) + rng.uniform(0, 7)
    a = rng.uniform(0.3, 0.45)
    return a * np.cos(ph), a * np.sin(ph)


def _figure8(rng: np.random.Generator, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ph = 2 * np.pi * rng.uniform(0.5, 0.8) * t + rng.uniform(0, 7)
    return rng.uniform(0.35, 0.45) * np.sin(ph), rng.uniform(0.25, 0.35) * np.sin(2 * ph)


TRAJECTORIES: dict[str, Callable[[np.random.Generator, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "still": _still, "horizontal": _horizontal, "vertical": _vertical, "diagonal": _diagonal,
    "circle": _circle, "figure8": _figure8,
}
_COMBO_SHAPES, _COMBO_TRAJ = ("disk", "square", "triangle", "cross"), ("still", "horizontal", "circle")
_N_VISUAL = {"texture": len(VISUAL_SIGNATURES), "shape": len(SHAPES), "motion": len(TRAJECTORIES),
             "shape+motion": len(_COMBO_SHAPES) * len(_COMBO_TRAJ)}


def _drift(rng: np.random.Generator, t: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Straight drift at a random speed and direction, reflected at the frame's edges."""
    speed, angle = rng.uniform(0.1, 0.5), rng.uniform(0, 2 * np.pi)
    span = 2.0 * (1.0 - margin)
    out = []
    for start, vel in ((rng.uniform(-1, 1), np.cos(angle)), (rng.uniform(-1, 1), np.sin(angle))):
        p = np.mod((start * (1 - margin) + 1 - margin) + speed * vel * t, 2 * span)
        out.append(np.where(p > span, 2 * span - p, p) - (1.0 - margin))
    return out[0], out[1]


def _object_mask(rng: np.random.Generator, spec: WorldSpec, cls: int, t: np.ndarray,
                 x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """(T, S, S) soft mask of the small object of class ``cls``, and its size, mean place and
    speed (:data:`VIDEO_NUISANCES`)."""
    r = rng.uniform(0.2, 0.3)  # half-size: box (2r)^2 / 4 <= 9 % of the frame
    if spec.video == "shape":
        shape, (cx, cy) = list(SHAPES.values())[cls], _drift(rng, t, r)
    else:
        traj = list(TRAJECTORIES)[cls] if spec.video == "motion" else _COMBO_TRAJ[cls // len(_COMBO_SHAPES)]
        shape = _disk if spec.video == "motion" else SHAPES[_COMBO_SHAPES[cls % len(_COMBO_SHAPES)]]
        dx, dy = TRAJECTORIES[traj](rng, t)
        free = 1.0 - r - np.maximum(np.abs(dx).max(), np.abs(dy).max())
        cx, cy = dx + rng.uniform(-free, free), dy + rng.uniform(-free, free)
    cx, cy = np.broadcast_arrays(np.asarray(cx), np.asarray(cy))  # dtypes kept: same frames
    px, py = cx.astype(np.float64).ravel(), cy.astype(np.float64).ravel()
    step = np.hypot(np.diff(px), np.diff(py))
    nuisance = {"size": r, "x": float(px.mean()), "y": float(py.mean()),
                "speed": float(step.mean() * spec.fps) if step.size else 0.0}
    cx, cy = cx.reshape(-1, 1, 1), cy.reshape(-1, 1, 1)
    return _soft(shape(x - cx, y - cy, r), 2.0 / spec.size), nuisance


def _degrade_frames(rng: np.random.Generator, frames: np.ndarray) -> np.ndarray:
    n, size = frames.shape[0], frames.shape[1]
    block = size // 2
    coarse = frames.reshape(n, 2, block, 2, block, 3).mean(axis=(2, 4))
    frames = np.repeat(np.repeat(coarse, block, 1), block, 2)
    frames = frames.mean() + 0.25 * (frames - frames.mean())
    return frames + rng.normal(0.0, 0.25, size=frames.shape)


def _video(rng: np.random.Generator, spec: WorldSpec, cls: int, degraded: bool
           ) -> tuple[np.ndarray, dict[str, float]]:
    """The frames and the nuisances drawn for them (:data:`VIDEO_NUISANCES`; none for
    ``texture``)."""
    n_frames = max(int(round(spec.seconds * spec.fps)), 1)
    if spec.video == "texture":
        return _render_video(rng, cls, n_frames, spec.fps, spec.size, degraded), {}
    axis = np.linspace(-1.0, 1.0, spec.size, dtype=np.float32)
    t = np.arange(n_frames, dtype=np.float32) / spec.fps
    mask, nuisance = _object_mask(rng, spec, cls, t, axis[None, None, :], axis[None, :, None])
    fg, bg = _random_colour(rng, (0.8, 1.0)), _random_colour(rng, (0.0, 0.3))
    nuisance["hue"] = colorsys.rgb_to_hsv(*(float(c) for c in fg))[0]
    nuisance["contrast"] = float(fg.mean() - bg.mean())
    frames = bg + mask[..., None] * (fg - bg)
    if degraded:
        frames = _degrade_frames(rng, frames)
    else:
        frames = frames + rng.normal(0.0, 0.03, size=frames.shape)
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), nuisance


# ----------------------------------------------------------------------------------- audio
#: Timbres: (partial frequency ratio, amplitude) pairs.
TIMBRES: dict[str, tuple[tuple[float, float], ...]] = {
    "sine": ((1.0, 1.0),),
    "odd": tuple((k, 1.0 / k) for k in (1, 3, 5, 7, 9)),
    "saw": tuple((k, 1.0 / k) for k in range(1, 9)),
    "bell": ((1.0, 1.0), (2.76, 0.6), (5.4, 0.4), (8.93, 0.25)),
    "buzz": tuple((k, 0.8) for k in range(1, 13)),
    "hollow": ((1.0, 0.3), (4.0, 1.0), (5.0, 0.8)),
}
_COMBO_TIMBRES, _N_BANDS = ("sine", "saw", "bell", "hollow"), 3
_N_AUDIO = {"tone": 10**6, "timbre": len(TIMBRES), "pitch": 12, "timbre+pitch": 4 * _N_BANDS}
#: Nuisances of the sound written to ``ground_truth.csv`` (empty where not drawn): the
#: fundamental in Hz, the volume, the distractor tone's frequency in Hz (clean sound only).
AUDIO_NUISANCES = ("f0", "volume", "distractor")
#: Nuisances of the pictures (empty for ``texture``): the object's size (its width as a share
#: of the frame's), its mean place ``x``, ``y`` (-1 to 1 across the frame) and speed (in those
#: units per second; part of the class in ``motion``), the hue of its colour (0-1) and its
#: brightness above the background's.
VIDEO_NUISANCES = ("size", "x", "y", "speed", "hue", "contrast")
NUISANCES = AUDIO_NUISANCES + VIDEO_NUISANCES


def _band(rng: np.random.Generator, band: int, n_bands: int) -> float:
    """A fundamental in band ``band`` of ``n_bands`` log-spaced bands from 150 Hz to 4 kHz."""
    step = np.log(4000.0 / 150.0) / max(n_bands - 1, 1)
    return float(150.0 * np.exp(step * (band + rng.uniform(-1 / 6, 1 / 6))))


def _sound(rng: np.random.Generator, spec: WorldSpec, cls: int, degraded: bool
           ) -> tuple[np.ndarray, dict[str, float]]:
    """The waveform and the nuisances drawn for it (:data:`NUISANCES`; none for ``tone``)."""
    sr = spec.sample_rate
    if spec.audio == "tone":
        return _render_audio(rng, cls, spec.n_classes, spec.seconds, sr, degraded), {}
    if spec.audio == "timbre":
        timbre, f0 = list(TIMBRES)[cls], 200.0 * 2 ** rng.uniform(0.0, 1.5)
    elif spec.audio == "pitch":
        timbre, f0 = str(rng.choice(list(TIMBRES))), _band(rng, cls, spec.n_classes)
    else:
        timbre = _COMBO_TIMBRES[cls % len(_COMBO_TIMBRES)]
        f0 = _band(rng, cls // len(_COMBO_TIMBRES), _N_BANDS)
    t = np.arange(round(spec.seconds * sr)) / sr
    tone = np.zeros_like(t)
    for ratio, amp in TIMBRES[timbre]:
        if ratio * f0 < 0.45 * sr:
            tone += amp * np.sin(2 * np.pi * ratio * f0 * t + rng.uniform(0, 7))
    tone /= np.abs(tone).max() + 1e-9
    volume = rng.uniform(0.3, 0.9)
    nuisance = {"f0": f0, "volume": volume}
    if degraded:
        wave = 0.04 * volume * tone + rng.normal(0.0, 0.35, t.size)
    else:
        nuisance["distractor"] = rng.uniform(150.0, 4000.0)
        distractor = 0.1 * np.sin(2 * np.pi * nuisance["distractor"] * t)
        wave = volume * (tone + distractor) + rng.normal(0.0, rng.uniform(0.005, 0.05), t.size)
    return np.clip(wave, -1.0, 1.0).astype(np.float32), nuisance


# ----------------------------------------------------------------------------------- worlds
def class_sizes(n_classes: int, total: int, zipf: float = 0.0) -> np.ndarray:
    """Class sizes summing to ``total``: proportional to ``rank**-zipf`` (largest first),
    rounded by largest remainders, each at least 1.

    Examples
    --------
    >>> class_sizes(3, 11, zipf=1.0).tolist()
    [6, 3, 2]
    """
    if total < n_classes:
        raise ValueError(f"need at least one video per class: total {total} < {n_classes} classes")
    w = np.arange(1, n_classes + 1, dtype=np.float64) ** -zipf
    exact = 1 + (total - n_classes) * w / w.sum()
    sizes = np.floor(exact).astype(np.int64)
    sizes[np.argsort(-(exact - sizes), kind="stable")[: total - sizes.sum()]] += 1
    return sizes


def _classes(spec: WorldSpec) -> list[str]:
    if spec.video == "texture":
        vis = list(VISUAL_SIGNATURES)
    elif spec.video == "shape":
        vis = list(SHAPES)
    elif spec.video == "motion":
        vis = list(TRAJECTORIES)
    else:
        vis = [f"{s}-{m}" for m in _COMBO_TRAJ for s in _COMBO_SHAPES]
    return [f"c{c:02d}_{vis[c]}" for c in range(spec.n_classes)]


_V = dict(video="shape", audio="timbre")
#: The suite: name -> spec. (a) texture, (b) shape, (c) motion, (d) timbre, (e) pitch band,
#: (f) one stream degraded, (g) Zipf sizes, (h) another source format, (i) 12 classes.
WORLDS: dict[str, WorldSpec] = {w.name: w for w in (
    WorldSpec("texture", "texture", "tone", note="today's synth: large textures, tones (a)"),
    WorldSpec("shape", **_V, note="small object's shape (b), sound timbre (d)"),
    WorldSpec("motion", "motion", "pitch", note="trajectory of an identical disk (c), pitch band (e)"),
    WorldSpec("degraded", **_V, degrade_fraction=2 / 3,
              note="shape / timbre, one stream degraded in 2/3 of the clips (f)"),
    WorldSpec("zipf", "texture", "tone", zipf=1.0, note="texture / tone, Zipf class sizes s = 1 (g)"),
    WorldSpec("format", **_V, size=128, fps=30, sample_rate=22050, seconds=2.4,
              note="shape / timbre in 128 px, 30 fps, 22.05 kHz, 2.4 s (h)"),
    WorldSpec("twelve", "shape+motion", "timbre+pitch", n_classes=12, size=128, fps=30,
              sample_rate=22050, seconds=2.4, degrade_fraction=2 / 3,
              note="the issue's held-out videos: 12 classes of shape+motion / timbre+pitch, "
                   "128 px, 30 fps, 22.05 kHz, 2.4 s, 2/3 degraded (h, i, f)"),
)}


def make_world(world: str | WorldSpec, out_dir: str | Path, *, videos_per_class: int = 16,
               seed: int = 0) -> Path:
    """Write one world's MP4 files (H.264 + AAC), ``ground_truth.csv`` and ``world.json``.

    Parameters
    ----------
    world : str or WorldSpec
        A name in :data:`WORLDS` or a spec.
    out_dir : str or Path
        Output folder; files go to ``out_dir/<class>/<index>.mp4``.
    videos_per_class : int
        Mean class size: ``videos_per_class * n_classes`` videos in all (Zipf worlds spread
        them unevenly, the class order shuffled by the seed).
    seed : int
        The output is a deterministic function of the spec, ``videos_per_class`` and ``seed``.

    Returns
    -------
    Path
        ``out_dir/ground_truth.csv``: ``path`` (relative, POSIX), ``label``, ``degraded``
        (``""``, ``"video"`` or ``"audio"``) and the :data:`NUISANCES` of the sound and the
        pictures (for telling what clusters follow when they do not follow the class; empty
        for ``tone`` and ``texture``).
    """
    spec = WORLDS[world] if isinstance(world, str) else world
    if videos_per_class < 1:
        raise ValueError(f"videos_per_class must be >= 1, got {videos_per_class}")
    out_dir, names = Path(out_dir), _classes(spec)
    rng = np.random.default_rng([seed, 11])
    sizes = class_sizes(spec.n_classes, videos_per_class * spec.n_classes, spec.zipf)
    if spec.zipf:
        sizes = sizes[rng.permutation(spec.n_classes)]
    y = np.repeat(np.arange(spec.n_classes), sizes)
    y = y[rng.permutation(y.size)]
    n_deg = int(round(spec.degrade_fraction * y.size))
    degraded = np.full(y.size, "", dtype=object)
    order = rng.permutation(y.size)
    degraded[order[: n_deg // 2]] = "video"
    degraded[order[n_deg // 2 : n_deg]] = "audio"
    rows = []
    for i, cls in enumerate(y):
        clip_rng = np.random.default_rng([seed, 12, i])
        frames, seen = _video(clip_rng, spec, int(cls), degraded[i] == "video")
        wave, nuisance = _sound(clip_rng, spec, int(cls), degraded[i] == "audio")
        nuisance.update(seen)
        rel = f"{names[cls]}/{i:05d}.mp4"
        write_mp4(out_dir / rel, frames, spec.fps, wave, spec.sample_rate)
        rows.append((rel, names[cls], degraded[i],
                     *(f"{nuisance[k]:.6g}" if k in nuisance else "" for k in NUISANCES)))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "degraded", *NUISANCES])
    writer.writerows(rows)
    (out_dir / "world.json").write_text(json.dumps(
        {**asdict(spec), "videos_per_class": videos_per_class, "seed": seed,
         "class_sizes": dict(zip(names, sizes.tolist()))}, indent=1))
    csv_path = out_dir / "ground_truth.csv"
    csv_path.write_text(buffer.getvalue())
    return csv_path


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m otcluster_video.worlds",
                                description="write one synthetic audio-visual world")
    p.add_argument("out", type=Path)
    p.add_argument("--world", choices=sorted(WORLDS), default="shape")
    p.add_argument("--videos-per-class", type=int, default=16)
    p.add_argument("--classes", type=int, help="override the world's number of classes")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    spec = WORLDS[a.world] if a.classes is None else replace(WORLDS[a.world], n_classes=a.classes)
    path = make_world(spec, a.out, videos_per_class=a.videos_per_class, seed=a.seed)
    print(path)
    return path


if __name__ == "__main__":
    main()
