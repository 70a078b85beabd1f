"""Encoders of the video recipe, stated as data.

The visual encoder is R(2+1)D built from torchvision's ``VideoResNet`` building blocks
(``BasicBlock`` + ``Conv2Plus1D`` + the (2+1)D stem); at the paper's widths
``(64, 128, 256, 512)`` and blocks ``(2, 2, 2, 2)`` it has exactly the parameters of
``torchvision.models.video.r2plus1d_18`` with ``fc = Identity`` (512-d output). The audio encoder
is the "ResNet-9" of the public SeLaVi code: a 2-D ResNet with one ``BasicBlock`` per stage on a
1-channel log-mel image. Both are randomly initialised (Kaiming normal, ``fan_out``; batch-norm
weight 1, bias 0); nothing is ever downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torchvision.models import resnet as _resnet2d
from torchvision.models.video import resnet as _resnet3d

__all__ = ["AudioResNet", "EncoderConfig", "VideoResNet2Plus1D", "build_encoder"]

_ARCHS = ("r2plus1d", "resnet")


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of one encoder.

    Parameters
    ----------
    arch : {"r2plus1d", "resnet"}
        ``"r2plus1d"``: visual R(2+1)D on ``(B, C, T, H, W)`` clips. ``"resnet"``: 2-D ResNet on
        ``(B, C, n_mels, n_frames)`` spectrograms.
    widths : tuple of int
        Output channels of the four stages; the feature dimension is ``widths[-1]``.
        Paper: ``(64, 128, 256, 512)``.
    blocks : tuple of int
        ``BasicBlock`` s per stage. ``(2, 2, 2, 2)`` is R(2+1)D-18; ``(1, 1, 1, 1)`` is the
        audio ResNet-9.
    in_channels : int
        Input channels (3 for RGB video, 1 for a spectrogram).
    """

    arch: Literal["r2plus1d", "resnet"] = "r2plus1d"
    widths: tuple[int, ...] = (64, 128, 256, 512)
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    in_channels: int = 3

    def __post_init__(self) -> None:
        if self.arch not in _ARCHS:
            raise ValueError(f"EncoderConfig.arch must be one of {_ARCHS}, got {self.arch!r}")
        if len(self.widths) != 4 or len(self.blocks) != 4:
            raise ValueError(
                f"EncoderConfig needs 4 stages, got widths={self.widths} blocks={self.blocks}"
            )
        if min(self.widths) < 1 or min(self.blocks) < 1 or self.in_channels < 1:
            raise ValueError(f"EncoderConfig sizes must be positive, got {self}")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))

    @property
    def feature_dim(self) -> int:
        """Dimension of the pooled output feature (``widths[-1]``)."""
        return self.widths[-1]


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _r2plus1d_stem(in_channels: int, width: int) -> nn.Module:
    """torchvision's ``R2Plus1dStem`` (3 -> 45 -> 64) with configurable channels."""
    if in_channels == 3 and width == 64:
        return _resnet3d.R2Plus1dStem()
    mid = max(1, round(45 * width / 64))
    return nn.Sequential(
        nn.Conv3d(in_channels, mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(mid, width, (3, 1, 1), stride=1, padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(width),
        nn.ReLU(inplace=True),
    )


class VideoResNet2Plus1D(nn.Module):
    """R(2+1)D visual encoder with configurable stage widths.

    Parameters
    ----------
    cfg : EncoderConfig
        ``arch="r2plus1d"``.

    Attributes
    ----------
    feature_dim : int
        Output dimension (``cfg.widths[-1]``; 512 at the paper's widths).

    Notes
    -----
    Input: float tensor of shape ``(batch, in_channels, n_frames, height, width)``.
    Output: ``(batch, feature_dim)`` after global average pooling (``fc`` is ``Identity``).
    Module names (``stem``, ``layer1`` ... ``layer4``, ``fc``) match torchvision's
    ``VideoResNet``, so its state dicts load at the paper's widths.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        if cfg.arch != "r2plus1d":
            raise ValueError(f"VideoResNet2Plus1D needs arch='r2plus1d', got {cfg.arch!r}")
        self.feature_dim = cfg.feature_dim
        self.stem = _r2plus1d_stem(cfg.in_channels, cfg.widths[0])
        inplanes = cfg.widths[0]
        for i, (planes, n_blocks) in enumerate(zip(cfg.widths, cfg.blocks), start=1):
            stride = 1 if i == 1 else 2
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(
                    nn.Conv3d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm3d(planes),
                )
            layers = [
                _resnet3d.BasicBlock(inplanes, planes, _resnet3d.Conv2Plus1D, stride, downsample)
            ]
            layers += [
                _resnet3d.BasicBlock(planes, planes, _resnet3d.Conv2Plus1D)
                for _ in range(n_blocks - 1)
            ]
            setattr(self, f"layer{i}", nn.Sequential(*layers))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Identity()
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map clips ``(B, C, T, H, W)`` to features ``(B, feature_dim)``."""
        if x.ndim != 5:
            raise ValueError(f"expected video of shape (B, C, T, H, W), got {tuple(x.shape)}")
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


class AudioResNet(nn.Module):
    """2-D ResNet audio encoder ("ResNet-9" with one block per stage).

    Parameters
    ----------
    cfg : EncoderConfig
        ``arch="resnet"``; paper: widths ``(64, 128, 256, 512)``, blocks ``(1, 1, 1, 1)``,
        ``in_channels=1``.

    Attributes
    ----------
    feature_dim : int
        Output dimension (``cfg.widths[-1]``).

    Notes
    -----
    Stem: 7 x 7 convolution with stride 2, batch norm, ReLU, 3 x 3 max-pool with stride 2;
    then four stages of torchvision ``BasicBlock`` s (stride 2 from the second stage) and global
    average pooling. Input ``(batch, in_channels, n_mels, n_frames)``; output
    ``(batch, feature_dim)``.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        if cfg.arch != "resnet":
            raise ValueError(f"AudioResNet needs arch='resnet', got {cfg.arch!r}")
        self.feature_dim = cfg.feature_dim
        w0 = cfg.widths[0]
        self.conv1 = nn.Conv2d(cfg.in_channels, w0, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w0)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = w0
        for i, (planes, n_blocks) in enumerate(zip(cfg.widths, cfg.blocks), start=1):
            stride = 1 if i == 1 else 2
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(
                    _resnet2d.conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes)
                )
            layers = [_resnet2d.BasicBlock(inplanes, planes, stride, downsample)]
            layers += [_resnet2d.BasicBlock(planes, planes) for _ in range(n_blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layers))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map spectrograms ``(B, C, n_mels, n_frames)`` to features ``(B, feature_dim)``."""
        if x.ndim != 4:
            raise ValueError(
                f"expected audio of shape (B, C, n_mels, n_frames), got {tuple(x.shape)}"
            )
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    """Build a randomly initialised encoder from its config.

    Parameters
    ----------
    cfg : EncoderConfig
        Architecture.

    Returns
    -------
    nn.Module
        :class:`VideoResNet2Plus1D` or :class:`AudioResNet`, with a ``feature_dim`` attribute.

    Examples
    --------
    >>> enc = build_encoder(EncoderConfig("resnet", (8, 16, 32, 64), (1, 1, 1, 1), 1))
    >>> enc(torch.zeros(2, 1, 64, 99)).shape
    torch.Size([2, 64])
    """
    if cfg.arch == "r2plus1d":
        return VideoResNet2Plus1D(cfg)
    return AudioResNet(cfg)
