from __future__ import annotations

import dataclasses

import pytest
import torch

from otcluster_video import ClipStandardize, RandomDegrade, VideoTransform, VisualConfig
from otcluster_video.evaluate import degrade_frames

CFG = VisualConfig(resize=36, scale_jitter=(34, 44), crop=32, hflip=0.5)


def _clip(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (4, 48, 64, 3), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("train", [True, False])
def test_output_shape_dtype_and_normalisation(train):
    out = VideoTransform(CFG, train)(_clip())
    assert out.shape == (3, 4, 32, 32) and out.dtype == torch.float32
    flat = torch.full((2, 40, 40, 3), 255, dtype=torch.uint8)
    white = VideoTransform(CFG, train)(flat)
    assert torch.allclose(white, torch.tensor((1 - 0.45) / 0.225))


def test_eval_is_deterministic_and_a_centre_crop():
    tf = VideoTransform(CFG, train=False)
    clip = _clip()
    assert torch.equal(tf(clip), tf(clip))
    # identity-sized input: resize is a no-op, so the output is exactly the centre crop
    square = torch.randint(0, 256, (2, 36, 36, 3), dtype=torch.uint8)
    expected = (square[:, 2:34, 2:34].permute(3, 0, 1, 2).float() / 255 - 0.45) / 0.225
    assert torch.allclose(tf(square), expected, atol=1e-5)


def test_train_is_random():
    tf = VideoTransform(CFG, train=True)
    clip = _clip()
    torch.manual_seed(0)
    outs = [tf(clip) for _ in range(6)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_train_flip_and_crop_are_shared_by_all_frames():
    cfg = dataclasses.replace(CFG, scale_jitter=(0, 0), resize=32, hflip=1.0)
    same = _clip()[:1].expand(5, -1, -1, -1).contiguous()  # five identical frames
    out = VideoTransform(cfg, train=True)(same)
    assert all(torch.equal(out[:, 0], out[:, t]) for t in range(1, 5))
    square = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8)
    flipped = VideoTransform(cfg, train=True)(square)
    expected = (square.flip(2).permute(3, 0, 1, 2).float() / 255 - 0.45) / 0.225
    assert torch.allclose(flipped, expected, atol=1e-5)


def test_vertical_flip_is_off_by_default_and_flips_every_frame_when_asked():
    square = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    base = dataclasses.replace(CFG, scale_jitter=(0, 0), resize=32, hflip=0.0)
    expected = (square.flip(1).permute(3, 0, 1, 2).float() / 255 - 0.45) / 0.225
    flipped = VideoTransform(dataclasses.replace(base, vflip=1.0), train=True)(square)
    assert torch.allclose(flipped, expected, atol=1e-5)
    # at the default (0) the pipeline holds no vertical flip, so it draws the same random numbers
    # as before the option existed: the presets' augmentations (and labels) are unchanged
    assert base.vflip == 0.0
    assert "RandomVerticalFlip" not in repr(VideoTransform(base, train=True))
    torch.manual_seed(3)
    VideoTransform(CFG, train=True)(_clip())
    after_default = torch.rand(1)
    torch.manual_seed(3)
    VideoTransform(dataclasses.replace(CFG, vflip=1e-9), train=True)(_clip())
    assert not torch.equal(torch.rand(1), after_default)  # a flip, even unlikely, draws one more
    with pytest.raises(ValueError, match="vflip"):
        dataclasses.replace(CFG, vflip=1.5)


def test_random_degrade_makes_blocks_and_adds_bounded_noise():
    clip = torch.rand(3, 3, 32, 32)
    torch.manual_seed(0)
    blocks = [RandomDegrade(factors=(16,), max_noise=0.0)(clip) for _ in range(2)]
    assert torch.equal(blocks[0], degrade_frames(clip, 16)) and torch.equal(blocks[0], blocks[1])
    assert blocks[0][0, 0].unique().numel() <= 4  # 2 x 2 blocks of a 32 px frame
    torch.manual_seed(0)
    noisy = [RandomDegrade(factors=(4,), max_noise=0.25)(clip) for _ in range(40)]
    assert all(x.shape == clip.shape and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
               for x in noisy)
    sds = [float((x - degrade_frames(clip, 4)).std()) for x in noisy]
    assert max(sds) < 0.25 and max(sds) - min(sds) > 0.1  # sd drawn from U(0, 0.25), then clipped
    with pytest.raises(ValueError, match="factors"):
        RandomDegrade(factors=(0,))


def test_degrade_is_off_by_default_and_applies_only_in_training():
    assert CFG.degrade == 0.0 and "RandomDegrade" not in repr(VideoTransform(CFG, train=True))
    torch.manual_seed(3)
    VideoTransform(CFG, train=True)(_clip())
    after_default = torch.rand(1)
    torch.manual_seed(3)
    VideoTransform(dataclasses.replace(CFG, degrade=1e-9), train=True)(_clip())
    assert not torch.equal(torch.rand(1), after_default)  # asked for, it draws a number
    always = dataclasses.replace(CFG, degrade=1.0, scale_jitter=(0, 0), resize=32, hflip=0.0)
    out = VideoTransform(always, train=True)(_clip())
    assert out.shape == (3, 4, 32, 32) and torch.isfinite(out).all()
    plain = VideoTransform(dataclasses.replace(always, degrade=0.0), train=True)(_clip())
    assert not torch.allclose(out, plain, atol=0.1)
    assert torch.equal(VideoTransform(always, train=False)(_clip()),
                       VideoTransform(dataclasses.replace(always, degrade=0.0), train=False)(_clip()))
    with pytest.raises(ValueError, match="visual.degrade must be a probability"):
        dataclasses.replace(CFG, degrade=-0.1)


def test_colour_augmentations_act_on_clips():
    gray = VideoTransform(dataclasses.replace(CFG, grayscale=1.0), train=True)(_clip())
    assert torch.allclose(gray[0], gray[1]) and torch.allclose(gray[1], gray[2])
    torch.manual_seed(1)
    cfg = dataclasses.replace(CFG, scale_jitter=(0, 0), resize=32, hflip=0.0, channel_shuffle=1.0)
    clip = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    outs = [VideoTransform(cfg, train=True)(clip) for _ in range(8)]
    means = {tuple(o.mean(dim=(1, 2, 3)).round(decimals=4).tolist()) for o in outs}
    assert len(means) > 1  # channels were permuted in some draws
    assert all(sorted(m) == sorted(next(iter(means))) for m in means)


def test_rejects_wrong_input():
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        VideoTransform(CFG, train=False)(torch.zeros(3, 4, 32, 32, dtype=torch.uint8))


def _object_clip(fg, bg, seed=0):
    """Four frames of a 10 x 10 px square at a random place: colour ``fg`` on ``bg``."""
    g = torch.Generator().manual_seed(seed)
    clip = torch.empty(4, 36, 36, 3, dtype=torch.uint8)
    clip[:] = torch.tensor(bg, dtype=torch.uint8)
    for t in range(4):
        y, x = torch.randint(0, 26, (2,), generator=g).tolist()
        clip[t, y:y + 10, x:x + 10] = torch.tensor(fg, dtype=torch.uint8)
    return clip


@pytest.mark.parametrize("train", [True, False])
def test_clip_normalisation_standardises_each_channel(train):
    cfg = dataclasses.replace(CFG, normalize="clip")
    out = VideoTransform(cfg, train)(_clip())
    assert out.shape == (3, 4, 32, 32)
    flat = out.reshape(3, -1)
    assert torch.allclose(flat.mean(1), torch.zeros(3), atol=1e-4)
    assert torch.allclose(flat.std(1, correction=0), torch.ones(3), atol=1e-4)
    # a uniform clip has no contrast to standardise: zeros, not NaN
    grey = VideoTransform(cfg, train)(torch.full((2, 40, 40, 3), 90, dtype=torch.uint8))
    assert torch.equal(grey, torch.zeros_like(grey))


def test_clip_normalisation_removes_colour_brightness_and_contrast():
    # the same object and motion in two colour schemes: identical after per-clip standardisation,
    # different under the fixed mean / std
    tf_clip = VideoTransform(dataclasses.replace(CFG, normalize="clip"), train=False)
    tf_fixed = VideoTransform(CFG, train=False)
    a, b = _object_clip((250, 210, 230), (10, 60, 30)), _object_clip((200, 255, 170), (70, 0, 40))
    assert torch.allclose(tf_clip(a), tf_clip(b), atol=1e-4)
    assert not torch.allclose(tf_fixed(a), tf_fixed(b), atol=0.1)
    # ... while the object's place still shows
    assert not torch.allclose(tf_clip(a), tf_clip(_object_clip((250, 210, 230), (10, 60, 30), 1)),
                              atol=0.1)


def test_clip_normalisation_is_checked():
    with pytest.raises(ValueError, match="normalize"):
        VisualConfig(normalize="frame")


def test_clip_standardize_floors_the_standard_deviation():
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(4, 3, 8, 8, generator=g)
    out = ClipStandardize()(clip)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    # a clip with almost no contrast (std 1e-4 < eps) is scaled by 1 / eps, not blown up to 1
    faint = 0.5 + 1e-4 * torch.randn(4, 3, 8, 8, generator=g)
    out = ClipStandardize(eps=1e-2)(faint)
    assert float(out.abs().max()) < 0.1
