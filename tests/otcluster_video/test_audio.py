from __future__ import annotations

import pytest
import torch

from otcluster_video import LogMelSpectrogram, load_preset, n_spectrogram_frames, volume_jitter


def test_paper_config_gives_1x257x199_for_two_seconds():
    a = load_preset("paper").audio
    spec = LogMelSpectrogram(a.sample_rate, a.n_mels, a.win_ms, a.hop_ms, a.n_fft, a.preemphasis)
    wave = torch.randn(round(a.seconds * a.sample_rate))
    out = spec(wave).unsqueeze(0)
    assert tuple(out.shape) == (1, 257, 199) == (1, a.n_mels, a.n_frames)
    assert torch.isfinite(out).all()
    assert spec.n_empty_filters > 0  # 257 filters on 513 FFT bins: some are empty


def test_frame_count_formula_and_one_second():
    assert n_spectrogram_frames(48000, 48000, 20.0, 10.0) == 99
    spec = LogMelSpectrogram(sample_rate=16000, n_mels=64, n_fft=512, window="hann")
    assert spec(torch.zeros(3, 16000)).shape == (3, 64, 99)
    assert spec.n_frames(16000) == 99


def test_frames_start_at_multiples_of_the_hop():
    """An impulse at sample s only reaches the frames whose window [k*hop, k*hop+win) holds s."""
    spec = LogMelSpectrogram(sample_rate=16000, n_mels=40, preemphasis=0.0, log_offset=1e-12)
    wave = torch.zeros(16000)
    wave[160 * 30 + 5] = 1.0  # inside frames 29 (4640..4959) and 30 (4800..5119)
    energy = spec(wave).exp().sum(dim=0)
    assert (energy > 1e-6).nonzero().flatten().tolist() == [29, 30]


def test_preemphasis_attenuates_low_frequencies():
    t = torch.arange(16000) / 16000
    low = torch.sin(2 * torch.pi * 100 * t)
    plain = LogMelSpectrogram(16000, 40, preemphasis=0.0)(low).exp().sum()
    emphasised = LogMelSpectrogram(16000, 40, preemphasis=0.97)(low).exp().sum()
    assert emphasised < 0.05 * plain


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="n_fft"):
        LogMelSpectrogram(16000, 40, n_fft=128)
    with pytest.raises(ValueError, match="window"):
        LogMelSpectrogram(16000, 40, window="kaiser")
    with pytest.raises(ValueError, match="fewer than one window"):
        LogMelSpectrogram(16000, 40)(torch.zeros(100))


def test_volume_jitter_scales_by_one_factor_in_range():
    wave = torch.randn(1000)
    g = torch.Generator().manual_seed(0)
    factors = []
    for _ in range(200):
        out = volume_jitter(wave, 0.9, 1.1, generator=g)
        ratio = out / wave
        assert torch.allclose(ratio, ratio[0].expand_as(ratio))
        factors.append(ratio[0].item())
    assert 0.9 <= min(factors) < 0.92 and 1.08 < max(factors) <= 1.1
