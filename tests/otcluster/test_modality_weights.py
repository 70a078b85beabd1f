"""Weighted eq. 6: ``average_views(weights=)``, the model's ``modality_weights`` buffer, fixed
and ``"information"`` weights in the trainer (dense and memory-bounded, checkpoints)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from selflabel_data import Blobs, encoders, single_threaded

from otcluster import (
    HeadConfig,
    MultiHead,
    SelfLabelModel,
    SelfLabelTrainer,
    TrainerConfig,
    average_views,
    confidence_weights,
)
from otcluster._distributed import cluster_shard
from otcluster._train.weighting import (
    _kappa,
    _kappa_counts,
    information_weights,
    label_entropy,
    stability_subset,
    stability_weights,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    undo = single_threaded()
    yield
    undo()


def _config(**kw):
    base = dict(heads=HeadConfig(n_heads=2, n_clusters=4, hidden_dim=None, dropout=0.0),
                epochs=4, batch_size=32, lr=0.05, warmup_epochs=1, n_clusterings=5,
                prior="uniform", show_progress=False)
    base.update(kw)
    return TrainerConfig(**base)


# -- average_views ----------------------------------------------------------------------------

def test_weighted_average_is_the_weighted_sum_of_log_softmax():
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(2, 7, 5, generator=g) for _ in range(3))
    got = average_views([a, b, c], weights=[2.0, 1.0, 1.0])
    ls = [torch.log_softmax(x, -1) for x in (a, b, c)]
    torch.testing.assert_close(got, 0.5 * ls[0] + 0.25 * ls[1] + 0.25 * ls[2])
    # a dict is keyed by name; a zero weight leaves the view out; equal weights = the mean
    got = average_views({"x": a, "y": b}, weights={"y": 3.0, "x": 0.0})
    torch.testing.assert_close(got, ls[1])
    torch.testing.assert_close(average_views([a, b], weights=[1, 1]), average_views([a, b]))


def test_weighted_average_never_writes_into_the_inputs():
    a, b = torch.randn(4, 3).log_softmax(-1), torch.randn(4, 3).log_softmax(-1)
    a0, b0 = a.clone(), b.clone()
    average_views([a, b], normalize=False, weights=[0.3, 0.7])
    average_views([a, b], normalize=False, weights=[1.0, 0.0])
    assert torch.equal(a, a0) and torch.equal(b, b0)


@pytest.mark.parametrize("weights,match", [
    ([1.0], "1 entries for 2 views"), ([1.0, -1.0], "non-negative"), ([0.0, 0.0], "not all 0"),
    ([1.0, math.nan], "finite"), (["a", 1.0], "numbers"), ({"a": 1.0}, "missing"),
])
def test_bad_weights_are_named(weights, match):
    views = {"a": torch.zeros(2, 3), "b": torch.zeros(2, 3)} if isinstance(weights, dict) \
        else [torch.zeros(2, 3), torch.zeros(2, 3)]
    with pytest.raises(ValueError, match=match):
        average_views(views, weights=weights)


# -- confidence weights ---------------------------------------------------------------------------

def _confidence(log_p):
    """Independent reference: 1 - mean entropy / log K, by numpy-style loops."""
    k = log_p.shape[-1]
    ents = [-sum(math.exp(v) * v for v in row) for row in log_p.reshape(-1, k).tolist()]
    return max(1 - sum(ents) / len(ents) / math.log(k), 0.0)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 4), st.integers(1, 9), st.integers(2, 6), st.floats(0.1, 10),
       st.integers(0, 2**16))
def test_confidence_weights_are_normalised_confidences(n_views, n, k, scale, seed):
    g = torch.Generator().manual_seed(seed)
    views = [(scale * i * torch.randn(n, k, generator=g, dtype=torch.float64)).log_softmax(-1)
             for i in range(n_views)]
    w = confidence_weights(views, normalize=False)
    assert w.shape == (n_views,) and torch.all(w >= 0)
    assert abs(float(w.sum()) - 1) < 1e-9
    ref = [_confidence(v) for v in views]
    if sum(ref) > 0:
        torch.testing.assert_close(w, torch.tensor(ref, dtype=torch.float64) / sum(ref))
    assert float(w[0]) < 1e-9 or sum(ref) == 0  # view 0 is uniform (scale 0): no weight


def test_confidence_weights_per_head_and_the_confidence_average():
    g = torch.Generator().manual_seed(0)
    sharp = (8 * torch.randn(2, 20, 4, generator=g)).log_softmax(-1)
    flat = (0.1 * torch.randn(2, 20, 4, generator=g)).log_softmax(-1)
    flat[1] = (8 * torch.randn(20, 4, generator=g)).log_softmax(-1)  # head 1: both sharp
    w = confidence_weights({"video": flat, "audio": sharp})
    assert w.shape == (2, 2) and float(w[0, 1]) > 0.9 and abs(float(w[1, 0]) - 0.5) < 0.2
    got = average_views({"video": flat, "audio": sharp}, weights="confidence", normalize=False)
    for h in range(2):
        torch.testing.assert_close(got[h], w[h, 0] * flat[h] + w[h, 1] * sharp[h])
    # every view uniform: equal weights, the plain mean
    zeros = [torch.zeros(5, 3), torch.zeros(5, 3)]
    torch.testing.assert_close(confidence_weights(zeros), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(average_views(zeros, weights="confidence"), average_views(zeros))


def test_confidence_weights_accept_zero_probabilities():
    # log 0 = -inf is a valid log-probability: it contributes nothing to the entropy
    sure = torch.tensor([[0.0, -math.inf, -math.inf], [-math.inf, 0.0, -math.inf]])
    flat = torch.full((2, 3), -math.log(3))
    w = confidence_weights([sure, flat], normalize=False)
    torch.testing.assert_close(w, torch.tensor([1.0, 0.0]))
    mean = average_views([sure, flat], normalize=False, weights="confidence")
    assert not torch.isnan(mean).any()
    torch.testing.assert_close(mean, sure)


def test_confidence_average_stays_differentiable_like_the_plain_one():
    a = torch.randn(2, 6, 4, requires_grad=True)
    b = torch.randn(2, 6, 4)
    out = average_views([a, b], weights="confidence")
    assert out.requires_grad
    out.sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


def test_confidence_weights_name_bad_input():
    with pytest.raises(ValueError, match="shape"):
        confidence_weights([torch.zeros(4, 3), torch.zeros(5, 3)])
    with pytest.raises(ValueError, match="at least 2 clusters"):
        confidence_weights([torch.zeros(4, 1), torch.zeros(4, 1)])
    with pytest.raises(ValueError, match="NaN|finite"):
        confidence_weights([torch.full((4, 3), math.nan), torch.zeros(4, 3)])
    with pytest.raises(ValueError, match="'confidence'"):
        average_views([torch.zeros(4, 3)] * 2, weights="entropy")


# -- the information weights --------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 5), min_size=1, max_size=5), st.floats(0.1, 3),
       st.sampled_from([0.0, 0.1, 0.2, 0.5]))
def test_information_weights_are_a_distribution_ordered_by_fit(ce, entropy, floor):
    w = information_weights(ce, entropy, floor)
    if all(c >= entropy for c in ce):
        assert w is None
        return
    assert w is not None and len(w) == len(ce)
    assert all(v >= 0 for v in w) and math.isclose(sum(w), 1.0)
    lowest = floor / max(1.0, floor * len(ce) + 1.0 - floor)  # the floor after normalising
    for i in range(len(ce)):
        for j in range(len(ce)):
            if ce[i] < ce[j]:
                assert w[i] >= w[j] - 1e-12  # a modality that predicts the labels better weighs more
        if ce[i] >= entropy:
            assert w[i] == 0.0 if floor == 0 else w[i] >= lowest - 1e-12


@given(st.lists(st.floats(-1, 1), min_size=2, max_size=4), st.floats(0, 0.4))
def test_stability_weights_are_a_distribution_ordered_by_kappa(kappas, floor):
    w = stability_weights(kappas, floor)
    if not any(max(k, 0.0) ** 2 > 0 for k in kappas):  # none above chance (or a square underflows)
        assert w is None
        return
    assert w is not None and math.isclose(sum(w), 1.0, rel_tol=1e-9)
    assert min(w) >= floor / (1 + len(w) * floor) - 1e-12
    order = sorted(range(len(kappas)), key=lambda i: max(kappas[i], 0.0))
    assert all(w[i] <= w[j] + 1e-12 for i, j in zip(order, order[1:]))


@pytest.mark.parametrize("seed", range(5))
def test_kappa_matches_scikit_learn(seed):
    from sklearn.metrics import cohen_kappa_score

    gen = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 4, (3, 50), generator=gen)
    b = torch.where(torch.rand(3, 50, generator=gen) < 0.6, a, torch.randint(0, 4, (3, 50), generator=gen))
    got = _kappa(_kappa_counts(a, b, 4))
    want = [cohen_kappa_score(a[i].numpy(), b[i].numpy()) for i in range(3)]
    assert got.tolist() == pytest.approx(want, abs=1e-12)
    # summed counts of two halves (two ranks) give the kappa of the whole
    halves = _kappa_counts(a[:, :20], b[:, :20], 4) + _kappa_counts(a[:, 20:], b[:, 20:], 4)
    assert _kappa(halves).tolist() == pytest.approx(want, abs=1e-12)
    # one cluster in both views: agreement is certain by chance, kappa 0 (not NaN)
    zero = torch.zeros(1, 10, dtype=torch.int64)
    assert _kappa(_kappa_counts(zero, zero, 4)).tolist() == [0.0]


@pytest.mark.parametrize("n,world,cap,seed", [(10, 3, 4, 0), (101, 2, 30, 5), (7, 2, 7, 1),
                                              (50, 4, 1, 2), (9, 1, None, 0)])
def test_stability_subset_is_one_subset_shared_by_the_ranks(n, world, cap, seed):
    shares = [stability_subset(cluster_shard(n, r, world), n, cap, seed) for r in range(world)]
    whole = torch.cat(shares)
    assert whole.numel() == min(n, cap or n) and whole.unique().numel() == whole.numel()
    for r, share in enumerate(shares):
        assert bool(torch.isin(share, cluster_shard(n, r, world)).all())
        assert bool((share[1:] > share[:-1]).all())  # in the shard's order
        assert torch.equal(share, stability_subset(cluster_shard(n, r, world), n, cap, seed))
    if cap is None or cap >= n:  # nothing left out: the positions themselves
        assert all(torch.equal(s, cluster_shard(n, r, world)) for r, s in enumerate(shares))


@pytest.mark.parametrize("value", [0, -5, 2.5, True, "all"])
def test_bad_stability_cap_names_the_field(value):
    with pytest.raises(ValueError, match="TrainerConfig.stability_max_samples"):
        TrainerConfig(stability_max_samples=value).validate()
    if value is not None:
        with pytest.raises(ValueError, match="TrainerConfig.stability_every"):
            TrainerConfig(stability_every=value).validate()


def test_stability_subsets_differ_between_clusterings():
    draws = {tuple(stability_subset(torch.arange(100), 100, 10, seed).tolist()) for seed in range(5)}
    assert len(draws) == 5


def test_label_entropy_is_that_of_the_cluster_sizes():
    labels = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0]])
    assert math.isclose(label_entropy(labels, 3), (math.log(2) + 0.0) / 2)


# -- the model ----------------------------------------------------------------------------------

def _model():
    torch.manual_seed(0)
    enc = {"a": torch.nn.Linear(4, 8), "b": torch.nn.Linear(3, 8)}
    cfg = HeadConfig(n_heads=2, n_clusters=5, hidden_dim=None)
    return SelfLabelModel(enc, {m: MultiHead(8, cfg) for m in enc}).eval()


def test_model_weights_default_equal_set_saved_and_used():
    model = _model()
    assert model.modality_weights.tolist() == [0.5, 0.5] and model.weights_of(["a", "b"]) is None
    feats = {"a": torch.randn(6, 8), "b": torch.randn(6, 8)}
    equal = model.mean_log_probs(feats)
    model.set_modality_weights({"a": 1.0, "b": 3.0})
    assert model.weights_of(["a", "b"]) == [0.25, 0.75]
    lp = model.log_probs_from_features(feats)
    with torch.no_grad():
        torch.testing.assert_close(model.mean_log_probs(feats), 0.25 * lp["a"] + 0.75 * lp["b"])
        assert not torch.allclose(model.mean_log_probs(feats), equal)
    other = _model()
    other.load_state_dict(model.state_dict())
    assert other.weights_of(["a", "b"]) == [0.25, 0.75]
    # a state dict written before the weights existed loads with equal weights
    old = {k: v for k, v in model.state_dict().items() if k != "modality_weights"}
    other.load_state_dict(old)
    assert other.modality_weights.tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="missing"):
        model.set_modality_weights({"a": 1.0})


# -- the trainer --------------------------------------------------------------------------------

class OneInformative(Blobs):
    """Modality ``a`` sees the classes; ``b`` is noise, redrawn at every read."""

    def __getitem__(self, i):
        out = super().__getitem__(i)
        out["b"] = torch.randn(self.d)
        return out


@pytest.mark.parametrize("floor", [0.0, 0.2])
def test_information_weights_follow_the_informative_modality(floor):
    data = OneInformative(n=240, k=4)
    cfg = _config(modality_weights="information", modality_weights_floor=floor)
    trainer = SelfLabelTrainer(encoders(), data, cfg, ground_truth=data.y)
    history = trainer.fit()
    recs = [r for r in history if r["event"] == "clustering"]
    assert recs[0]["modality_weights"] == {"a": 0.5, "b": 0.5}  # nothing measured yet
    w = recs[-1]["modality_weights"]
    assert math.isclose(w["a"] + w["b"], 1.0, rel_tol=1e-6)
    # the noise modality cannot predict the labels: down to the floor (0.2 / 1.2 normalised)
    if floor == 0:
        assert w["a"] > 0.9, w
    else:
        assert w["b"] == pytest.approx(floor / (1 + floor), abs=1e-6), w
    assert torch.allclose(trainer.model.modality_weights, torch.tensor([w["a"], w["b"]]))
    assert recs[-1]["nmi"] > 0.9
    # labels of new data use the same weights
    labels, _ = trainer.predict(Blobs(n=240, k=4, augment=0.0))
    assert labels.shape == (2, 240)


def test_information_weights_wait_for_the_warmup():
    data = OneInformative(n=240, k=4)
    cfg = _config(modality_weights="information", modality_weights_warmup=0.6)  # 3 of 5
    history = SelfLabelTrainer(encoders(), data, cfg).fit()
    weights = [r["modality_weights"]["a"] for r in history if r["event"] == "clustering"]
    assert len(weights) == 5 and weights[:3] == [0.5, 0.5, 0.5], weights
    assert weights[3] > 0.7 and weights[4] > 0.7, weights


@pytest.mark.parametrize("cap", [4096, 64])  # every sample; a quarter
def test_stability_weights_follow_the_modality_whose_clusters_are_stable(cap):
    data = OneInformative(n=240, k=4)
    cfg = _config(modality_weights="stability", modality_weights_floor=0.2,
                  stability_max_samples=cap)
    trainer = SelfLabelTrainer(encoders(), data, cfg, ground_truth=data.y)
    history = trainer.fit()
    recs = [r for r in history if r["event"] == "clustering"]
    # b is redrawn at every read: its clusters on two reads agree by chance only
    w = recs[-1]["modality_weights"]
    assert w["b"] == pytest.approx(0.2 / 1.2, abs=0.02), w
    assert math.isclose(w["a"] + w["b"], 1.0, rel_tol=1e-6)
    assert torch.allclose(trainer.model.modality_weights, torch.tensor([w["a"], w["b"]]))
    assert recs[-1]["nmi"] > 0.9
    if cap < 240:
        return
    # with a warm-up, the first clusterings keep equal weights
    warm = SelfLabelTrainer(encoders(), data, _config(modality_weights="stability",
                                                      modality_weights_warmup=0.6)).fit()
    a = [r["modality_weights"]["a"] for r in warm if r["event"] == "clustering"]
    assert a[:3] == [0.5, 0.5, 0.5] and min(a[3:]) > 0.7, a


def test_stability_every_measures_every_nth_clustering_and_keeps_the_weights(monkeypatch):
    from otcluster._train import trainer as trainer_module

    measured = []
    real = trainer_module.stability_kappas

    def spy(*args, **kwargs):
        measured.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "stability_kappas", spy)
    data = OneInformative(n=240, k=4)
    cfg = _config(modality_weights="stability", stability_every=2, n_clusterings=6,
                  modality_weights_warmup=0.2)  # warm-up: clustering 0; measured at 1, 3, 5
    history = SelfLabelTrainer(encoders(), data, cfg).fit()
    a = [r["modality_weights"]["a"] for r in history if r["event"] == "clustering"]
    assert len(a) == 6 and len(measured) == 3, (a, measured)
    assert a[0] == 0.5 and a[1] > 0.7 and a[2] == a[1] and a[4] == a[3], a
    assert a[1] != a[3] or a[3] != a[5], a  # each measurement set them anew


@pytest.mark.parametrize("mode", ["stability", "information"])
def test_momentum_keeps_its_share_of_the_weights_before(mode):
    from otcluster._train.weighting import FitTracker, update_modality_weights

    model = _model()
    fit = FitTracker(2, torch.device("cpu"))
    labels = (torch.arange(40) % 5).repeat(2, 1)  # (H, N)
    measured = [[0.9, 0.1], [0.1, 0.9], [0.5, 0.5]]  # kappas, or fit's cross-entropies
    expect, before, raw, gots = [], [0.5, 0.5], [], []
    for i, pair in enumerate(measured):
        if mode == "information":
            fit.sums.copy_(torch.tensor(pair + [1.0], dtype=fit.sums.dtype))
            w = information_weights(pair, label_entropy(labels, 5), 0.2)
        else:
            w = stability_weights(pair, 0.2)
        raw.append(w)
        before = [0.7 * b + 0.3 * x for b, x in zip(before, w)]
        expect.append(before)
        got = update_modality_weights(model, fit, labels,
                                      _config(modality_weights=mode, modality_weights_momentum=0.7,
                                              heads=HeadConfig(n_heads=2, n_clusters=5)),
                                      i, 3, stability=lambda pair=pair: pair)
        assert got["a"] == pytest.approx(expect[-1][0], abs=1e-6), (i, got, expect)
        assert got["a"] + got["b"] == pytest.approx(1.0, abs=1e-6)
        gots.append(got["a"])
    # the second measurement reverses the first; "a" moves towards it, but only part of the way
    lo, hi = sorted((gots[0], raw[1][0]))
    assert lo < gots[1] < hi and abs(gots[1] - raw[1][0]) > 0.1, (gots, raw)


def test_momentum_zero_sets_the_measured_weights():
    from otcluster._train.weighting import FitTracker, update_modality_weights

    model = _model()
    got = update_modality_weights(model, FitTracker(2, torch.device("cpu")), None,
                                  _config(modality_weights="stability"), 0, 3,
                                  stability=lambda: [0.9, 0.1])
    w = stability_weights([0.9, 0.1], 0.2)
    assert got["a"] == pytest.approx(w[0], abs=1e-6) and got["b"] == pytest.approx(w[1], abs=1e-6)


def test_bad_momentum_is_named():
    with pytest.raises(ValueError, match="modality_weights_momentum"):
        _config(modality_weights="stability", modality_weights_momentum=1.0).validate()


class Steady(Blobs):
    """Like :class:`OneInformative`, but ``b``'s noise is fixed per sample: two reads agree."""

    def __getitem__(self, i):
        out = super().__getitem__(i)
        out["b"] = torch.randn(self.d, generator=torch.Generator().manual_seed(i))
        return out


