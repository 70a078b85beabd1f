"""Clip transforms with torchvision.transforms.v2: random for training, deterministic for eval."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from ._config import VisualConfig

__all__ = ["ClipStandardize", "VideoTransform"]


class ClipStandardize(torch.nn.Module):
    """Standardise a ``(T, 3, H, W)`` float clip per channel with its own statistics.

    Each channel gets mean 0 and standard deviation 1 over all frames and pixels of the clip
    (the standard deviation is floored at ``eps``, so a uniform clip becomes zeros, not NaN).
    """

    def __init__(self, eps: float = 1e-2) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        mean = clip.mean(dim=(0, 2, 3), keepdim=True)
        std = clip.std(dim=(0, 2, 3), keepdim=True, correction=0).clamp_min(self.eps)
        return (clip - mean) / std


class VideoTransform:
    """Turn a decoded uint8 clip into a normalised float tensor.

    Training: resize the short side to ``resize`` (or to a random size in ``scale_jitter``),
    random ``crop`` x ``crop`` crop, horizontal flip, optional vertical flip, random grayscale
    and channel shuffle, ``/ 255``, normalise. Evaluation: resize and centre crop, ``/ 255``, normalise.
    Normalising uses the fixed ``mean`` and ``std``, or with ``normalize = "clip"`` each clip's
    own per-channel statistics (:class:`ClipStandardize`).
    The same random parameters apply to every frame of a clip.

    Parameters
    ----------
    cfg : VisualConfig
        Sizes, probabilities and normalisation.
    train : bool
        Random (training) or deterministic (evaluation) pipeline.

    Notes
    -----
    Input: uint8 tensor of shape ``(T, H, W, 3)``. Output: float32 tensor of shape
    ``(3, T, crop, crop)``. Frames are handed to torchvision as a plain ``(T, 3, H, W)``
    tensor (a batch of images): in torchvision 0.29 the v2 colour transforms (``Grayscale``,
    ``RandomGrayscale``) silently pass ``tv_tensors.Video`` inputs through unchanged.
    """

    def __init__(self, cfg: VisualConfig, train: bool) -> None:
        self.cfg, self.train = cfg, train
        steps: list[torch.nn.Module] = []
        if train:
            lo, hi = cfg.scale_jitter
            steps.append(v2.RandomResize(lo, hi + 1) if hi else v2.Resize(cfg.resize))
            steps += [v2.RandomCrop(cfg.crop), v2.RandomHorizontalFlip(cfg.hflip)]
            if cfg.vflip > 0:  # only when asked: a flip with p = 0 would still draw a number
                steps.append(v2.RandomVerticalFlip(cfg.vflip))
            if cfg.grayscale > 0:
                steps.append(v2.RandomGrayscale(cfg.grayscale))
            if cfg.channel_shuffle > 0:
                steps.append(v2.RandomApply([v2.RandomChannelPermutation()], cfg.channel_shuffle))
        else:
            steps += [v2.Resize(cfg.resize), v2.CenterCrop(cfg.crop)]
        steps.append(v2.ToDtype(torch.float32, scale=True))
        steps.append(ClipStandardize() if cfg.normalize == "clip"
                     else v2.Normalize(list(cfg.mean), list(cfg.std)))
        self.pipeline = v2.Compose(steps)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """Transform ``(T, H, W, 3)`` uint8 frames into a ``(3, T, crop, crop)`` float clip."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
            raise ValueError(
                f"expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} "
                f"{tuple(frames.shape)}"
            )
        clip = self.pipeline(frames.permute(0, 3, 1, 2))
        return clip.permute(1, 0, 2, 3).contiguous()

    def __repr__(self) -> str:
        return f"VideoTransform(train={self.train}, {self.pipeline})"
