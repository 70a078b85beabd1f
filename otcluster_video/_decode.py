"""Decode a clip window (frames and audio) with PyAV, at a target frame rate and sample rate."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch
import torchaudio.functional as AF

from ._files import file_problem

__all__ = ["DecodeError", "read_audio", "read_clip"]

_AUDIO_MARGIN = 0.05  # seconds decoded on each side of an audio window, for the resampler
_SEEK_PREROLL = 0.1  # seconds before a window to seek to (decoders need a little history)


class DecodeError(RuntimeError):
    """A file (or a window of it) could not be decoded.

    Attributes
    ----------
    path : str
        The file.
    reason : str
        What went wrong.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"cannot decode {path}: {reason}")
        self.path, self.reason = str(path), reason


def _open(path: str | Path) -> av.container.InputContainer:
    problem = file_problem(path)  # only regular files are opened (a FIFO would block forever)
    if problem is not None:
        raise DecodeError(path, f"{problem[0]}: {problem[1]}")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as err:
        raise DecodeError(path, f"{type(err).__name__}: {err}") from err


def _frame_times(
    container: av.container.InputContainer, stream: av.stream.Stream, start: float
) -> Iterator[tuple[float, av.frame.Frame]]:
    """Decoded frames of ``stream`` with their times in seconds from the stream start,
    beginning at (or shortly before) ``start``."""
    tb = stream.time_base
    offset = float(stream.start_time * tb) if stream.start_time is not None else 0.0
    if start > _SEEK_PREROLL:
        container.seek(int((start - _SEEK_PREROLL + offset) / tb), stream=stream, backward=True)
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        yield float(frame.pts * tb) - offset, frame


def _scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    if short_side is None or min(width, height) <= short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def read_clip(
    path: str | Path,
    start_sec: float,
    n_frames: int = 30,
    fps: float = 30.0,
    *,
    short_side: int | None = None,
    layout: Literal["THWC", "CTHW"] = "THWC",
) -> torch.Tensor:
    """Decode ``n_frames`` frames sampled at ``fps`` from ``start_sec`` on.

    Frame ``i`` is the source frame whose timestamp is nearest to ``start_sec + i / fps``
    (ties go to the earlier frame), so a 25 fps file read at 30 fps repeats some frames and a
    60 fps file read at 30 fps drops every other one. Times past the last frame repeat it.

    Parameters
    ----------
    path : str or Path
        Video file.
    start_sec : float
        Time of the first frame, in seconds from the start of the video stream.
    n_frames : int
        Number of frames to return.
    fps : float
        Sampling rate of the returned frames.
    short_side : int, optional
        Downscale (never upscale) so the shorter side has this many pixels, inside the decoder.
    layout : {"THWC", "CTHW"}
        Axis order of the result.

    Returns
    -------
    Tensor of shape (n_frames, height, width, 3) or (3, n_frames, height, width), uint8
        RGB frames.

    Raises
    ------
    DecodeError
        If the file cannot be opened, has no video stream, fails while decoding, or the window
        starts after the last frame.
    """
    if n_frames < 1 or fps <= 0:
        raise ValueError(f"need n_frames >= 1 and fps > 0, got {n_frames} and {fps}")
    if layout not in ("THWC", "CTHW"):
        raise ValueError(f"layout must be 'THWC' or 'CTHW', got {layout!r}")
    targets = max(start_sec, 0.0) + np.arange(n_frames) / fps
    chosen: list[av.VideoFrame] = []
    with _open(path) as container:
        if not container.streams.video:
            raise DecodeError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        half_frame = 0.5 / float(rate) if rate else 0.02
        prev: tuple[float, av.VideoFrame] | None = None
        try:
            for time, frame in _frame_times(container, stream, float(targets[0])):
                while len(chosen) < n_frames and prev is not None:
                    target = targets[len(chosen)]
                    if time - target < target - prev[0] - 1e-6:
                        break  # the new frame is nearer (ties go to prev): decide later
                    chosen.append(prev[1])
                prev = (time, frame)
                if len(chosen) == n_frames or time > targets[-1] + 2 * half_frame:
                    break
        except av.FFmpegError as err:
            raise DecodeError(path, f"{type(err).__name__}: {err}") from err
        if prev is None:
            raise DecodeError(path, f"no frame decoded at or after {start_sec:.3f} s")
        if not chosen and targets[0] > prev[0] + 2 * half_frame:
            raise DecodeError(path, f"window at {start_sec:.3f} s starts after the last frame")
        chosen += [prev[1]] * (n_frames - len(chosen))
        width, height = _scaled_size(
            stream.codec_context.width, stream.codec_context.height, short_side
        )
        arrays: dict[int, np.ndarray] = {}
        for frame in chosen:
            if id(frame) not in arrays:
                arrays[id(frame)] = frame.to_ndarray(
                    format="rgb24", width=width, height=height, interpolation="AREA"
                )
        clip = torch.from_numpy(np.stack([arrays[id(f)] for f in chosen]))
    return clip.permute(3, 0, 1, 2).contiguous() if layout == "CTHW" else clip