def test_stability_is_measured_on_the_stability_dataset():
    data = OneInformative(n=240, k=4)
    cfg = _config(modality_weights="stability", modality_weights_floor=0.2)
    trainer = SelfLabelTrainer(encoders(), data, cfg, stability_dataset=Steady(n=240, k=4))
    w = [r for r in trainer.fit() if r["event"] == "clustering"][-1]["modality_weights"]
    # b's clusters now survive the second read: b keeps its say (0.17 when redrawn, above)
    assert w["b"] > 0.3, w
    with pytest.raises(ValueError, match="stability_dataset must have the dataset's N=240"):
        SelfLabelTrainer(encoders(), data, cfg, stability_dataset=Steady(n=200, k=4))


def test_equal_weighting_records_no_weights_and_keeps_the_mean():
    data = Blobs(n=120, k=4)
    trainer = SelfLabelTrainer(encoders(), data, _config(epochs=2))
    history = trainer.fit()
    assert all("modality_weights" not in r for r in history)
    assert trainer.model.modality_weights.tolist() == [0.5, 0.5]


def test_fixed_weights_are_checked_against_the_encoders():
    with pytest.raises(ValueError, match=r"TrainerConfig.modality_weights: .*missing \['b'\]"):
        SelfLabelTrainer(encoders(), Blobs(n=64), _config(modality_weights={"a": 1.0}))
    with pytest.raises(ValueError, match="TrainerConfig.modality_weights"):
        _config(modality_weights="loudest").validate()
    with pytest.raises(ValueError, match="TrainerConfig.modality_weights"):
        _config(modality_weights={"a": -1.0, "b": 1.0}).validate()


