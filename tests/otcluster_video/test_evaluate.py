"""Evaluation helpers: exact answers on small inputs (no training, no video decoding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from otcluster.metrics import cluster_report
from otcluster_video import load_preset
from otcluster_video._run import ConfigChangedError
from otcluster_video.evaluate import (
    EvalRow,
    degrade_frames,
    format_table,
    modality_labels,
    retrieval_recall,
    score_labelings,
)
from otcluster_video.recipe import _config_changes, config_to_toml


def test_modality_labels_are_argmax_of_each_and_of_the_mean():
    g = torch.Generator().manual_seed(0)
    lv = torch.randn(3, 50, 4, generator=g).log_softmax(-1)
    la = torch.randn(3, 50, 4, generator=g).log_softmax(-1)
    out = modality_labels({"video": lv, "audio": la})
    assert set(out) == {"video", "audio", "both"}
    assert torch.equal(out["video"], lv.argmax(-1))
    assert torch.equal(out["audio"], la.argmax(-1))
    assert torch.equal(out["both"], (lv + la).argmax(-1))
    assert out["both"].shape == (3, 50)


def test_modality_labels_weighted():
    g = torch.Generator().manual_seed(1)
    lv = torch.randn(2, 40, 5, generator=g).log_softmax(-1)
    la = torch.randn(2, 40, 5, generator=g).log_softmax(-1)
    out = modality_labels({"video": lv, "audio": la}, [0.2, 0.8])
    assert torch.equal(out["both"], (0.2 * lv + 0.8 * la).argmax(-1))
    assert torch.equal(modality_labels({"video": lv, "audio": la}, [0.0, 1.0])["both"],
                       la.argmax(-1))
    assert not torch.equal(out["both"], modality_labels({"video": lv, "audio": la})["both"])


def test_modality_labels_single_modality_and_errors():
    lv = torch.zeros(1, 5, 3)
    assert set(modality_labels({"video": lv})) == {"video"}
    with pytest.raises(ValueError, match="same shape"):
        modality_labels({"video": lv, "audio": torch.zeros(1, 6, 3)})
    with pytest.raises(ValueError, match="empty"):
        modality_labels({})


def test_score_labelings_matches_cluster_report_and_is_permutation_invariant():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    perm = np.array([2, 0, 3, 1])
    noisy = np.where(rng.random(200) < 0.3, rng.integers(0, 4, 200), y)
    rows = score_labelings(y, [("perfect", True, True, 0, perm[y]), ("noisy", False, True, None, noisy)])
    assert rows[0].nmi == pytest.approx(1.0) and rows[0].acc == pytest.approx(1.0)
    assert rows[0].mean_entropy == pytest.approx(0.0, abs=1e-12)
    ref = cluster_report(y, noisy)
    assert (rows[1].nmi, rows[1].ari, rows[1].acc) == (ref.nmi, ref.ari, ref.acc)
    assert rows[1].mean_max_purity == ref.mean_max_purity
    assert rows[1].streams == "audio" and rows[0].streams == "video+audio"
    assert rows[1].head is None


def test_format_table_has_every_row_in_percent():
    rows = [
        EvalRow("k-means, random init", True, False, None, 0.1234, 0.05, 0.3, 1.5, 0.4, 6),
        EvalRow("SeLaVi heads", True, True, 0, 0.9, 0.8, 0.95, 0.1, 0.97, 6, "paper"),
    ]
    text = format_table(rows, title="demo")
    lines = text.splitlines()
    assert lines[0] == "demo"
    assert lines[1].split()[:4] == ["Method", "V", "A", "head"]
    assert "k-means, random init" in lines[3] and "12.3" in lines[3]
    assert "SeLaVi heads" in lines[4] and "90.0" in lines[4] and "paper" in lines[4]
    assert len(lines) == 5


def test_degrade_frames_nearest_down_up():
    x = torch.arange(16.0).reshape(1, 4, 4)
    assert torch.equal(degrade_frames(x, 1), x)
    y = degrade_frames(x, 2)
    expected = torch.tensor([[0, 0, 2, 2], [0, 0, 2, 2], [8, 8, 10, 10], [8, 8, 10, 10]]).float()
    assert torch.equal(y[0], expected)
    clip = torch.randn(2, 3, 5, 32, 32)
    out = degrade_frames(clip, 16)
    assert out.shape == clip.shape and out.dtype == clip.dtype
    # 2 x 2 blocks of 16 x 16 identical pixels, each equal to its block's top-left pixel
    assert torch.equal(out[..., :16, :16], clip[..., :1, :1].expand(2, 3, 5, 16, 16))
    assert torch.equal(out[..., 16:, 16:], clip[..., 16:17, 16:17].expand(2, 3, 5, 16, 16))
    # a factor larger than the frame: one value per frame
    tiny = degrade_frames(clip, 64)
    assert torch.equal(tiny, clip[..., :1, :1].expand_as(clip))
    u8 = torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8)
    assert degrade_frames(u8, 4).dtype == torch.uint8
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="factor"):
            degrade_frames(x, bad)


def test_retrieval_recall_matches_brute_force():
    rng = np.random.default_rng(1)
    xb = rng.normal(size=(40, 8)).astype("float32")
    xq = rng.normal(size=(15, 8)).astype("float32")
    yb, yq = rng.integers(0, 5, 40), rng.integers(0, 5, 15)
    got = retrieval_recall(xb, yb, xq, yq, ks=(1, 5, 20, 100))
    nb = xb / np.linalg.norm(xb, axis=1, keepdims=True)
    nq = xq / np.linalg.norm(xq, axis=1, keepdims=True)
    order = np.argsort(-(nq @ nb.T), axis=1)
    for k in (1, 5, 20):
        expected = np.mean([yq[i] in yb[order[i, :k]] for i in range(15)])
        assert got[k] == pytest.approx(expected)
    assert got[100] == pytest.approx(np.mean([yq[i] in yb for i in range(15)]))
    # inputs are not modified (normalisation works on a copy)
    assert np.linalg.norm(xb[0]) != pytest.approx(1.0)


def test_retrieval_recall_errors():
    x = np.ones((3, 2), dtype="float32")
    with pytest.raises(ValueError, match="dimensions"):
        retrieval_recall(x, [0, 1, 2], np.ones((2, 3)), [0, 1])
    with pytest.raises(ValueError, match="same number"):
        retrieval_recall(x, [0, 1], x, [0, 1, 2])
    with pytest.raises(ValueError, match="positive"):
        retrieval_recall(x, [0, 1, 2], x, [0, 1, 2], ks=(0,))


@pytest.mark.parametrize("name", ["cpu", "paper"])
def test_config_toml_round_trip(tmp_path, name):
    cfg = load_preset(name, {"training.epochs": 3, "visual.mean": [0.5, 0.4, 0.3]})
    path = tmp_path / "config.toml"
    path.write_text(config_to_toml(cfg))
    back = load_preset(path)
    assert back == cfg
    assert _config_changes(cfg, back) == []
    changed = load_preset(path, {"training.epochs": 9, "heads.n_clusters": 7})
    assert _config_changes(cfg, changed) == ["heads.n_clusters"]
    # how the computation runs may change on resumption (threads, kernels); what it is may not
    other = "fast" if cfg.training.kernels == "portable" else "portable"
    assert _config_changes(cfg, load_preset(path, {"training.kernels": other,
                                                   "training.threads": 3})) == []
    # and so may the solver's stopping rule (a run that warned can go on with more passes)
    assert _config_changes(cfg, load_preset(path, {"clustering.sinkhorn_max_iter": 10000,
                                                   "clustering.sinkhorn_tol": 5e-3})) == []
    # the error of a refused resumption names what differs and what may change
    err = ConfigChangedError(tmp_path, ["heads.n_clusters"])
    assert isinstance(err, ValueError)
    assert "differences in heads.n_clusters" in str(err)
    assert "training.epochs, training.threads" in str(err) and "sinkhorn_max_iter" in str(err)
