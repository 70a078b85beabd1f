"""The per-sample veto of a modality's artefact clusters (``TrainerConfig.modality_veto``):
the flags against a brute-force count, the weights, the weighted mean, and the trainer's dense
and memory-bounded clusterings with it."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from selflabel_data import Blobs, encoders, single_threaded

from otcluster import HeadConfig, SelfLabelTrainer, SinkhornLabeler, TrainerConfig
from otcluster._train.veto import artefact_clusters, veto_weights, vetoed_shares, weighted_mean_


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    undo = single_threaded()
    yield
    undo()


def _brute_flags(a: torch.Tensor, K: int, threshold: float) -> torch.Tensor:
    M, H, n = a.shape
    flags = torch.zeros(M, H, K, dtype=torch.bool)
    for s in range(M):
        for h in range(H):
            for k in range(K):
                members = [i for i in range(n) if a[s, h, i] == k]
                if not members:
                    continue
                grouped = False
                for o in range(M):
                    if o == s:
                        continue
                    best = max(sum(1 for i in members if a[o, h, i] == j) for j in range(K))
                    grouped |= best / len(members) >= threshold / K
                flags[s, h, k] = not grouped
    return flags


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_artefact_clusters_match_a_brute_force_count(data):
    M, H = data.draw(st.integers(2, 3)), data.draw(st.integers(1, 2))
    n, K = data.draw(st.integers(1, 30)), data.draw(st.integers(2, 5))
    threshold = data.draw(st.floats(0.1, float(K)))
    a = torch.tensor(data.draw(st.lists(st.integers(0, K - 1), min_size=M * H * n,
                                        max_size=M * H * n))).reshape(M, H, n)
    assert torch.equal(artefact_clusters(a, K, threshold), _brute_flags(a, K, threshold))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_veto_weights_sum_to_one_and_leave_out_exactly_the_flagged_modalities(data):
    M, n, K = data.draw(st.integers(2, 4)), data.draw(st.integers(1, 20)), data.draw(st.integers(2, 4))
    a = torch.tensor(data.draw(st.lists(st.integers(0, K - 1), min_size=M * n,
                                        max_size=M * n))).reshape(M, 1, n)
    flags = torch.tensor(data.draw(st.lists(st.booleans(), min_size=M * K,
                                            max_size=M * K))).reshape(M, 1, K)
    base = data.draw(st.lists(st.floats(0.0, 1.0), min_size=M, max_size=M).filter(
        lambda w: sum(w) > 0.01))
    w = veto_weights(a, flags, base)[:, 0]  # (M, n)
    b = torch.tensor(base) / sum(base)
    torch.testing.assert_close(w.sum(0), torch.ones(n))
    for i in range(n):
        flagged = flags[torch.arange(M), 0, a[:, 0, i]]
        kept = b * ~flagged
        if flagged.any() and not flagged.all() and kept.sum() > 0:
            torch.testing.assert_close(w[:, i], kept / kept.sum())
            assert (w[flagged, i] == 0).all()
        else:
            torch.testing.assert_close(w[:, i], b)


def test_a_scattered_cluster_is_flagged_and_its_samples_follow_the_other_modality():
    # modality 0 puts samples 0-5 into cluster 0; modality 1 spreads them over 3 clusters
    a = torch.tensor([[[0, 0, 0, 0, 0, 0, 1, 1, 2, 2]],
                      [[0, 0, 1, 1, 2, 2, 3, 3, 3, 3]]])
    flags = artefact_clusters(a, 4, threshold=2.0)  # grouped needs a share >= 1/2
    assert flags[0, 0].tolist() == [True, False, False, False]
    # modality 1's cluster 3 (samples 6-9) is split 2 / 2 by modality 0: grouped (share 1/2)
    assert not flags[1].any()
    w = veto_weights(a, flags, None)
    assert w[:, 0, :6].tolist() == [[0.0] * 6, [1.0] * 6]
    assert torch.equal(w[:, 0, 6:], torch.full((2, 4), 0.5))
    w = veto_weights(a, flags, [0.2, 0.8])
    assert torch.allclose(w[:, 0, 6:], torch.tensor([[0.2], [0.8]]).expand(2, 4))
    assert vetoed_shares(w, [0.2, 0.8], ["v", "a"]) == {"v": 0.6, "a": 0.0}


def test_samples_flagged_in_every_modality_or_left_with_no_weight_keep_theirs():
    a = torch.tensor([[[0, 1]], [[1, 0]]])
    both = torch.ones(2, 1, 2, dtype=torch.bool)
    assert torch.equal(veto_weights(a, both, [0.3, 0.7])[:, 0, 0], torch.tensor([0.3, 0.7]))
    only0 = torch.tensor([[[True, True]], [[False, False]]])
    # the other modality weighs 0: nothing to label the sample by, so its weights stay
    assert torch.equal(veto_weights(a, only0, [1.0, 0.0])[:, 0, 0], torch.tensor([1.0, 0.0]))
    assert torch.equal(veto_weights(a, only0, [0.5, 0.5])[:, 0, 0], torch.tensor([0.0, 1.0]))
    # a kept weight as small as float32 goes is still the whole say (hypothesis found 1.2e-38
    # divided by a floor of 1e-30)
    tiny = veto_weights(a, only0, [1.0, 1.1754943508222875e-38])[:, 0]
    assert torch.equal(tiny, torch.tensor([[0.0, 0.0], [1.0, 1.0]]))


def test_weighted_mean_is_the_per_sample_sum_and_a_vetoed_minus_inf_gives_no_nan():
    g = torch.Generator().manual_seed(0)
    lp = torch.log_softmax(torch.randn(3, 2, 7, 4, generator=g), -1)
    w = torch.rand(3, 2, 7, generator=g)
    w[1, 0, 3] = 0.0
    expect = (lp * w[..., None]).sum(0)
    lp[1, 0, 3, 2] = -torch.inf
    out = weighted_mean_(lp.clone(), w)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expect)


def _data():
    """Modality "a" sees the classes, "b" noise: random heads of the two group samples
    differently, so the veto fires from the first clustering (at a threshold of 3 / K)."""
    data = Blobs(n=300, k=5, augment=0.0)  # no augmentation: every pass sees the same inputs
    data.x["b"] = torch.randn(300, 6, generator=torch.Generator().manual_seed(1))
    return data


def _config(**kw):
    base = dict(heads=HeadConfig(n_heads=3, n_clusters=5, hidden_dim=None, dropout=0.0), epochs=2,
                batch_size=32, lr=0.05, warmup_epochs=1, n_clusterings=3, prior="uniform",
                show_progress=False)
    return TrainerConfig(**{**base, **kw})


def test_the_veto_needs_two_modalities_and_a_positive_threshold():
    with pytest.raises(ValueError, match="modality_veto needs two or more modalities"):
        SelfLabelTrainer(encoders(("a",)), Blobs(n=40, modalities=("a",)),
                         _config(modality_veto=2.0))
    for bad in (0, -1.0, "2"):
        with pytest.raises(ValueError, match="TrainerConfig.modality_veto must be a positive"):
            _config(modality_veto=bad).validate()


def test_the_dense_clustering_is_the_labeler_on_the_vetoed_mean():
    data = _data()
    trainer = SelfLabelTrainer(encoders(), data, _config(modality_veto=3.0))
    rec = trainer._cluster()
    lp = trainer.predict_log_probs(data)
    log_p = torch.stack([lp["a"], lp["b"]])
    argmax = log_p.argmax(-1)
    flags = artefact_clusters(argmax, 5, 3.0)
    w = veto_weights(argmax, flags, None)
    assert rec["vetoed"]["b"] > 0.1  # measured 0.33
    assert rec["vetoed"] == vetoed_shares(w, None, ["a", "b"])
    labeler = SinkhornLabeler(5, prior="uniform", lam=trainer.config.lam, n_heads=3,
                              tol=trainer.config.sinkhorn_tol)
    expect = labeler.fit(weighted_mean_(log_p, w)).labels_.reshape(3, -1)
    assert (expect == trainer.labels_).double().mean() >= 0.99


def test_a_threshold_near_zero_vetoes_nothing_and_gives_the_plain_labels():
    data = _data()
    plain = SelfLabelTrainer(encoders(), data, _config())
    vetoed = SelfLabelTrainer(encoders(), data, _config(modality_veto=1e-6))
    rec = vetoed._cluster()
    plain._cluster()
    assert rec["vetoed"] == {"a": 0.0, "b": 0.0}
    assert (plain.labels_ == vetoed.labels_).double().mean() >= 0.99


@pytest.mark.parametrize("hidden", [None, 8])
def test_memory_bounded_veto_gives_the_dense_labels(hidden):
    data = _data()
    heads = HeadConfig(n_heads=3, n_clusters=5, hidden_dim=hidden, dropout=0.0)
    enc = encoders()
    a = SelfLabelTrainer(copy.deepcopy(enc), data, _config(heads=heads, modality_veto=3.0,
                                                           modality_weights={"a": 1, "b": 3}))
    b = SelfLabelTrainer(copy.deepcopy(enc), data, _config(heads=heads, modality_veto=3.0,
                                                           modality_weights={"a": 1, "b": 3},
                                                           memory_bounded=True))
    b.model.load_state_dict(a.model.state_dict())
    ra, rb = a._cluster(), b._cluster()
    assert rb["memory_bounded"] and not ra["memory_bounded"]
    assert ra["vetoed"] == rb["vetoed"] and sum(ra["vetoed"].values()) > 0
    assert (a.labels_ == b.labels_).double().mean() >= 0.99


def test_training_with_the_veto_records_it_and_learns_the_shared_classes():
    data = Blobs(n=240, k=4)
    cfg = _config(heads=HeadConfig(n_heads=2, n_clusters=4, hidden_dim=None, dropout=0.0),
                  epochs=3, n_clusterings=4, modality_veto=1.5)
    history = SelfLabelTrainer(encoders(), data, cfg, ground_truth=data.y).fit()
    clusterings = [r for r in history if r["event"] == "clustering"]
    assert all(set(r["vetoed"]) == {"a", "b"} for r in clusterings)
    assert clusterings[-1]["nmi"] > 0.8


def test_the_dense_budget_counts_every_modalitys_log_probabilities_with_the_veto():
    from otcluster._train.clustering import use_memory_bounded

    plain = _config(dense_max_bytes=8 * 3 * 100 * 5)  # 8 bytes per entry: H=3, n=100, K=5
    assert not use_memory_bounded(plain, 100, 1, n_modalities=2)
    vetoed = _config(dense_max_bytes=8 * 3 * 100 * 5, modality_veto=2.0)
    assert use_memory_bounded(vetoed, 100, 1, n_modalities=2)  # 12 bytes per entry
    assert not use_memory_bounded(_config(dense_max_bytes=12 * 3 * 100 * 5, modality_veto=2.0),
                                  100, 1, n_modalities=2)