@pytest.mark.parametrize("hidden", [None, 16])
def test_memory_bounded_clustering_uses_the_weights(hidden):
    data = Blobs(n=300, k=5, augment=0.0)
    heads = HeadConfig(n_heads=3, n_clusters=5, hidden_dim=hidden, dropout=0.3)
    kw = dict(heads=heads, prior="gaussian", sinkhorn_tol=1e-4,
              modality_weights={"a": 0.15, "b": 0.85})
    enc = encoders()
    a = SelfLabelTrainer(enc, data, _config(**kw))
    b = SelfLabelTrainer(copy.deepcopy(enc), data, _config(memory_bounded=True, **kw))
    b.model.load_state_dict(a.model.state_dict())
    assert a.model.weights_of(["a", "b"]) == pytest.approx([0.15, 0.85])
    equal = SelfLabelTrainer(copy.deepcopy(enc), data, _config(**{**kw, "modality_weights": "equal"}))
    equal.model.load_state_dict({**a.model.state_dict(),
                                 "modality_weights": torch.tensor([0.5, 0.5])})
    a._cluster(), b._cluster(), equal._cluster()
    agree = (a.labels_ == b.labels_).double().mean().item()
    assert agree >= 0.997, agree
    assert not torch.equal(a.labels_, equal.labels_)  # the weights changed the clustering


