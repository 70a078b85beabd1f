"""Clip transforms with torchvision.transforms.v2: random for training, deterministic for eval."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from ._config import VisualConfig

__all__ = ["ClipStandardize", "RandomDegrade", "VideoTransform", "degrade_frames"]


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


def degrade_frames(video: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour down-sampling of every frame by ``factor``, then up-sampling back.

    The paper's degraded-modality experiment (fig. 2, appendix A.5) with factors 1, 4, 8, 16.

    Parameters
    ----------
    video : Tensor of shape (..., H, W)
        Frames, e.g. a clip ``(C, T, H, W)`` or a batch ``(B, C, T, H, W)``.
    factor : int
        Down-sampling factor (>= 1); 1 returns the input unchanged. The reduced size is
        ``max(1, H // factor) x max(1, W // factor)``.

    Returns
    -------
    Tensor of the same shape and dtype as ``video``.

    Examples
    --------
    >>> x = torch.arange(16.0).reshape(1, 4, 4)
    >>> degrade_frames(x, 2)[0].tolist()
    [[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0], [8.0, 8.0, 10.0, 10.0], [8.0, 8.0, 10.0, 10.0]]
    """
    if isinstance(factor, bool) or int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be an integer >= 1, got {factor!r}")
    if video.ndim < 2:
        raise ValueError(f"video must have shape (..., H, W), got {tuple(video.shape)}")
    if factor == 1:
        return video
    h, w = video.shape[-2:]
    flat = video.reshape(-1, 1, h, w)
    dtype = flat.dtype
    work = flat if flat.is_floating_point() else flat.float()
    small = torch.nn.functional.interpolate(
        work, size=(max(1, h // factor), max(1, w // factor)), mode="nearest"
    )
    back = torch.nn.functional.interpolate(small, size=(h, w), mode="nearest")
    return back.to(dtype).reshape(video.shape)


class RandomDegrade(torch.nn.Module):
    """The paper's degraded picture as a training augmentation, on a float clip in ``[0, 1]``.

    Every frame is down-sampled by a factor drawn from ``factors`` and back
    (:func:`degrade_frames`, the paper's fig. 2), then Gaussian noise of a standard deviation
    drawn from ``U(0, max_noise)`` is added and the result clipped to ``[0, 1]``. Draws from
    torch's global random source. Input and output: ``(T, C, H, W)``.
    """

    def __init__(self, factors: tuple[int, ...] = (4, 8, 16), max_noise: float = 0.25) -> None:
        super().__init__()
        if not factors or min(factors) < 1 or max_noise < 0:
            raise ValueError(f"need factors >= 1 and max_noise >= 0, got {factors}, {max_noise}")
        self.factors, self.max_noise = tuple(factors), max_noise

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        factor = self.factors[int(torch.randint(len(self.factors), ()))]
        sigma = self.max_noise * float(torch.rand(()))
        noisy = degrade_frames(clip, factor) + sigma * torch.randn_like(clip)
        return noisy.clamp(0.0, 1.0)


class VideoTransform:
    """Turn a decoded uint8 clip into a normalised float tensor.

    Training: resize the short side to ``resize`` (or to a random size in ``scale_jitter``),
    random ``crop`` x ``crop`` crop, horizontal flip, optional vertical flip, random grayscale
    and channel shuffle, ``/ 255``, optionally a degraded picture (:class:`RandomDegrade`),
    normalise. Evaluation: resize and centre crop, ``/ 255``, normalise.
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
        if train and cfg.degrade > 0:
            steps.append(v2.RandomApply([RandomDegrade()], cfg.degrade))
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
