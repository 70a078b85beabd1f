from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from otcluster_video import DecodeError, read_audio, read_clip
from otcluster_video._mp4 import write_mp4

FLASHES = (0.4, 1.2)  # conftest.flash_25fps


def _flash_frames(clip: torch.Tensor) -> list[int]:
    return (clip.float().mean(dim=(1, 2, 3)) > 128).nonzero().flatten().tolist()


def _click_time(wave: torch.Tensor, sample_rate: int) -> float:
    return (wave.abs() > 0.3).nonzero().flatten()[0].item() / sample_rate


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory) -> Path:
    """25 fps, 2 s; frame k has every pixel value equal to 4 * k (the frame number)."""
    frames = np.repeat((4 * np.arange(50, dtype=np.uint8))[:, None, None, None], 16, axis=1)
    frames = np.ascontiguousarray(np.broadcast_to(frames, (50, 16, 16, 3)))
    path = tmp_path_factory.mktemp("counter") / "counter.mp4"
    return write_mp4(path, frames, 25, np.zeros(32000, np.float32), 16000, crf=0)


def _frame_numbers(clip: torch.Tensor) -> list[int]:
    return (clip.float().mean(dim=(1, 2, 3)) / 4).round().long().tolist()


@pytest.mark.parametrize("layout, shape", [("THWC", (7, 16, 16, 3)), ("CTHW", (3, 7, 16, 16))])
def test_read_clip_frame_count_and_layout(counter_video, layout, shape):
    clip = read_clip(counter_video, 0.2, n_frames=7, fps=25, layout=layout)
    assert clip.dtype == torch.uint8 and tuple(clip.shape) == shape


def test_read_clip_same_rate_is_consecutive_frames(counter_video):
    clip = read_clip(counter_video, 0.4, n_frames=10, fps=25)
    assert _frame_numbers(clip) == list(range(10, 20))


def test_read_clip_resamples_25_to_30_fps_by_nearest_frame(counter_video):
    clip = read_clip(counter_video, 0.0, n_frames=30, fps=30)
    expected = [int(np.floor(i * 25 / 30 + 0.5 - 1e-9)) for i in range(30)]  # ties -> earlier
    assert _frame_numbers(clip) == expected
    assert len(set(expected)) == 25  # 5 of the 30 frames are repeats


def test_read_clip_downsamples_by_dropping_frames(counter_video):
    clip = read_clip(counter_video, 0.0, n_frames=8, fps=12.5)
    assert _frame_numbers(clip) == list(range(0, 16, 2))


def test_read_clip_after_seek_matches_sequential_decode(counter_video):
    late = read_clip(counter_video, 1.32, n_frames=5, fps=25)
    assert _frame_numbers(late) == [33, 34, 35, 36, 37]


def test_read_clip_repeats_last_frame_past_the_end(counter_video):
    clip = read_clip(counter_video, 1.84, n_frames=8, fps=25)
    assert _frame_numbers(clip) == [46, 47, 48, 49, 49, 49, 49, 49]
    with pytest.raises(DecodeError, match="after the last frame"):
        read_clip(counter_video, 5.0, n_frames=4, fps=25)


def test_read_clip_short_side_downscales_only(flash_25fps):
    assert read_clip(flash_25fps, 0, 2, 25, short_side=16).shape == (2, 16, 16, 3)
    assert read_clip(flash_25fps, 0, 2, 25, short_side=64).shape == (2, 32, 32, 3)


@pytest.mark.parametrize("start", [0.0, 0.25, 0.9])
@pytest.mark.parametrize("sample_rate", [16000, 24000])
def test_audio_window_is_aligned_with_video_window(flash_25fps, start, sample_rate):
    """The clip frame showing the flash and the audio click are at the same window time."""
    fps = 30
    clip = read_clip(flash_25fps, start, n_frames=30, fps=fps)
    wave = read_audio(flash_25fps, start, 1.0, sample_rate)
    assert wave.shape == (sample_rate,) and wave.dtype == torch.float32
    # clip frame i shows the source frame (25 fps) nearest to start + i / fps
    source = [int(np.floor((start + i / fps) * 25 + 0.5 - 1e-6)) for i in range(30)]
    flash_sources = {round(t * 25) for t in FLASHES}
    assert _flash_frames(clip) == [i for i, k in enumerate(source) if k in flash_sources]
    first_event = min(t for t in FLASHES if t >= start) - start
    assert _click_time(wave, sample_rate) == pytest.approx(first_event, abs=1e-3)


def test_read_audio_pads_outside_the_stream(flash_25fps):
    wave = read_audio(flash_25fps, -0.5, 1.0, 16000)
    assert wave[:8000].abs().max() == 0
    assert _click_time(wave, 16000) == pytest.approx(0.9, abs=0.002)
    tail = read_audio(flash_25fps, 1.5, 1.0, 16000)
    assert tail.shape == (16000,) and tail[9000:].abs().max() == 0


def test_decode_errors_are_specific(tmp_path, synth_dir):
    not_video = tmp_path / "x.mp4"
    not_video.write_text("hello")
    with pytest.raises(DecodeError) as err:
        read_clip(not_video, 0.0, 4, 8)
    assert err.value.path == str(not_video)
    no_audio = next(synth_dir.rglob("*no_audio.mp4"))
    assert read_clip(no_audio, 0.0, 4, 8).shape[0] == 4
    with pytest.raises(DecodeError, match="no audio stream"):
        read_audio(no_audio, 0.0, 1.0, 16000)
    with pytest.raises(DecodeError):
        read_clip(next(synth_dir.rglob("*truncated.mp4")), 0.0, 4, 8)
