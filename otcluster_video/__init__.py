"""SeLaVi recipe for videos: data preparation, decoding, features, encoders, presets, explorer.

Layering: this package uses :mod:`otcluster`; :mod:`otcluster` never imports it.
"""

from ._audio import LogMelSpectrogram, n_spectrogram_frames, volume_jitter
from ._config import (
    AudioConfig,
    ClipConfig,
    ClusteringConfig,
    DataConfig,
    EncodersConfig,
    HeadsConfig,
    TrainingConfig,
    VideoRecipeConfig,
    VisualConfig,
    load_preset,
)
from ._decode import DecodeError, read_audio, read_clip
from ._probe import (
    PrepareReport,
    ProbeError,
    SkippedFile,
    VideoInfo,
    index_videos,
    load_manifest,
    prepare,
    probe,
)
from ._transforms import VideoTransform
from .dataset import AVDataset
from .explore import write_explorer
from .models import AudioResNet, EncoderConfig, VideoResNet2Plus1D, build_encoder
from .synth import make_flash_click_video, make_synthetic_dataset

__all__ = [
    "AVDataset",
    "AudioConfig",
    "AudioResNet",
    "ClipConfig",
    "ClusteringConfig",
    "DataConfig",
    "DecodeError",
    "EncoderConfig",
    "EncodersConfig",
    "HeadsConfig",
    "LogMelSpectrogram",
    "PrepareReport",
    "ProbeError",
    "SkippedFile",
    "TrainingConfig",
    "VideoInfo",
    "VideoRecipeConfig",
    "VideoResNet2Plus1D",
    "VideoTransform",
    "VisualConfig",
    "build_encoder",
    "index_videos",
    "load_manifest",
    "load_preset",
    "make_flash_click_video",
    "make_synthetic_dataset",
    "n_spectrogram_frames",
    "prepare",
    "probe",
    "read_audio",
    "read_clip",
    "volume_jitter",
    "write_explorer",
]
