"""Fitting a preset to the videos at hand: a preset never asks for more than the source has.

A preset names its input in source-independent units (seconds, Hz, pixels of the decoded
short side), so any source format is resampled to it: a 128 px / 30 fps / 22.05 kHz video and a
64 px / 16 fps / 16 kHz one give the cpu preset the same 8 x 32 x 32 clip and 16 kHz log-mels.
Where the source has *less* than the preset asks for, resampling would only invent data (frames
repeated, audio upsampled, frames enlarged) at the full cost. So, for the keys a user did not set
(``--set`` / overrides), :func:`adapt_to_source` lowers

* ``clip.fps`` to the videos' median frame rate, keeping the clip's duration (``n_frames``);
* ``audio.sample_rate`` to the median sample rate (the mel bands then end at its Nyquist);
* ``visual.resize``, ``visual.scale_jitter`` and ``visual.crop`` in proportion, to the
  smallest decoded short side the videos have (their median short side);

and says what it changed. It never raises a value. ``data.adapt_to_source = false`` turns it
off. The adapted values are what ``RUN/config.toml`` records, so ``label`` and ``evaluate``
read clips the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SourceFormat", "adapt_to_source"]

#: The smallest crop adaptation goes down to (the encoders' strides need a few pixels).
MIN_CROP = 16


@dataclass(frozen=True)
class SourceFormat:
    """Median frame rate, short side and audio sample rate of a set of videos."""

    fps: float
    short_side: int
    sample_rate: int | None

    @classmethod
    def of(cls, videos: Sequence[Any]) -> SourceFormat:
        """From :class:`~otcluster_video.VideoInfo` records (a manifest)."""
        if not videos:
            raise ValueError("no videos to read the source format from")
        rates = [v.sample_rate for v in videos if getattr(v, "sample_rate", None)]
        return cls(
            fps=float(np.median([v.fps for v in videos])),
            short_side=int(np.median([min(v.width, v.height) for v in videos])),
            sample_rate=int(np.median(rates)) if rates else None,
        )


def adapt_to_source(config: Any, source: SourceFormat,
                    fixed: Iterable[str] = ()) -> tuple[Any, list[str]]:
    """``(config adapted to source, one line per change)``; keys in ``fixed`` stay as they are.

    Examples
    --------
    >>> from otcluster_video import load_preset
    >>> cfg, changes = adapt_to_source(load_preset("cpu"), SourceFormat(4.0, 24, 8000))
    >>> cfg.clip.fps, cfg.clip.n_frames, cfg.audio.sample_rate, cfg.visual.crop
    (4.0, 4, 8000, 19)
    >>> adapt_to_source(load_preset("cpu"), SourceFormat(30.0, 128, 22050))[1]
    []
    """
    fixed = set(fixed)
    if not config.data.adapt_to_source:
        return config, []
    changes: list[str] = []
    clip, audio, visual = config.clip, config.audio, config.visual
    if source.fps < clip.fps and source.fps > 0 and "clip.fps" not in fixed:
        n = clip.n_frames if "clip.n_frames" in fixed else max(1, round(clip.seconds * source.fps))
        changes.append(f"clip.fps {clip.fps:g} -> {source.fps:g}, clip.n_frames {clip.n_frames} "
                       f"-> {n} (the videos' median frame rate is {source.fps:g})")
        clip = dataclasses.replace(clip, fps=source.fps, n_frames=n)
    if (source.sample_rate is not None and source.sample_rate < audio.sample_rate
            and "audio.sample_rate" not in fixed):
        changes.append(f"audio.sample_rate {audio.sample_rate} -> {source.sample_rate} "
                       "(the videos' median sample rate)")
        audio = dataclasses.replace(audio, sample_rate=source.sample_rate)
    visual_keys = {"visual.resize", "visual.scale_jitter", "visual.crop"}
    if source.short_side < visual.decode_short_side and not visual_keys & fixed:
        new = _scaled_visual(visual, source.short_side)
        if new != visual:
            changes.append(f"visual.resize {visual.resize} -> {new.resize}, visual.scale_jitter "
                           f"{list(visual.scale_jitter)} -> {list(new.scale_jitter)}, visual.crop "
                           f"{visual.crop} -> {new.crop} (the videos' median short side is "
                           f"{source.short_side} px)")
            visual = new
    if not changes:
        return config, []
    return dataclasses.replace(config, clip=clip, audio=audio, visual=visual), changes


def _scaled_visual(visual: Any, short_side: int) -> Any:
    """Resize, jitter and crop scaled by ``short_side / decode_short_side`` (crop >= 16)."""
    f = short_side / visual.decode_short_side
    crop = min(visual.crop, max(MIN_CROP, round(visual.crop * f)))
    resize = max(crop, round(visual.resize * f))
    lo, hi = visual.scale_jitter
    jitter = (0, 0) if (lo, hi) == (0, 0) else (max(crop, round(lo * f)), max(crop, round(hi * f)))
    return dataclasses.replace(visual, resize=resize, scale_jitter=jitter, crop=crop)
