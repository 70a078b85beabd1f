"""Write small H.264 + AAC MP4 files with PyAV (used by the synthetic data and the tests)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["write_mp4"]

_AAC_FRAME = 1024


def write_mp4(
    path: str | Path,
    frames: np.ndarray,
    fps: int | Fraction,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    *,
    crf: int = 20,
) -> Path:
    """Encode RGB frames (and optionally mono audio) into an MP4 file.

    Parameters
    ----------
    path : str or Path
        Output file; parent folders are created.
    frames : ndarray of shape (n_frames, height, width, 3), uint8
        RGB frames. Height and width must be even (yuv420p).
    fps : int or Fraction
        Frame rate of the video stream.
    audio : ndarray of shape (n_samples,), float, optional
        Mono waveform in [-1, 1]; ``None`` writes a file without an audio stream.
    sample_rate : int
        Sample rate of ``audio`` in Hz.
    crf : int
        x264 constant rate factor (lower is better quality).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"frames must be uint8 of shape (T, H, W, 3), got {frames.dtype} {frames.shape}"
        )
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"frame height and width must be even for yuv420p, got {height}x{width}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        vstream = container.add_stream("libx264", rate=Fraction(fps))
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        vstream.options = {"preset": "ultrafast", "crf": str(crf)}
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=sample_rate)
            astream.layout = "mono"
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = i
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode(None))
        if astream is not None:
            wave = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
            for start in range(0, wave.size, _AAC_FRAME):
                chunk = np.ascontiguousarray(wave[None, start : start + _AAC_FRAME])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate, frame.pts = sample_rate, start
                container.mux(astream.encode(frame))
            container.mux(astream.encode(None))
    return path
