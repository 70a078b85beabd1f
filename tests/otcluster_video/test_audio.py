from __future__ import annotations

import pytest
import torch

from otcluster_video import (
    LogMelSpectrogram,
    load_preset,
    n_spectrogram_frames,
    spec_augment,
    volume_jitter,
    white_noise,
)


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


def _peak_band(spec: LogMelSpectrogram, hz: float, semitones: float = 0.0) -> int:
    t = torch.arange(16000) / 16000
    return int(spec(torch.sin(2 * torch.pi * hz * t), semitones).mean(-1).argmax())


@pytest.mark.parametrize("hz, semitones", [(440.0, 12.0), (880.0, -12.0), (300.0, 5.0),
                                           (1000.0, 3.0), (2500.0, -7.0)])
def test_pitch_shift_moves_a_tone_to_the_band_of_the_shifted_tone(hz, semitones):
    spec = LogMelSpectrogram(sample_rate=16000, n_mels=64, n_fft=512, window="hann")
    shifted = hz * 2 ** (semitones / 12)
    assert _peak_band(spec, hz, semitones) == _peak_band(spec, shifted)
    assert _peak_band(spec, hz, semitones) != _peak_band(spec, hz)


def test_pitch_shift_zero_is_the_plain_image_and_down_empties_the_top_bands():
    spec = LogMelSpectrogram(sample_rate=16000, n_mels=64, n_fft=512, window="hann")
    wave = torch.randn(16000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(spec(wave, 0.0), spec(wave))
    assert torch.allclose(spec(wave, 1e-6), spec(wave), atol=1e-4)
    down = spec(wave, -12.0)  # 0-8 kHz move to 0-4 kHz: the bands above 4 kHz get nothing
    floor = torch.log(torch.tensor(spec.log_offset))
    assert torch.allclose(down[-5:], floor.expand(5, down.shape[1]))
    assert (spec(wave)[-5:] > floor + 1).all()
    with pytest.raises(ValueError, match="semitones must be finite"):
        spec(wave, float("nan"))


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


@pytest.mark.parametrize("seed", range(6))
def test_spec_augment_hides_one_band_per_axis_with_the_clip_mean(seed):
    torch.manual_seed(seed)
    spec = torch.randn(64, 99) + 3.0
    out = spec_augment(spec, 8, 10)
    assert out.shape == spec.shape and torch.equal(spec, spec.clone())  # input not modified
    changed = out != spec
    rows, cols = changed.all(1), changed.all(0)  # whole mel bins / whole frames replaced
    assert int(rows.sum()) <= 8 and int(cols.sum()) <= 10
    # every changed value lies in a masked bin or frame and holds the clip's mean
    assert torch.equal(changed, rows[:, None] | cols[None, :])
    assert torch.allclose(out[changed], torch.full_like(out[changed], float(spec.mean())))
    # a masked band is contiguous
    for mask in (rows, cols):
        idx = mask.nonzero().flatten()
        assert len(idx) == 0 or int(idx[-1] - idx[0]) + 1 == len(idx)


def test_spec_augment_masks_are_drawn_up_to_the_width_and_zero_is_off():
    spec = torch.randn(64, 99)
    assert torch.equal(spec_augment(spec, 0, 0), spec)
    torch.manual_seed(0)
    widths = [int((spec_augment(spec, 8, 0) != spec).all(1).sum()) for _ in range(300)]
    assert max(widths) == 7 and min(widths) == 0  # torchaudio draws v ~ U(0, 8), floored
    with pytest.raises(ValueError, match="n_mels, n_frames"):
        spec_augment(torch.randn(1, 64, 99), 8, 10)
    with pytest.raises(ValueError, match=r"mask widths \(65, 10\)"):
        spec_augment(spec, 65, 10)


@pytest.mark.parametrize("snr_db", [-30.0, 0.0, 10.0])
def test_white_noise_adds_noise_at_the_drawn_ratio(snr_db):
    torch.manual_seed(0)
    wave = 0.5 * torch.sin(torch.arange(16000) * 0.07)
    noisy = white_noise(wave, snr_db, snr_db)
    noise = noisy - wave
    measured = 10 * torch.log10(wave.pow(2).mean() / noise.pow(2).mean())
    assert abs(float(measured) - snr_db) < 0.01
    assert abs(float(noise.mean())) < 0.05 * float(noise.std())  # zero-mean noise
    drawn = []
    for seed in range(20):  # a range: each call draws its ratio from it
        torch.manual_seed(seed)
        n = white_noise(wave, -10.0, 5.0) - wave
        drawn.append(float(10 * torch.log10(wave.pow(2).mean() / n.pow(2).mean())))
    assert -10.0 - 1e-3 <= min(drawn) < max(drawn) <= 5.0 + 1e-3 and max(drawn) - min(drawn) > 5


def test_white_noise_keeps_silence_and_checks_its_input():
    assert torch.equal(white_noise(torch.zeros(400), -10.0, 0.0), torch.zeros(400))
    with pytest.raises(ValueError, match="low_db <= high_db"):
        white_noise(torch.zeros(400), 5.0, -5.0)
    with pytest.raises(ValueError, match=r"\(n_samples,\) waveform"):
        white_noise(torch.zeros(2, 400), -5.0, 5.0)
