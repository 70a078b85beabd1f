"""Audio features: log-mel filterbank images, as in the paper (1 x 257 x 199 for 2 s)."""

from __future__ import annotations

import math
import warnings

import torch
import torchaudio
from torch import nn

__all__ = ["LogMelSpectrogram", "n_spectrogram_frames", "spec_augment", "volume_jitter", "white_noise"]

_WINDOWS = ("rect", "hann", "hamming")


def _rect_window(length: int, **kwargs: object) -> torch.Tensor:
    return torch.ones(length, **kwargs)  # type: ignore[arg-type]


def n_spectrogram_frames(n_samples: int, sample_rate: int, win_ms: float, hop_ms: float) -> int:
    """Number of frames ``1 + (n_samples - win) // hop`` (frames fully inside the signal).

    Examples
    --------
    >>> n_spectrogram_frames(96000, 48000, 20.0, 10.0)
    199
    """
    win, hop = _samples(win_ms, sample_rate), _samples(hop_ms, sample_rate)
    return max(0, 1 + (n_samples - win) // hop)


def _samples(ms: float, sample_rate: int) -> int:
    return int(round(ms * sample_rate / 1000.0))


class LogMelSpectrogram(nn.Module):
    """Pre-emphasis, power mel spectrogram and log, framed like Kaldi / python_speech_features.

    Frame ``k`` covers samples ``[k * hop, k * hop + win)`` (no centre padding), so ``n``
    samples give ``1 + (n - win) // hop`` frames: 2 s at 48 kHz with a 20 ms window and 10 ms
    hop gives 199 frames. Built on :class:`torchaudio.transforms.MelSpectrogram`; the FFT size
    defaults to the next power of two above the window (1024 at 48 kHz, as in the public code).

    Parameters
    ----------
    sample_rate : int
        Sample rate of the input waveform in Hz.
    n_mels : int
        Number of mel filters (paper: 257).
    win_ms, hop_ms : float
        Window and hop lengths in milliseconds (paper: 20 and 10).
    n_fft : int, optional
        FFT size, at least the window length; default: next power of two.
    preemphasis : float
        Coefficient ``a`` of ``y[n] = x[n] - a x[n-1]`` (paper: 0.97; 0 disables).
    window : {"rect", "hann", "hamming"}
        Analysis window; the public code's features use a rectangular window.
    f_min, f_max : float
        Frequency range of the filterbank; ``f_max`` defaults to ``sample_rate / 2``.
    log_offset : float
        ``log(mel + log_offset)`` keeps silent frames (and empty filters) finite.

    Attributes
    ----------
    n_empty_filters : int
        Mel filters with no FFT bin (many filters on few bins, e.g. the paper's 257 filters on
        513 bins); their rows are the constant ``log(log_offset)``.

    Notes
    -----
    Input ``(..., n_samples)`` float; output ``(..., n_mels, n_frames)`` float.

    Examples
    --------
    >>> spec = LogMelSpectrogram(sample_rate=16000, n_mels=64)
    >>> spec(torch.zeros(1, 32000)).shape
    torch.Size([1, 64, 199])
    """

    def __init__(
        self,
        sample_rate: int = 48000,
        n_mels: int = 257,
        win_ms: float = 20.0,
        hop_ms: float = 10.0,
        n_fft: int | None = None,
        preemphasis: float = 0.97,
        window: str = "rect",
        f_min: float = 0.0,
        f_max: float | None = None,
        log_offset: float = 1e-6,
    ) -> None:
        super().__init__()
        win, hop = _samples(win_ms, sample_rate), _samples(hop_ms, sample_rate)
        if win < 2 or hop < 1:
            raise ValueError(f"window {win_ms} ms / hop {hop_ms} ms too short at {sample_rate} Hz")
        n_fft = n_fft or 2 ** math.ceil(math.log2(win))
        if n_fft < win:
            raise ValueError(f"n_fft={n_fft} is shorter than the window ({win} samples)")
        if window not in _WINDOWS:
            raise ValueError(f"window must be one of {_WINDOWS}, got {window!r}")
        if not 0.0 <= preemphasis < 1.0:
            raise ValueError(f"preemphasis must be in [0, 1), got {preemphasis}")
        window_fn = {
            "rect": _rect_window,
            "hann": torch.hann_window,
            "hamming": torch.hamming_window,
        }
        with warnings.catch_warnings():  # empty filters are reported via n_empty_filters
            warnings.filterwarnings("ignore", message=".*filterbank has all zero values.*")
            self.mel = torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate,
                n_fft=n_fft,
                win_length=win,
                hop_length=hop,
                f_min=f_min,
                f_max=f_max,
                n_mels=n_mels,
                window_fn=window_fn[window],
                power=2.0,
                center=False,
            )
        self.n_empty_filters = int((self.mel.mel_scale.fb.sum(0) == 0).sum())
        # torch.stft centres a short window inside n_fft: pad so frame k starts at k * hop.
        self._pad = ((n_fft - win) // 2, n_fft - win - (n_fft - win) // 2)
        self.sample_rate, self.win, self.hop, self.n_mels = sample_rate, win, hop, n_mels
        self.preemphasis, self.log_offset = preemphasis, log_offset

    def n_frames(self, n_samples: int) -> int:
        """Number of output frames for ``n_samples`` input samples."""
        return max(0, 1 + (n_samples - self.win) // self.hop)

    def forward(self, waveform: torch.Tensor, semitones: float = 0.0) -> torch.Tensor:
        """Log-mel image of ``waveform`` ``(..., n_samples)`` -> ``(..., n_mels, n_frames)``.

        ``semitones`` shifts the pitch (every frequency times ``2 ** (semitones / 12)``, the
        duration unchanged; a training augmentation): each FFT bin feeds the mel band of the
        frequency it moves to. Bands above the shifted Nyquist frequency (a downward shift)
        read the constant ``log(log_offset)``.
        """
        if waveform.shape[-1] < self.win:
            raise ValueError(
                f"waveform has {waveform.shape[-1]} samples, fewer than one window ({self.win})"
            )
        if not math.isfinite(semitones):
            raise ValueError(f"semitones must be finite, got {semitones}")
        x = waveform.float()
        if self.preemphasis:
            x = torch.cat([x[..., :1], x[..., 1:] - self.preemphasis * x[..., :-1]], dim=-1)
        x = nn.functional.pad(x, self._pad)
        if semitones == 0.0:
            return torch.log(self.mel(x) + self.log_offset)
        power = self.mel.spectrogram(x)  # (..., n_freqs, n_frames)
        scale, factor = self.mel.mel_scale, 2.0 ** (semitones / 12.0)
        with warnings.catch_warnings():  # a downward shift leaves the top filters empty
            warnings.filterwarnings("ignore", message=".*filterbank has all zero values.*")
            # FFT bin k read as frequency factor * f_k: bin k feeds the band of its shifted image
            fb = torchaudio.functional.melscale_fbanks(
                scale.n_stft, scale.f_min, scale.f_max, scale.n_mels,
                int(round(scale.sample_rate * factor)), scale.norm, scale.mel_scale,
            )
        mel = torch.matmul(power.transpose(-1, -2), fb.to(power.dtype)).transpose(-1, -2)
        return torch.log(mel + self.log_offset)


def volume_jitter(
    waveform: torch.Tensor,
    low: float = 0.9,
    high: float = 1.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Scale a waveform by one factor drawn from ``U(low, high)`` (training augmentation).

    Parameters
    ----------
    waveform : Tensor of shape (..., n_samples)
        Input; not modified.
    low, high : float
        Range of the factor (paper: 0.9, 1.1).
    generator : torch.Generator, optional
        Random source.

    Returns
    -------
    Tensor of shape (..., n_samples)
    """
    factor = low + (high - low) * torch.rand((), generator=generator)
    return waveform * factor


def white_noise(waveform: torch.Tensor, low_db: float, high_db: float) -> torch.Tensor:
    """Add white Gaussian noise at a signal-to-noise ratio drawn from ``U(low_db, high_db)`` dB
    (training augmentation; torch's global random source; :func:`torchaudio.functional.add_noise`).

    Parameters
    ----------
    waveform : Tensor of shape (n_samples,)
        Input; not modified. A silent waveform stays silent.
    low_db, high_db : float
        Range of the ratio of the signal's power to the noise's, in decibels.

    Returns
    -------
    Tensor of shape (n_samples,)
    """
    if waveform.dim() != 1 or not low_db <= high_db:
        raise ValueError(f"need a (n_samples,) waveform and low_db <= high_db, got shape "
                         f"{tuple(waveform.shape)} and [{low_db}, {high_db}]")
    snr = low_db + (high_db - low_db) * torch.rand(())
    noise = torch.randn_like(waveform)
    return torchaudio.functional.add_noise(waveform, noise, snr.to(waveform.dtype))


def spec_augment(spec: torch.Tensor, freq_mask: int, time_mask: int) -> torch.Tensor:
    """SpecAugment's masks (Park et al. 2019), training augmentation: hide one band of up to
    ``freq_mask`` mel bins and one of up to ``time_mask`` frames (widths drawn uniformly by
    torchaudio, from torch's global random source), filled with the clip's mean log-mel.

    Parameters
    ----------
    spec : Tensor of shape (n_mels, n_frames)
        Log-mel image; not modified.
    freq_mask, time_mask : int
        Widest mask along each axis, at most its size; 0 leaves that axis alone.

    Returns
    -------
    Tensor of shape (n_mels, n_frames)
    """
    if spec.dim() != 2:
        raise ValueError(f"spec must be (n_mels, n_frames), got shape {tuple(spec.shape)}")
    if not (0 <= freq_mask <= spec.shape[0] and 0 <= time_mask <= spec.shape[1]):
        raise ValueError(f"mask widths ({freq_mask}, {time_mask}) must lie in [0, size] of a "
                         f"{tuple(spec.shape)} log-mel image")
    fill = float(spec.mean())
    for axis, width in ((0, freq_mask), (1, time_mask)):
        if width > 0:
            spec = torchaudio.functional.mask_along_axis(spec.unsqueeze(0), width, fill,
                                                         axis + 1).squeeze(0)
    return spec
