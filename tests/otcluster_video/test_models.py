from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.video import r2plus1d_18

from otcluster_video import EncoderConfig, build_encoder, load_preset


def test_paper_video_encoder_is_torchvision_r2plus1d_18_without_fc():
    ours = build_encoder(load_preset("paper").encoder.video)
    reference = r2plus1d_18(weights=None)  # never downloads
    expected = {k: v.shape for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.state_dict().items()} == expected
    assert isinstance(ours.fc, nn.Identity) and ours.feature_dim == 512
    ours.load_state_dict({k: v for k, v in reference.state_dict().items() if k in expected})


def test_paper_video_encoder_output_shape():
    enc = build_encoder(load_preset("paper").encoder.video).eval()
    with torch.no_grad():  # small clip: the paper's 3 x 30 x 112 x 112 takes seconds on a CPU
        out = enc(torch.randn(2, 3, 4, 32, 32))
    assert out.shape == (2, 512)


def test_paper_audio_encoder_on_the_paper_spectrogram():
    enc = build_encoder(load_preset("paper").encoder.audio).eval()
    n_blocks = sum(
        isinstance(m, torch.nn.Module) and type(m).__name__ == "BasicBlock" for m in enc.modules()
    )
    assert n_blocks == 4  # ResNet-9: one block per stage
    assert enc.conv1.kernel_size == (7, 7) and enc.conv1.stride == (2, 2)
    assert enc.conv1.in_channels == 1
    with torch.no_grad():
        out = enc(torch.randn(2, 1, 257, 199))
    assert out.shape == (2, 512) and enc.feature_dim == 512


@pytest.mark.parametrize(
    "modality, shape", [("video", (2, 3, 8, 32, 32)), ("audio", (2, 1, 64, 99))]
)
def test_cpu_encoders(modality, shape):
    cfg = getattr(load_preset("cpu").encoder, modality)
    enc = build_encoder(cfg)
    out = enc(torch.randn(shape))
    assert out.shape == (2, 128) and enc.feature_dim == cfg.widths[-1] == 128
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    n_params = sum(p.numel() for p in enc.parameters())
    assert n_params < 2_000_000  # tiny, for CPUs


def test_random_init_follows_the_public_code():
    enc = build_encoder(EncoderConfig(widths=(8, 16, 32, 64), blocks=(1, 1, 1, 1)))
    for m in enc.modules():
        if isinstance(m, nn.BatchNorm3d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    conv = enc.layer4[0].conv1[0][0]  # spatial (1, 3, 3) convolution: fan_out = out * 9
    expected_std = (2.0 / (conv.out_channels * 9)) ** 0.5
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.1)


def test_encoder_config_validation():
    with pytest.raises(ValueError, match="arch"):
        EncoderConfig(arch="vit")
    with pytest.raises(ValueError, match="4 stages"):
        EncoderConfig(widths=(8, 16, 32))
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        build_encoder(EncoderConfig(widths=(8, 16, 32, 64)))(torch.zeros(1, 3, 32, 32))
