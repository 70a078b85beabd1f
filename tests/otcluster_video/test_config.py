from __future__ import annotations

import dataclasses

import pytest

from otcluster_video import VideoRecipeConfig, load_preset


def test_paper_preset_holds_the_paper_values():
    cfg = load_preset("paper")
    assert (cfg.clip.n_frames, cfg.clip.fps) == (30, 30.0)
    assert (cfg.audio.n_mels, cfg.audio.n_frames, cfg.audio.preemphasis) == (257, 199, 0.97)
    assert (cfg.visual.resize, cfg.visual.crop, cfg.visual.hflip) == (128, 112, 0.5)
    assert cfg.visual.mean == (0.45,) * 3 and cfg.visual.std == (0.225,) * 3
    assert (cfg.heads.n_heads, cfg.heads.head_groups) == (10, 2)
    t = cfg.training
    assert (t.lr, t.weight_decay, t.momentum, t.lam, t.warmup_epochs) == (0.01, 1e-5, 0.9, 20.0, 10)
    assert (cfg.clustering.n_clusterings, cfg.clustering.schedule_power) == (100, 1.5)
    assert cfg.encoder.video.blocks == (2, 2, 2, 2) and cfg.encoder.audio.blocks == (1, 1, 1, 1)


def test_paper_preset_equals_the_defaults_except_workers():
    cfg = load_preset("paper")
    defaults = VideoRecipeConfig()
    assert dataclasses.replace(cfg, data=defaults.data) == defaults
    assert cfg.data.num_workers == 10


def test_cpu_preset_is_small():
    cfg = load_preset("cpu")
    assert cfg.name == "cpu"
    assert cfg.clip.n_frames <= 8 and cfg.visual.crop <= 64
    assert cfg.encoder.video.widths == (16, 32, 64, 128)
    assert cfg.visual.grayscale > 0 and cfg.visual.channel_shuffle > 0


def test_overrides_and_files(tmp_path):
    cfg = load_preset("cpu", {"training.epochs": 3, "encoder.video.widths": [8, 16, 32, 64]})
    assert cfg.training.epochs == 3 and cfg.encoder.video.widths == (8, 16, 32, 64)
    path = tmp_path / "mine.toml"
    path.write_text(
        "[training]\nepochs = 7\n[visual]\ncrop = 96\nresize = 100\nscale_jitter = [100, 110]\n"
    )
    mine = load_preset(path)
    assert (mine.name, mine.training.epochs, mine.visual.crop) == ("mine", 7, 96)
    assert mine.audio == VideoRecipeConfig().audio  # missing sections: paper defaults
    assert mine.to_dict()["visual"]["scale_jitter"] == [100, 110]


@pytest.mark.parametrize(
    "text, match",
    [
        ("[training]\nepochz = 3\n", r"unknown key\(s\) \['epochz'\] in \[training\]"),
        ("[training]\nepochs = 'many'\n", "training.epochs must be int"),
        ("[visual]\nmean = [0.5, 0.5]\n", "visual.mean must have 3 items"),
        ("[encoder.video]\narch = 'vit'\n", "encoder.video.arch must be one of"),
        ("[training]\nlr = -1.0\n", "training.lr must be > 0"),
        ("[training\n", "invalid TOML"),
    ],
)
def test_bad_presets_raise_naming_the_key(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_preset(path)


def test_unknown_preset_lists_the_bundled_ones():
    with pytest.raises(ValueError, match=r"\['cpu', 'paper'\]"):
        load_preset("gpu")
    with pytest.raises(FileNotFoundError):
        load_preset("/nonexistent/x.toml")