def _to_mono(frame: av.AudioFrame) -> np.ndarray:
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        data = data.reshape(-1, channels).T
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        data = (data.astype(np.float32) - (info.max + info.min + 1) / 2) / (info.max + 1)
    return data.astype(np.float32).reshape(channels, -1).mean(axis=0)


def read_audio(
    path: str | Path,
    start_sec: float,
    seconds: float,
    sample_rate: int,
) -> torch.Tensor:
    """Decode a mono audio window aligned with the video clock.

    Sample ``j`` of the result is the audio at time ``start_sec + j / sample_rate``; parts of
    the window before 0 or after the end of the stream are zeros. Channels are averaged and the
    stream is resampled with :func:`torchaudio.functional.resample`.

    Parameters
    ----------
    path : str or Path
        Video (or audio) file.
    start_sec : float
        Window start in seconds (may be negative).
    seconds : float
        Window length in seconds.
    sample_rate : int
        Output sample rate in Hz.

    Returns
    -------
    Tensor of shape (round(seconds * sample_rate),), float32
        Waveform in [-1, 1].

    Raises
    ------
    DecodeError
        If the file cannot be opened, has no audio stream or fails while decoding.
    """
    if seconds <= 0 or sample_rate < 1:
        raise ValueError(f"need seconds > 0 and sample_rate >= 1, got {seconds}, {sample_rate}")
    n_out = int(round(seconds * sample_rate))
    with _open(path) as container:
        if not container.streams.audio:
            raise DecodeError(path, "no audio stream")
        stream = container.streams.audio[0]
        native = stream.codec_context.sample_rate or sample_rate
        margin = 0.0 if native == sample_rate else _AUDIO_MARGIN
        lo, hi = start_sec - margin, start_sec + seconds + margin
        buffer = np.zeros(int(math.ceil((hi - lo) * native)), dtype=np.float32)
        try:
            for time, frame in _frame_times(container, stream, max(lo, 0.0)):
                if time >= hi:
                    break
                samples = _to_mono(frame)
                first = int(round((time - lo) * native))
                src_lo, dst_lo = max(0, -first), max(0, first)
                n = min(samples.size - src_lo, buffer.size - dst_lo)
                if n > 0:
                    buffer[dst_lo : dst_lo + n] = samples[src_lo : src_lo + n]
        except av.FFmpegError as err:
            raise DecodeError(path, f"{type(err).__name__}: {err}") from err
    wave = torch.from_numpy(buffer)
    if native != sample_rate:
        wave = AF.resample(wave, native, sample_rate)
        skip = int(round(margin * sample_rate))
        wave = wave[skip : skip + n_out]
    else:
        wave = wave[:n_out]
    if wave.numel() < n_out:
        wave = torch.nn.functional.pad(wave, (0, n_out - wave.numel()))
    return wave.contiguous()
