"""``heads.overcluster``: heads trained at a multiple of K clusters, merged into K after training."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from test_end_to_end import TINY

from otcluster_video import cli, load_preset
from otcluster_video.commands import _inference
from otcluster_video.recipe import trainer_config

K, FACTOR = 3, 2


def test_the_trainer_gets_the_fine_clusters_and_a_split_prior():
    config = load_preset("cpu", {"heads.n_clusters": K, "heads.overcluster": FACTOR,
                                 "training.prior": [0.2, 0.3, 0.5]})
    tcfg = trainer_config(config)
    assert tcfg.heads.n_clusters == K * FACTOR
    assert tcfg.prior == pytest.approx([0.1, 0.1, 0.15, 0.15, 0.25, 0.25])
    assert trainer_config(load_preset("cpu", {"heads.n_clusters": K})).heads.n_clusters == K
    named = load_preset("cpu", {"heads.n_clusters": K, "heads.overcluster": FACTOR})
    assert trainer_config(named).prior == named.training.prior  # built by the core at M


def test_overcluster_must_be_a_positive_count():
    with pytest.raises(ValueError, match="heads.overcluster"):
        load_preset("cpu", {"heads.overcluster": 0})


@pytest.mark.slow
def test_an_overclustered_run_labels_with_k_groups(tmp_path, monkeypatch):
    assert cli.main(["synth", str(tmp_path / "videos"), "--n-videos", "12", "--classes", str(K),
                     "--seconds", "1.5", "--size", "32"]) == 0
    run = tmp_path / "run"
    sets = {**TINY, "heads.n_clusters": K, "heads.overcluster": FACTOR, "training.epochs": 4,
            "clustering.n_clusterings": 2, "data.cache_dir": str(tmp_path / "cache")}
    args = [a for key, v in sets.items() for a in ("--set", f"{key}={json.dumps(v)}")]
    assert cli.main(["train", "--data", str(tmp_path / "videos"), "--out", str(run),
                     "--device", "cpu", "--quiet", *args]) == 0
    merge = run / "merge.json"
    saved = json.loads(merge.read_text())  # written by train, not at the first label
    groups = torch.tensor(saved["groups"])
    assert groups.shape == (2, K * FACTOR) and saved["n_groups"] == K
    assert 0 <= int(groups.min()) and int(groups.max()) < K
    assert "merged each head's 6 clusters into 3 groups" in (run / "train.log").read_text()

    with monkeypatch.context() as patch:  # reused: no inference pass to find the groups again
        patch.setattr(_inference, "extract", lambda *a, **k: pytest.fail("groups found again"))
        loaded = _inference.load_run(run, "cpu")
    assert torch.equal(loaded.groups, groups)
    feats = _inference.extract(loaded, _inference.eval_dataset(loaded.videos, loaded.config))
    lp = _inference.heads_log_probs(loaded, feats.z)
    for m in ("video", "audio"):
        assert lp[m].shape == (2, 12, K)
        assert torch.allclose(lp[m].exp().sum(-1), torch.ones(2, 12), atol=1e-5)
    assert loaded.self_labels().shape == (2, 12)
    assert torch.equal(loaded.self_labels()[0], groups[0][loaded.train_labels[0]])

    assert cli.main(["label", "--run", str(run), "--device", "cpu", "--quiet"]) == 0
    with (run / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {int(r["label"]) for r in rows} <= set(range(K))

    saved["labels_sha256"] = "0" * 64  # another checkpoint's merge: found again
    merge.write_text(json.dumps(saved))
    assert torch.equal(_inference.load_run(run, "cpu").groups, groups)
    assert json.loads(merge.read_text())["labels_sha256"] != "0" * 64
