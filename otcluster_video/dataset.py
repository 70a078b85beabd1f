"""``AVDataset``: one audio-visual clip per video, as a dict of modality tensors plus its index.

Item ``i`` always carries ``"index": i``, even when video ``i`` fails to decode and the clip of a
neighbour stands in for it (so no caller needs to rewrite indices); ``return_source=True`` adds
``"source"``, the index whose clip the item holds, so inference can mark such videos.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from otcluster._io import atomic_open
from otcluster._threads import limit_threads

from ._audio import LogMelSpectrogram, spec_augment, volume_jitter, white_noise
from ._config import VideoRecipeConfig
from ._decode import DecodeError, _scaled_size, read_audio, read_clip
from ._probe import VideoInfo, load_manifest
from ._transforms import VideoTransform

__all__ = ["AVDataset"]

logger = logging.getLogger("otcluster_video")


class AVDataset(Dataset):
    """Audio-visual clips of the videos in a manifest.

    Item ``i`` is one clip of video ``i``: a window of ``clip.n_frames`` frames at ``clip.fps``
    and an audio window of ``audio.seconds`` with the same centre. The centre is random in
    training and the middle of the video in evaluation.

    Parameters
    ----------
    manifest : str, Path or sequence of VideoInfo
        A manifest written by :func:`prepare`, or its loaded rows.
    config : VideoRecipeConfig
        Uses the ``data``, ``clip``, ``audio`` and ``visual`` sections.
    train : bool
        Random windows and augmentations (training) or deterministic ones (evaluation).
    cache_dir : str or Path, optional
        Cache of decoded videos (uint8 frames at ``clip.fps``, downscaled to the largest size the
        transforms need, plus the mono waveform at ``audio.sample_rate``), two ``.npy`` files
        per video (read memory-mapped), filled on first use. ``None`` (default): use
        ``config.data.cache_dir``; ``""``: no cache.
        Cached clips start on the nearest multiple of ``1 / clip.fps``.
    return_label : bool
        Add ``"label"``: the index of the video's folder name in :attr:`class_names`
        (-1 when unknown). For evaluation only.
    position : float, optional
        Fixed place of the window centre in the usable span, from 0 (as early as possible) to
        1 (as late as possible), e.g. to take several evaluation clips per video. Default:
        random in training, 0.5 (the middle) in evaluation.
    return_source : bool
        Add ``"source"``: the index of the video whose clip the item holds (``!= "index"``
        when the video failed to decode and a neighbour stood in). Works across DataLoader
        workers, unlike :attr:`decode_failures`.

    Attributes
    ----------
    videos : list of VideoInfo
        The manifest rows; the position is the sample index.
    class_names : list of str
        Sorted distinct non-empty labels.
    labels : list of int
        Label index of every video (-1 when unknown).
    decode_failures : Counter
        Decode failures per file path, in this process (each DataLoader worker has its own).

    Notes
    -----
    ``dataset[i]`` is ``{"video": (3, n_frames, crop, crop) float32, "audio": (1, n_mels,
    n_audio_frames) float32, "index": i}`` (plus ``"label"`` and ``"source"`` if asked). A
    video that fails to decode is logged, counted, remembered as bad, and the next video's clip
    stands in for it (the item keeps ``"index": i``), at most ``data.max_retries`` times.
    """

    def __init__(
        self,
        manifest: str | Path | Sequence[VideoInfo],
        config: VideoRecipeConfig,
        *,
        train: bool,
        cache_dir: str | Path | None = None,
        return_label: bool = False,
        position: float | None = None,
        return_source: bool = False,
    ) -> None:
        if position is not None and not 0.0 <= position <= 1.0:
            raise ValueError(f"position must be in [0, 1], got {position}")
        if isinstance(manifest, (str, Path)):
            manifest = load_manifest(manifest)
        self.videos: list[VideoInfo] = list(manifest)
        if not self.videos:
            raise ValueError("AVDataset needs at least one video; the manifest is empty")
        self.config, self.train, self.return_label = config, train, return_label
        self.position, self.return_source = position, return_source
        if cache_dir is None:
            cache_dir = config.data.cache_dir or None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.transform = VideoTransform(config.visual, train)
        a = config.audio
        self.spectrogram = LogMelSpectrogram(
            sample_rate=a.sample_rate,
            n_mels=a.n_mels,
            win_ms=a.win_ms,
            hop_ms=a.hop_ms,
            n_fft=a.n_fft,
            preemphasis=a.preemphasis,
            window=a.window,
        )
        self.class_names = sorted({v.label for v in self.videos if v.label})
        ids = {name: i for i, name in enumerate(self.class_names)}
        self.labels = [ids.get(v.label, -1) for v in self.videos]
        self.decode_failures: Counter[str] = Counter()
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.videos)

    def windows(self, index: int) -> tuple[float, float]:
        """Start times in seconds of the video and audio windows (one draw for ``index``)."""
        info = self.videos[index]
        clip_s, audio_s = self.config.clip.seconds, self.config.audio.seconds
        span = max(clip_s, audio_s)
        duration = info.duration
        if info.has_audio and info.audio_duration > 0:
            duration = min(duration, info.audio_duration)
        centre = duration / 2
        if duration > span and (self.train or self.position is not None):
            where = float(torch.rand(())) if self.position is None else self.position
            centre = span / 2 + where * (duration - span)
        return max(centre - clip_s / 2, 0.0), centre - audio_s / 2

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.videos)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} videos")
        index %= n
        errors = []
        for attempt in range(self.config.data.max_retries + 1):
            j = (index + attempt) % n
            if j in self._bad:
                continue
            try:
                with limit_threads(1):
                    item = self._load(j)
            except DecodeError as err:
                self._bad.add(j)
                self.decode_failures[err.path] += 1
                errors.append(str(err))
                logger.warning("skipping sample %d: %s", j, err)
                continue
            item["index"] = index
            if self.return_label:
                item["label"] = self.labels[index]
            if self.return_source:
                item["source"] = j
            return item
        detail = "; ".join(errors[-3:]) or "all were marked undecodable earlier"
        raise RuntimeError(
            f"sample {index} and the next {self.config.data.max_retries} failed to decode: "
            + detail
        )

    def _load(self, index: int) -> dict[str, Any]:
        info = self.videos[index]
        video_start, audio_start = self.windows(index)
        clip, a = self.config.clip, self.config.audio
        if self.cache_dir is not None:
            frames, wave = self._from_cache(info, video_start, audio_start)
        else:
            frames = read_clip(
                info.path,
                video_start,
                clip.n_frames,
                clip.fps,
                short_side=self.config.visual.decode_short_side,
            )
            wave = self._read_audio(info, audio_start)
        if self.train and a.volume_jitter != (1.0, 1.0):
            wave = volume_jitter(wave, *a.volume_jitter)
        if self.train and a.noise > 0 and float(torch.rand(())) < a.noise:
            wave = white_noise(wave, *a.noise_snr)
        shift = 0.0
        if self.train and a.pitch_shift > 0:
            shift = float(a.pitch_shift * (2.0 * torch.rand(()) - 1.0))
        spec = self.spectrogram(wave, shift)
        if a.normalize == "clip":
            spec = spec - spec.mean()
        if self.train:
            spec = spec_augment(spec, a.freq_mask, a.time_mask)
        return {"video": self.transform(frames), "audio": spec.unsqueeze(0)}

    def _read_audio(self, info: VideoInfo, start: float) -> torch.Tensor:
        a = self.config.audio
        if not info.has_audio:  # only with data.require_audio = false: silence
            return torch.zeros(int(round(a.seconds * a.sample_rate)))
        return read_audio(info.path, start, a.seconds, a.sample_rate)

    def _cache_stem(self, info: VideoInfo) -> Path:
        assert self.cache_dir is not None
        try:
            stat = os.stat(info.path)
        except OSError as err:
            raise DecodeError(info.path, f"cannot stat: {err}") from err
        key = "|".join(
            str(x)
            for x in (
                info.path,
                stat.st_size,
                stat.st_mtime_ns,
                self.config.clip.fps,
                self.config.visual.decode_short_side,
                self.config.audio.sample_rate,
            )
        )
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self.cache_dir / digest[:2] / digest

    def _from_cache(
        self, info: VideoInfo, video_start: float, audio_start: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        stem = self._cache_stem(info)
        frames_file, audio_file = Path(f"{stem}.frames.npy"), Path(f"{stem}.audio.npy")
        frames_all = wave_all = None
        if frames_file.is_file():
            try:  # memory-mapped: only the clip's frames are read from disk
                frames_all = np.load(frames_file, mmap_mode="r")
                wave_all = np.load(audio_file, mmap_mode="r")
                self._check_cached(info, frames_all, wave_all)
            except (OSError, ValueError) as err:
                logger.warning("rebuilding damaged cache entry %s: %s", frames_file, err)
                frames_all = None
        if frames_all is None or wave_all is None:
            entry = self._decode_whole(info)
            stem.parent.mkdir(parents=True, exist_ok=True)
            # audio first, frames last: a frames file implies a complete entry
            for file, array in ((audio_file, entry["audio"]), (frames_file, entry["frames"])):
                with atomic_open(file, "wb") as f:  # safe with several DataLoader workers
                    np.save(f, array.numpy())
            frames_all, wave_all = entry["frames"].numpy(), entry["audio"].numpy()
        fps, sr = self.config.clip.fps, self.config.audio.sample_rate
        first = int(round(video_start * fps))
        idx = np.clip(first + np.arange(self.config.clip.n_frames), 0, len(frames_all) - 1)
        n_audio = int(round(self.config.audio.seconds * sr))
        a0 = int(round(audio_start * sr))
        wave = torch.zeros(n_audio)
        lo, hi = max(a0, 0), min(a0 + n_audio, len(wave_all))
        if hi > lo:
            wave[lo - a0 : hi - a0] = torch.from_numpy(np.array(wave_all[lo:hi]))
        return torch.from_numpy(np.array(frames_all[idx])), wave

    def _check_cached(self, info: VideoInfo, frames: np.ndarray, wave: np.ndarray) -> None:
        """``ValueError`` unless a cache entry has the shapes :meth:`_decode_whole` writes."""
        width, height = _scaled_size(info.width, info.height, self.config.visual.decode_short_side)
        expected = (self._n_cached_frames(info), height, width, 3)
        if frames.shape != expected or frames.dtype != np.uint8:
            raise ValueError(f"frames {frames.shape} {frames.dtype}, expected {expected} uint8")
        if wave.ndim != 1 or wave.shape[0] == 0 or wave.dtype != np.float32:
            raise ValueError(f"audio {wave.shape} {wave.dtype}, expected (n,) float32")

    def _n_cached_frames(self, info: VideoInfo) -> int:
        return max(1, int(info.duration * self.config.clip.fps - 1e-6) + 1)

    def _decode_whole(self, info: VideoInfo) -> dict[str, torch.Tensor]:
        fps, sr = self.config.clip.fps, self.config.audio.sample_rate
        n_frames = self._n_cached_frames(info)
        frames = read_clip(
            info.path, 0.0, n_frames, fps, short_side=self.config.visual.decode_short_side
        )
        if info.has_audio:
            audio = read_audio(info.path, 0.0, max(info.audio_duration, 1.0 / sr), sr)
        else:
            audio = torch.zeros(int(round(info.duration * sr)))
        return {"frames": frames, "audio": audio}
