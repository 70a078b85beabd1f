"""SeLaVi recipe for videos: data preparation, decoding, features, encoders, presets, explorer.

Layering: this package uses :mod:`otcluster`; :mod:`otcluster` never imports it.
"""

import importlib
from typing import Any

# Public names -> the private module that defines them. Imported on first use, so that
# ``otcluster-video --help`` and ``import otcluster_video`` do not import torch, PyAV or
# torchaudio (:func:`__getattr__`).
_LAZY = {
    **dict.fromkeys(["LogMelSpectrogram", "n_spectrogram_frames", "spec_augment", "volume_jitter",
                     "white_noise"], "._audio"),
    **dict.fromkeys(
        ["AudioConfig", "ClipConfig", "ClusteringConfig", "DataConfig", "EncodersConfig",
         "HeadsConfig", "TrainingConfig", "VideoRecipeConfig", "VisualConfig"],
        "._config",
    ),
    "load_preset": "._preset",
    **dict.fromkeys(["SourceFormat", "adapt_to_source"], "._adapt"),
    **dict.fromkeys(["DecodeError", "read_audio", "read_clip"], "._decode"),
    **dict.fromkeys(
        ["PrepareReport", "ProbeError", "SkippedFile", "VideoInfo", "index_videos",
         "load_manifest", "prepare", "probe"],
        "._probe",
    ),
    **dict.fromkeys(["ClipStandardize", "RandomDegrade", "VideoTransform"], "._transforms"),
    "AVDataset": ".dataset",
    "write_explorer": ".explore",
    **dict.fromkeys(["AudioResNet", "EncoderConfig", "VideoResNet2Plus1D", "build_encoder"],
                    ".models"),
    **dict.fromkeys(["make_flash_click_video", "make_synthetic_dataset"], ".synth"),
}
_EXTRAS = {"av", "torchaudio", "torchvision", "jinja2", "matplotlib", "tqdm"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'otcluster_video' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module, __name__), name)
    except ModuleNotFoundError as err:
        if (err.name or "").partition(".")[0] not in _EXTRAS:
            raise
        raise ImportError(
            f"otcluster_video needs {err.name!r}, one of the video extras: "
            f"pip install 'otcluster[video]'"
        ) from err
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "AVDataset",
    "AudioConfig",
    "AudioResNet",
    "ClipConfig",
    "ClipStandardize",
    "ClusteringConfig",
    "DataConfig",
    "DecodeError",
    "EncoderConfig",
    "EncodersConfig",
    "HeadsConfig",
    "LogMelSpectrogram",
    "PrepareReport",
    "ProbeError",
    "RandomDegrade",
    "SkippedFile",
    "SourceFormat",
    "TrainingConfig",
    "VideoInfo",
    "VideoRecipeConfig",
    "VideoResNet2Plus1D",
    "VideoTransform",
    "VisualConfig",
    "adapt_to_source",
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
    "spec_augment",
    "volume_jitter",
    "white_noise",
    "write_explorer",
]