class _Crash(Exception):
    pass


class CrashAfterEpoch2(SelfLabelTrainer):
    def save_checkpoint(self, path):
        super().save_checkpoint(path)
        if self.epoch_ == 2:
            raise _Crash


@pytest.mark.parametrize("mode,cap,every,momentum", [
    ("information", None, 1, 0.0), ("stability", None, 1, 0.0), ("stability", 50, 1, 0.0),
    ("stability", None, 2, 0.0), ("stability", None, 1, 0.7)])
def test_adaptive_weights_resume_exactly(tmp_path, mode, cap, every, momentum):
    data = Blobs(n=150, k=4)
    cfg = dict(heads=HeadConfig(n_heads=2, n_clusters=4, hidden_dim=8, dropout=0.3),
               n_clusterings=3 + every, prior="gaussian", modality_weights=mode,
               stability_max_samples=cap, stability_every=every,
               modality_weights_momentum=momentum)
    full = SelfLabelTrainer(encoders(seed=5), data, _config(checkpoint_dir=str(tmp_path / "f"), **cfg))
    full.fit()
    crashing = CrashAfterEpoch2(encoders(seed=5), data,
                                _config(checkpoint_dir=str(tmp_path / "r"), **cfg))
    with pytest.raises(_Crash):
        crashing.fit()
    if mode == "information":  # the checkpoint falls between clusterings: the cross-entropies
        # so far are part of it
        fit = torch.load(tmp_path / "r" / "last.pt", weights_only=True)["modality_fit"]
        assert float(fit[-1]) > 0
    resumed = SelfLabelTrainer(encoders(seed=9), data,
                               _config(checkpoint_dir=str(tmp_path / "r"), **cfg))
    resumed.fit()
    assert torch.equal(resumed.labels_, full.labels_)
    assert torch.equal(resumed.model.modality_weights, full.model.modality_weights)
    assert not torch.equal(full.model.modality_weights, torch.tensor([0.5, 0.5]))
    loaded = SelfLabelModel.from_checkpoint(tmp_path / "f", encoders(seed=1))
    assert torch.equal(loaded.modality_weights, full.model.modality_weights)
    only_b = SelfLabelModel.from_checkpoint(tmp_path / "f", {"b": encoders(seed=1)["b"]})
    assert only_b.modalities == ["b"] and only_b.weights_of(["b"]) is None
