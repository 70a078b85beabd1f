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
        ("[audio]\nfreq_mask = -1\n", "audio.freq_mask must be a non-negative integer"),
        ("[audio]\ntime_mask = 2.5\n", "audio.time_mask must be int"),
        ("[audio]\nnormalize = 'zscore'\n", "audio.normalize must be 'none' or 'clip'"),
        ("[audio]\nn_mels = 64\nfreq_mask = 65\n", "audio.freq_mask is wider than audio.n_mels"),
        ("[audio]\nsample_rate = 16000\nseconds = 1.0\ntime_mask = 100\n",
         "audio.time_mask is wider than the clip's frames"),
        ("[audio]\nvolume_jitter = [3.0, 0.33]\n", "audio.volume_jitter must be 0 < low <= high"),
        ("[audio]\npitch_shift = -1.0\n", r"audio.pitch_shift must be in \[0, 24\]"),
        ("[audio]\npitch_shift = 30\n", r"audio.pitch_shift must be in \[0, 24\]"),
        ("[audio]\nnoise = 1.5\n", r"audio.noise must be a probability"),
        ("[audio]\nnoise_snr = [10.0, -10.0]\n", r"audio.noise_snr must be \[low, high\] dB"),
        ("[audio]\nnoise_snr = [-10.0, nan]\n", r"audio.noise_snr\[1\] must be a finite number"),
        ("[visual]\ndegrade = 2\n", r"visual.degrade must be a probability"),
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


# -- one vocabulary with the core (issue 11 item 4) and every core prior (issue 10 item 4) ----


def test_sections_use_the_core_field_names():
    from otcluster import HeadConfig, TrainerConfig
    from otcluster_video._build import trainer_config

    cfg = load_preset("cpu", {"training.prior": "uniform", "training.align": "greedy"})
    core = {f.name for f in dataclasses.fields(TrainerConfig)}
    heads = {f.name for f in dataclasses.fields(HeadConfig)}
    # clustering.label_weights is the recipe's own (how label / evaluate weigh the streams), and
    # .stability_position (which clips the train command gives the trainer's stability_dataset)
    assert {f.name for f in dataclasses.fields(cfg.clustering)} <= core | {"label_weights",
                                                                          "stability_position"}
    # heads.overcluster is the recipe's own (the heads get overcluster * n_clusters clusters)
    assert {f.name for f in dataclasses.fields(cfg.heads)} <= heads | core | {"overcluster"}
    # training.threads and .kernels are the recipe's own (how the command runs the trainer)
    assert {f.name for f in dataclasses.fields(cfg.training)} <= core | {"threads", "kernels"}
    t = trainer_config(cfg, world_size=2)
    assert (t.heads.hidden_dim, t.heads.n_clusters, t.head_groups) == (128, 6, 1)
    assert (t.prior, t.prior_sigma, t.align, t.schedule_power) == ("uniform", 0.1, "greedy", 1.5)
    assert t.lr == pytest.approx(2 * cfg.training.lr)
    assert trainer_config(load_preset("cpu", {"training.align": "none"})).align is None
    warm = trainer_config(load_preset("cpu", {"training.prior": "zipf", "training.prior_warmup": 0.5,
                                              "training.prior_warmup_tau": 2.0}))
    assert (warm.prior, warm.prior_warmup, warm.prior_warmup_tau) == ("zipf", 0.5, 2.0)
    with pytest.raises(ValueError, match="prior_warmup"):
        load_preset("cpu", {"training.prior_warmup": 1.0})


@pytest.mark.parametrize(
    "old, value, new, expected",
    [
        ("heads.hidden", 16, "heads.hidden_dim", 16),
        ("heads.groups", 2, "heads.head_groups", 2),
        ("training.prior_std", 0.2, "training.prior_sigma", 0.2),
        ("training.align_init", False, "training.align", "none"),
        ("training.align_init", True, "training.align", "exact"),
        ("clustering.power", 2.0, "clustering.schedule_power", 2.0),
        ("training.prior", "gauss", "training.prior", "gaussian"),
    ],
)
def test_old_keys_are_read_with_a_warning_naming_the_new_key(tmp_path, old, value, new, expected):
    section, key = old.split(".")
    text = f"[{section}]\n{key} = {str(value).lower() if isinstance(value, bool) else repr(value)}\n"
    path = tmp_path / "old.toml"
    path.write_text(text.replace("'", '"'))
    with pytest.warns(DeprecationWarning, match=new.split(".")[1] if "prior" != key else "gaussian"):
        cfg = load_preset(path)
    got = getattr(getattr(cfg, new.split(".")[0]), new.split(".")[1])
    assert got == expected
    with pytest.warns(DeprecationWarning):
        assert load_preset("cpu", {old: value}) == load_preset("cpu", {new: expected})


