"""The preset fitted to the source format (issue 10: "the preset adapts to the source")."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otcluster import ConvergenceWarning
from otcluster_video import SourceFormat, VideoInfo, adapt_to_source, load_preset
from otcluster_video.commands.train import train


def _info(fps: float, width: int, height: int, sample_rate: int | None) -> VideoInfo:
    return VideoInfo(path="/x.mp4", label="", duration=2.0, fps=fps, n_frames=int(2 * fps),
                     width=width, height=height, has_audio=sample_rate is not None,
                     sample_rate=sample_rate, audio_duration=2.0 if sample_rate else None)


def test_source_format_is_the_median_and_the_short_side():
    videos = [_info(25, 320, 240, 44100), _info(30, 640, 480, 48000), _info(12, 160, 90, 8000)]
    src = SourceFormat.of(videos)
    assert src == SourceFormat(fps=25.0, short_side=240, sample_rate=44100)
    assert SourceFormat.of([_info(30, 64, 64, None)]).sample_rate is None
    with pytest.raises(ValueError, match="no videos"):
        SourceFormat.of([])


def test_a_richer_source_changes_nothing():
    cpu = load_preset("cpu")
    for src in (SourceFormat(30.0, 128, 22050), SourceFormat(16.0, 64, 16000),
                SourceFormat(8.0, 40, 16000)):
        cfg, changes = adapt_to_source(cpu, src)
        assert cfg == cpu and changes == []


def test_a_poorer_source_lowers_rate_sample_rate_and_frame_size():
    cpu = load_preset("cpu")  # 8 frames at 8 fps, 16 kHz, resize 36 / jitter 34-40 / crop 32
    cfg, changes = adapt_to_source(cpu, SourceFormat(fps=5.0, short_side=20, sample_rate=11025))
    assert (cfg.clip.fps, cfg.clip.n_frames) == (5.0, 5)  # the same 1 s window
    assert cfg.audio.sample_rate == 11025
    assert cfg.visual.crop == 16 and cfg.visual.resize <= 20 and cfg.visual.scale_jitter[1] <= 20
    assert len(changes) == 3 and "median frame rate is 5" in changes[0]
    # everything else is the preset's
    assert cfg.training == cpu.training and cfg.encoder == cpu.encoder
    assert dataclasses.replace(cfg.audio, sample_rate=16000) == cpu.audio
    # adapting again changes nothing
    assert adapt_to_source(cfg, SourceFormat(5.0, 20, 11025)) == (cfg, [])


def test_keys_the_user_set_and_the_switch_are_respected():
    cpu = load_preset("cpu")
    poor = SourceFormat(fps=4.0, short_side=16, sample_rate=8000)
    cfg, changes = adapt_to_source(cpu, poor, fixed={"clip.fps", "audio.sample_rate",
                                                     "visual.crop"})
    assert cfg == cpu and changes == []
    cfg, _ = adapt_to_source(cpu, poor, fixed={"clip.n_frames"})
    assert (cfg.clip.fps, cfg.clip.n_frames) == (4.0, 8)
    off = load_preset("cpu", {"data.adapt_to_source": False})
    assert adapt_to_source(off, poor) == (off, [])


@settings(max_examples=60, deadline=None)
@given(fps=st.floats(0.5, 120), side=st.integers(1, 4096), rate=st.integers(1000, 96000),
       preset=st.sampled_from(["cpu", "paper"]))
def test_adapted_configs_are_valid_and_never_ask_for_more(fps, side, rate, preset):
    base = load_preset(preset)
    cfg, changes = adapt_to_source(base, SourceFormat(fps, side, rate))
    # dataclasses validate in __post_init__: rebuilding checks every cross rule
    type(cfg.visual)(**dataclasses.asdict(cfg.visual))
    assert cfg.clip.fps <= base.clip.fps and cfg.audio.sample_rate <= base.audio.sample_rate
    assert cfg.visual.crop <= base.visual.crop and cfg.visual.resize <= base.visual.resize
    assert abs(cfg.clip.seconds - base.clip.seconds) <= 0.5 / min(fps, base.clip.fps) + 1e-9
    assert (cfg == base) == (changes == [])


def test_train_records_the_adapted_config(tmp_path, caplog):
    """A 4 fps, 20 px, 8 kHz source: config.toml (read by label and evaluate) and train.log
    say what was adapted; a key set with overrides stays."""
    from otcluster_video import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "videos", n_videos=6, n_classes=2, seconds=1.5,
                                  fps=4, size=20, sample_rate=8000, degrade_fraction=0.0)
    tiny = {"audio.n_mels": 16, "encoder.video.widths": [4, 4, 4, 4],
            "encoder.audio.widths": [4, 4, 4, 4], "heads.n_clusters": 2, "heads.hidden_dim": 8,
            "training.epochs": 1, "training.batch_size": 3, "training.warmup_epochs": 0,
            "clustering.n_clusterings": 1, "data.cache_dir": "", "audio.sample_rate": 16000,
            "clustering.sinkhorn_max_iter": 1, "clustering.sinkhorn_tol": 1e-12}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(data, tmp_path / "run", preset="cpu", overrides=tiny, progress=False)
    # the solver's own warning is not repeated per clustering: the summary below says it
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    saved = load_preset(tmp_path / "run" / "config.toml")
    assert (saved.clip.fps, saved.clip.n_frames) == (4.0, 4)
    assert saved.visual.crop == 16 and saved.visual.resize <= 20
    assert saved.audio.sample_rate == 16000  # set by the user: not adapted
    log = (tmp_path / "run" / "train.log").read_text()
    assert "adapted to the videos: clip.fps 8 -> 4" in log
    # and that the one clustering stopped at the pass cap short of the tolerance
    assert "1 of 1 clusterings (0) stopped at clustering.sinkhorn_max_iter = 1 passes" in log
    # once, as a warning (the screen's handler shows warnings even with progress off)
    short = [r for r in caplog.records if "clusterings (0) stopped at" in r.getMessage()]
    assert [r.levelname for r in short] == ["WARNING"]
    # resuming with the same preset and overrides is not refused as a configuration change
    train(None, tmp_path / "run", preset="cpu", overrides=tiny, progress=False)