def test_an_old_run_config_reads_back_equal_to_the_new_one(tmp_path):
    from otcluster_video._preset import config_to_toml

    new = load_preset("paper")
    old_text = (
        config_to_toml(new)
        .replace("hidden_dim =", "hidden =")
        .replace("head_groups =", "groups =")
        .replace('prior = "gaussian"', 'prior = "gauss"')
        .replace("prior_sigma =", "prior_std =")
        .replace('align = "exact"', "align_init = true")
        .replace("schedule_power =", "power =")
    )
    path = tmp_path / "config.toml"
    path.write_text(old_text)
    with pytest.warns(DeprecationWarning):
        assert dataclasses.replace(load_preset(path), name="paper") == new


def test_old_and_new_name_together_is_an_error():
    with pytest.raises(ValueError, match="both heads.hidden .* and heads.hidden_dim"):
        load_preset("cpu", {"heads.hidden": 8, "heads.hidden_dim": 16})


def test_old_attribute_names_still_read_with_a_warning():
    cfg = load_preset("paper")
    with pytest.warns(DeprecationWarning, match="heads.head_groups"):
        assert cfg.heads.groups == 2
    with pytest.warns(DeprecationWarning, match="clustering.schedule_power"):
        assert cfg.clustering.power == 1.5
    with pytest.warns(DeprecationWarning, match="training.align"):
        assert cfg.training.align_init is True


@pytest.mark.parametrize("prior", ["uniform", "gaussian", "zipf"])
def test_named_priors(prior):
    assert load_preset("cpu", {"training.prior": prior}).training.prior == prior


def test_prior_vector_is_normalised_and_checked():
    cfg = load_preset("cpu", {"training.prior": [4, 2, 1, 1, 1, 1]})
    assert cfg.training.prior == pytest.approx((0.4, 0.2, 0.1, 0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="training.prior has 3 values but heads.n_clusters = 6"):
        load_preset("cpu", {"training.prior": [1, 1, 1]})
    with pytest.raises(ValueError, match="training.prior must be"):
        load_preset("cpu", {"training.prior": [1, -1, 1, 1, 1, 1]})
    with pytest.raises(ValueError, match="training.prior must be one of"):
        load_preset("cpu", {"training.prior": "gauss-ish"})


def test_prior_from_a_file_relative_to_the_preset(tmp_path):
    (tmp_path / "sizes.txt").write_text("# cluster sizes\n60, 30\n20 10\n10\n10\n")
    path = tmp_path / "mine.toml"
    path.write_text('[heads]\nn_clusters = 6\n[training]\nprior = "file:sizes.txt"\n')
    cfg = load_preset(path)
    assert cfg.training.prior == pytest.approx(tuple(v / 140 for v in (60, 30, 20, 10, 10, 10)))
    # the run's config.toml holds the vector itself: it reads back equal anywhere
    from otcluster_video._preset import config_to_toml

    (tmp_path / "elsewhere").mkdir()
    copy = tmp_path / "elsewhere" / "config.toml"
    copy.write_text(config_to_toml(cfg))
    assert load_preset(copy).training.prior == cfg.training.prior
    path.write_text('[heads]\nn_clusters = 6\n[training]\nprior = "file:nope.txt"\n')
    with pytest.raises(ValueError, match="prior file .*nope.txt does not exist"):
        load_preset(path)
    (tmp_path / "bad.txt").write_text("1 2 x\n")
    path.write_text('[training]\nprior = "file:bad.txt"\n')
    with pytest.raises(ValueError, match="bad.txt"):
        load_preset(path)


def test_zipf_exponent_tau_and_stopping_rule_reach_the_trainer_and_its_labeler():
    from otcluster import SelfLabelTrainer
    from otcluster_video._build import trainer_config

    cfg = load_preset("cpu", {"training.prior": "zipf", "training.zipf_exponent": 2.0,
                              "clustering.sinkhorn_tau": 1.5, "clustering.sinkhorn_tol": 5e-3,
                              "clustering.sinkhorn_max_iter": 10000,
                              "clustering.sinkhorn_scaling_stages": 3})
    t = trainer_config(cfg)
    assert (t.zipf_exponent, t.sinkhorn_tau) == (2.0, 1.5)
    assert (t.sinkhorn_tol, t.sinkhorn_max_iter, t.sinkhorn_scaling_stages) == (5e-3, 10000, 3)
    default = trainer_config(load_preset("cpu"))
    assert default.sinkhorn_scaling_stages == 0
    assert (default.sinkhorn_tol, default.sinkhorn_max_iter) == (1e-2, 1000)  # the trainer's
    assert default.sinkhorn_tau is None  # left out: exact sizes
    assert trainer_config(load_preset("cpu", {"training.prior": "zipf"})).prior == "zipf"
    # the labeler the trainer builds gets both (it owns the prior)
    import torch
    from torch import nn

    class Enc(nn.Module):
        def forward(self, x):
            return x

    data = [{"video": torch.randn(4), "index": i} for i in range(12)]
    t = dataclasses.replace(t, epochs=1, batch_size=4, show_progress=False, align=None,
                            heads=dataclasses.replace(t.heads, n_clusters=3, n_heads=1,
                                                      hidden_dim=None), head_groups=1)
    lab = SelfLabelTrainer({"video": Enc()}, data, t).labeler_
    assert (lab.zipf_exponent, lab.tau) == (2.0, 1.5)
    assert (lab.tol, lab.max_iter, lab.scaling_stages) == (5e-3, 10000, 3)
    with pytest.raises(ValueError, match="clustering.sinkhorn_tau"):
        load_preset("cpu", {"clustering.sinkhorn_tau": 0.0})
    with pytest.raises(ValueError, match="clustering.sinkhorn_max_iter must be >= 1"):
        load_preset("cpu", {"clustering.sinkhorn_max_iter": 0})
    with pytest.raises(ValueError, match="clustering.sinkhorn_scaling_stages must be >= 0"):
        load_preset("cpu", {"clustering.sinkhorn_scaling_stages": -1})
    for bad in (2.5, True):  # the field's type: an integer
        with pytest.raises(ValueError, match="clustering.sinkhorn_max_iter must be int"):
            load_preset("cpu", {"clustering.sinkhorn_max_iter": bad})
    with pytest.raises(ValueError, match="clustering.sinkhorn_tol must be > 0"):
        load_preset("cpu", {"clustering.sinkhorn_tol": 0.0})


def test_modality_weights_reach_the_trainer_and_round_trip(tmp_path):
    from otcluster_video._build import trainer_config
    from otcluster_video._preset import config_to_toml

    assert load_preset("paper").clustering.modality_weights == "equal"  # the paper's eq. 6
    fixed = load_preset("cpu", {"clustering.modality_weights": [0.25, 0.75]})
    assert trainer_config(fixed).modality_weights == {"video": 0.25, "audio": 0.75}
    info = load_preset("cpu", {"clustering.modality_weights": "information",
                               "clustering.modality_weights_floor": 0.1})
    t = trainer_config(info)
    assert (t.modality_weights, t.modality_weights_floor) == ("information", 0.1)
    stable = load_preset("cpu", {"clustering.modality_weights": "stability",
                                 "clustering.stability_max_samples": 64,
                                 "clustering.stability_every": 3})
    assert trainer_config(stable).modality_weights == "stability"
    assert trainer_config(stable).stability_max_samples == 64
    assert trainer_config(stable).stability_every == 3
    for key in ("stability_max_samples", "stability_every"):
        for bad in (0, 1.5, True):
            with pytest.raises(ValueError, match=f"clustering.{key}"):
                load_preset("cpu", {f"clustering.{key}": bad})
    for bad in (-0.1, 1.5, "middle"):
        with pytest.raises(ValueError, match="clustering.stability_position"):
            load_preset("cpu", {"clustering.stability_position": bad})
    moment = load_preset("cpu", {"clustering.modality_weights": "stability",
                                 "clustering.stability_position": 0.5})
    assert moment.clustering.stability_position == 0.5
    for cfg in (fixed, info, stable, moment):
        path = tmp_path / "c.toml"
        path.write_text(config_to_toml(cfg))
        assert load_preset(path) == cfg
    for bad in ("loudest", [1.0], [-1.0, 2.0], [0.0, 0.0]):
        with pytest.raises(ValueError, match="clustering.modality_weights"):
            load_preset("cpu", {"clustering.modality_weights": bad})
    with pytest.raises(ValueError, match="clustering.modality_weights_floor"):
        load_preset("cpu", {"clustering.modality_weights_floor": 1.0})
    with pytest.raises(ValueError, match="clustering.modality_weights_warmup"):
        load_preset("cpu", {"clustering.modality_weights_warmup": -0.1})
    assert trainer_config(load_preset("cpu", {"clustering.modality_weights_warmup": 0.3})
                          ).modality_weights_warmup == 0.3
    with pytest.raises(ValueError, match="clustering.modality_weights_momentum"):
        load_preset("cpu", {"clustering.modality_weights_momentum": 1.0})
    assert trainer_config(load_preset("cpu", {"clustering.modality_weights_momentum": 0.7})
                          ).modality_weights_momentum == 0.7
    assert trainer_config(load_preset("cpu")).modality_weights_momentum == 0.0
    # the first labels: the paper's (random heads) unless k-means is asked for
    assert trainer_config(load_preset("cpu")).init_labels == "heads"
    assert trainer_config(load_preset("cpu", {"clustering.init_labels": "kmeans"})
                          ).init_labels == "kmeans"
    with pytest.raises(ValueError, match=r"clustering.init_labels.*'heads', 'kmeans'"):
        load_preset("cpu", {"clustering.init_labels": "random"})


def test_modality_veto_reaches_the_trainer_and_round_trips(tmp_path):
    from otcluster_video._build import trainer_config
    from otcluster_video._preset import config_to_toml

    assert load_preset("cpu").clustering.modality_veto is None
    assert trainer_config(load_preset("paper")).modality_veto is None
    veto = load_preset("cpu", {"clustering.modality_veto": 2})
    assert trainer_config(veto).modality_veto == 2
    path = tmp_path / "v.toml"
    path.write_text(config_to_toml(veto))
    assert load_preset(path) == veto
    for bad in (0, -1.0, "yes", True):
        with pytest.raises(ValueError, match="clustering.modality_veto must be a number > 0"):
            load_preset("cpu", {"clustering.modality_veto": bad})


def test_lr_schedule_reaches_the_trainer(tmp_path):
    from otcluster_video._build import trainer_config
    from otcluster_video._preset import config_to_toml

    assert trainer_config(load_preset("paper")).lr_schedule == "constant"  # the paper's
    cfg = load_preset("cpu", {"training.lr_schedule": "cosine"})
    assert trainer_config(cfg).lr_schedule == "cosine"
    path = tmp_path / "c.toml"
    path.write_text(config_to_toml(cfg))
    assert load_preset(path) == cfg
    for bad in ("linear", 1.0):
        with pytest.raises(ValueError, match="training.lr_schedule"):
            load_preset("cpu", {"training.lr_schedule": bad})


def test_optimizer_reaches_the_trainer_and_round_trips(tmp_path):
    from otcluster_video._build import trainer_config
    from otcluster_video._preset import config_to_toml

    for preset in ("paper", "cpu"):
        assert trainer_config(load_preset(preset)).optimizer == "sgd"  # the paper's
    cfg = load_preset("cpu", {"training.optimizer": "adamw", "training.lr": 1e-3})
    assert (trainer_config(cfg).optimizer, trainer_config(cfg).lr) == ("adamw", 1e-3)
    path = tmp_path / "c.toml"
    path.write_text(config_to_toml(cfg))
    assert load_preset(path) == cfg
    for bad in ("adam", "SGD", 1, ["adamw"], ["adamw", "lars"], ["sgd", "sgd", "sgd"]):
        with pytest.raises(ValueError, match="training.optimizer"):
            load_preset("cpu", {"training.optimizer": bad})


def test_a_pair_gives_each_stream_its_optimizer_and_lr(tmp_path):
    from otcluster_video._build import trainer_config
    from otcluster_video._preset import config_to_toml

    cfg = load_preset("cpu", {"training.optimizer": ["adamw", "sgd"], "training.lr": [1e-3, 0.05]})
    assert (cfg.training.optimizer, cfg.training.lr) == (("adamw", "sgd"), (1e-3, 0.05))
    core = trainer_config(cfg, world_size=4)  # lr per process, for each stream
    assert core.optimizer == {"video": "adamw", "audio": "sgd"}
    assert core.lr == pytest.approx({"video": 4e-3, "audio": 0.2})
    assert trainer_config(load_preset("cpu", {"training.lr": 0.05}), world_size=4).lr == pytest.approx(0.2)
    path = tmp_path / "c.toml"
    path.write_text(config_to_toml(cfg))
    assert load_preset(path) == cfg
    for bad in ([0.1], [0.1, -1.0], [0.1, 0.1, 0.1], 0, "fast"):
        with pytest.raises(ValueError, match="training.lr"):
            load_preset("cpu", {"training.lr": bad})


def test_optional_tau_round_trips_through_the_run_config(tmp_path):
    from otcluster_video._preset import config_to_toml

    for overrides in ({}, {"clustering.sinkhorn_tau": 2.5}):
        cfg = load_preset("cpu", overrides)
        path = tmp_path / "config.toml"
        path.write_text(config_to_toml(cfg))
        assert load_preset(path) == cfg


def test_kernels_are_portable_in_the_cpu_preset_and_checked():
    # issue 10 item 6: the cpu preset's runs round the same way on any x86_64 CPU
    assert load_preset("cpu").training.kernels == "portable"
    assert load_preset("paper").training.kernels == "fast"
    assert load_preset("cpu", {"training.kernels": "fast"}).training.kernels == "fast"
    with pytest.raises(ValueError, match=r"training.kernels must be one of \('fast', 'portable'\)"):
        load_preset("cpu", {"training.kernels": "exact"})
