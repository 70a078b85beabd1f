"""Tests of the self-labelling trainer: config and data checks, heads, alignment, clustering
(dense and memory-bounded), the training loop and inference."""

from __future__ import annotations

import copy

import pytest
import torch
from selflabel_data import Blobs, encoders, single_threaded
from torch import nn

from otcluster import (
    ConvergenceWarning,
    HeadConfig,
    MultiHead,
    SelfLabelModel,
    SelfLabelTrainer,
    SinkhornResult,
    TrainerConfig,
    permute_linear_,
)
from otcluster._solver import robust_solve
from otcluster._train import clustering


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    undo = single_threaded()
    yield
    undo()


def config(**kw):
    heads = kw.pop("heads", HeadConfig(n_heads=3, n_clusters=4, hidden_dim=None, dropout=0.0))
    base = dict(heads=heads, epochs=3, batch_size=32, lr=0.05, warmup_epochs=1, n_clusterings=4,
                prior="uniform", show_progress=False)
    base.update(kw)
    return TrainerConfig(**base)


# -- configuration and input checks -----------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("epochs", 0), ("batch_size", 2.5), ("lr", -1.0), ("momentum", 1.0), ("lam", 0.0),
    ("n_clusterings", 0), ("schedule_power", 0), ("align", "hungarian"), ("head_groups", 0),
    ("num_workers", -1), ("seed", -3), ("checkpoint_every", 0), ("memory_bounded", "yes"),
    ("prior", "pareto"), ("prior", [0.5, 0.5]), ("sinkhorn_dtype", "float16"),
    ("dense_max_bytes", 0), ("amp", 1), ("lr", {"a": 0.1, "b": 0}), ("lr", {}),
    ("optimizer", {"a": "sgd", "b": "adam"}), ("optimizer", {1: "sgd"}),
])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"TrainerConfig.{field}"):
        config(**{field: value}).validate()


@pytest.mark.parametrize("field,value", [("n_heads", 0), ("n_clusters", 1), ("hidden_dim", 0),
                                         ("dropout", 1.0)])
def test_bad_head_config(field, value):
    with pytest.raises(ValueError, match=f"HeadConfig.{field}"):
        SelfLabelTrainer(encoders(), Blobs(), config(heads=HeadConfig(**{field: value})))


def test_bad_encoders_and_ground_truth():
    with pytest.raises(ValueError, match="non-empty dict"):
        SelfLabelTrainer({}, Blobs(), config())
    with pytest.raises(ValueError, match="'index'"):
        SelfLabelTrainer({"index": encoders()["a"]}, Blobs(), config())
    with pytest.raises(TypeError, match="encoder 'a' must be an nn.Module"):
        SelfLabelTrainer({"a": lambda x: x}, Blobs(), config())
    with pytest.raises(ValueError, match="ground_truth must have shape"):
        SelfLabelTrainer(encoders(), Blobs(), config(), ground_truth=[0, 1])
    with pytest.raises(ValueError, match="n_clusters K=4 is more than the N=3"):
        SelfLabelTrainer(encoders(), Blobs(n=3), config())


def test_head_initialisation_depends_on_the_seed_only():
    """Not on the global generators' state left by earlier work in the process."""
    enc = encoders()
    torch.manual_seed(123)
    a = SelfLabelTrainer(copy.deepcopy(enc), Blobs(), config(seed=3))
    torch.rand(1000)  # anything that draws from the global generator in between
    after_a = torch.random.get_rng_state()
    b = SelfLabelTrainer(copy.deepcopy(enc), Blobs(), config(seed=3))
    c = SelfLabelTrainer(copy.deepcopy(enc), Blobs(), config(seed=4))
    heads = {k: v for k, v in a.model.state_dict().items() if k.startswith("heads.")}
    assert heads
    for k, v in heads.items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert any(not torch.equal(v, c.model.state_dict()[k]) for k, v in heads.items())
    torch.manual_seed(123)
    torch.rand(1000)
    assert torch.equal(after_a, torch.random.get_rng_state())  # construction left it alone


def test_dataset_missing_modality_or_index():
    with pytest.raises(KeyError, match=r"missing modality \['c'\]"):
        SelfLabelTrainer(encoders(("a", "c")), Blobs(), config())

    class NoIndex(Blobs):
        def __getitem__(self, i):
            out = super().__getitem__(i)
            del out["index"]
            return out

    with pytest.raises(KeyError, match="no 'index' key"):
        SelfLabelTrainer(encoders(), NoIndex(), config())


@pytest.mark.parametrize("index_of,match", [
    (lambda i: i + 1000, r"must lie in 0\.\.239"),
    (lambda i: i // 2, "permutation of 0..239"),
])
def test_bad_sample_indices(index_of, match):
    data = Blobs(index_of=lambda i: i)
    data.index_of = index_of
    data.x = {m: torch.cat([x] * 5000) for m, x in data.x.items()}  # readable at any index
    trainer = SelfLabelTrainer(encoders(), data, config(align=None))
    with pytest.raises(ValueError, match=match):
        trainer.fit()


def test_encoder_with_bad_output_shape():
    class Flat(nn.Module):
        def forward(self, x):
            return x[:, None, :]

    with pytest.raises(ValueError, match="encoder 'a' must return features of shape"):
        SelfLabelTrainer({"a": Flat()}, Blobs(), config())


# -- heads -------------------------------------------------------------------------------------

@pytest.mark.parametrize("hidden", [None, 12])
def test_multihead_structure(hidden):
    heads = MultiHead(8, HeadConfig(n_heads=4, n_clusters=5, hidden_dim=hidden, dropout=0.3)).eval()
    x = torch.randn(7, 8)
    out = heads(x)
    assert out.shape == (4, 7, 5)
    assert torch.allclose(heads(x, [2, 0]), out[[2, 0]])
    for h in range(4):
        assert isinstance(heads.last_linear(h), nn.Linear)
        assert torch.allclose(heads.last_linear(h)(heads.penultimate(x, h)), out[h], atol=1e-6)
    assert heads.is_linear == (hidden is None)
    if hidden is not None:  # the paper's MLPv2: Dropout, Linear (no bias), BN, ReLU, Dropout, Linear
        kinds = [type(m) for m in heads.heads[0]]
        assert kinds == [nn.Dropout, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear]
        assert heads.heads[0][1].bias is None


# -- alignment ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["exact", "greedy", None])
def test_alignment_undoes_a_permutation_of_the_second_modality(method):
    data = Blobs(n=200, k=5, augment=0.0)
    data.x["b"] = data.x["a"]  # the same input in both modalities
    enc = encoders(("a",))
    enc["b"] = copy.deepcopy(enc["a"])
    cfg = config(heads=HeadConfig(n_heads=2, n_clusters=5, hidden_dim=None, dropout=0.0),
                 align=method)
    trainer = SelfLabelTrainer(enc, data, cfg)
    heads = trainer.model.heads
    heads["b"].load_state_dict(heads["a"].state_dict())
    perms = [torch.tensor([3, 0, 4, 1, 2]), torch.tensor([1, 2, 3, 4, 0])]
    for h, perm in enumerate(perms):
        permute_linear_(heads["b"].last_linear(h), perm)
    x = torch.randn(10, 8)
    assert not torch.allclose(heads["a"](x), heads["b"](x))
    trainer._align()
    if method is None:
        assert not torch.allclose(heads["a"](x), heads["b"](x))
        assert trainer.history_ == []
        return
    torch.testing.assert_close(heads["a"](x), heads["b"](x))
    (event,) = trainer.history_
    assert event["event"] == "align" and event["modality"] == "b" and event["reference"] == "a"
    assert event["cost_after"] == pytest.approx(0.0, abs=1e-6)
    assert event["cost_before"] > 0.1


def assert_same_argmax(labels, scores, gap=1e-4):
    """``labels == scores.argmax(-1)`` wherever the top two scores differ by more than ``gap``.

    Inference runs in batches, the reference in one forward pass: BLAS blocks the products
    differently (bit-for-bit equal outputs are no contract, they differed on AMD EPYC), so a
    near tie may go either way."""
    top2 = scores.topk(2, dim=-1).values
    decided = (top2[..., 0] - top2[..., 1]) > gap
    assert torch.equal(labels[decided], scores.argmax(-1)[decided])
    assert decided.double().mean() > 0.9  # the check is not vacuous


# -- clustering: dense and memory-bounded ------------------------------------------------------

def _twin_trainers(hidden, n=300, **kw):
    """Two trainers with the same model; the second clusters with the memory-bounded solver.

    A tight tolerance: the dense solve iterates all heads together, the memory-bounded one each
    MLP head on its own, so with a loose tolerance they may stop at different passes."""
    kw.setdefault("sinkhorn_tol", 1e-4)
    data = Blobs(n=n, k=5, augment=0.0)
    heads = HeadConfig(n_heads=3, n_clusters=5, hidden_dim=hidden, dropout=0.3)
    enc = encoders()
    a = SelfLabelTrainer(enc, data, config(heads=heads, **kw))
    b = SelfLabelTrainer(copy.deepcopy(enc), data, config(heads=heads, memory_bounded=True, **kw))
    b.model.load_state_dict(a.model.state_dict())
    return a, b


@pytest.mark.parametrize("hidden", [None, 16])
def test_memory_bounded_gives_the_dense_labels(hidden):
    a, b = _twin_trainers(hidden, prior="gaussian")
    for _ in range(2):  # the second clustering is warm-started from the first
        ra, rb = a._cluster(), b._cluster()
        assert not ra["memory_bounded"] and rb["memory_bounded"]
        agree = (a.labels_ == b.labels_).double().mean().item()
        assert agree >= 0.997, agree  # measured 100 % at N=300 and N=2000
    assert b.labeler_.state_dict()["log_v"].shape == (3, 5)
    sizes = torch.stack([torch.bincount(lab, minlength=5) for lab in b.labels_])
    assert int(sizes.min()) > 0


@pytest.mark.parametrize("memory_bounded", [False, True])
def test_single_head(memory_bounded):
    data = Blobs(n=120, k=3)
    heads = HeadConfig(n_heads=1, n_clusters=3, hidden_dim=None, dropout=0.0)
    trainer = SelfLabelTrainer(encoders(), data, config(heads=heads, prior="gaussian", epochs=2,
                                                        memory_bounded=memory_bounded),
                               ground_truth=data.y)
    history = trainer.fit()
    assert trainer.labels_.shape == (1, 120) and trainer.prior_.shape == (1, 3)
    clusterings = [r for r in history if r["event"] == "clustering"]
    assert all(r["memory_bounded"] == memory_bounded for r in clusterings)
    assert clusterings[-1]["nmi"] > 0.8
    assert trainer.labeler_.state_dict()["log_v"].shape == (3,)  # warm start kept


def test_memory_bounded_switches_on_automatically_above_dense_max_bytes():
    a, _ = _twin_trainers(None, dense_max_bytes=1000)
    assert a._cluster()["memory_bounded"]


def _result(error, n_iter=10):
    z = torch.zeros(2, 4, dtype=torch.float64)
    err = torch.tensor(error, dtype=torch.float64)
    return SinkhornResult(torch.zeros(2, 5, dtype=torch.int64), None, n_iter, err <= 1e-3, err,
                          z, z, z)


@pytest.mark.parametrize("errors,expect_calls", [
    ([[1e-4, 1e-4]], 1),
    ([[1e-4, float("nan")], [1e-4, 1e-4]], 2),
    ([[1e-4, 1.2], [0.3, 1e-4], [1e-4, 2e-3]], 3),
    ([[1e-4, 1.2], [0.3, 1e-4], [1e-4, 0.9]], 3),  # the last attempt is kept, with its warning
])
def test_failed_solves_are_redone_in_float64_then_without_acceleration(errors, expect_calls):
    """The retry ladder (moved from the trainer into the solver package; the labeler runs it)."""
    calls = []

    def solve(dtype, anderson):
        calls.append((dtype, anderson))
        if len(calls) == len(errors) and errors[-1][1] > 0.05:
            import warnings

            warnings.warn("did not converge", ConvergenceWarning, stacklevel=1)
        return _result(errors[len(calls) - 1], n_iter=7)

    if errors[-1][1] > 0.05:
        with pytest.warns(ConvergenceWarning):
            res, n_iter, retries = robust_solve(solve, "auto")
    else:
        res, n_iter, retries = robust_solve(solve, "auto")
    assert calls == [(torch.float32, None), (torch.float64, None), (torch.float64, 0)][:expect_calls]
    assert n_iter == 7 * expect_calls and retries == expect_calls - 1
    calls.clear()
    robust_solve(solve, "float64")
    assert calls == [(torch.float64, None)]


@pytest.mark.parametrize("dtype", ["auto", "float32", "float64"])
def test_the_labeler_solves_with_the_configured_dtype_and_counts_retries(dtype, monkeypatch):
    trainer = SelfLabelTrainer(encoders(), Blobs(n=60), config(sinkhorn_dtype=dtype))
    lab = trainer.labeler_
    assert lab.dtype == dtype and lab.tol == trainer.config.sinkhorn_tol
    fit = type(lab).fit

    def fit_with_two_retries(self, *args, **kw):  # as if float32 and float64+Anderson failed
        out = fit(self, *args, **kw)
        self.n_retries_ += 2
        return out

    monkeypatch.setattr(type(lab), "fit", fit_with_two_retries)
    assert trainer._cluster()["solver_retries"] == 2 and trainer.n_solver_retries_ == 2
    assert trainer._cluster()["solver_retries"] == 2 and trainer.n_solver_retries_ == 4
    assert lab.dtype == dtype  # the trainer never changes the labeler's settings


def test_collapsed_clusters_get_their_share():
    """Clusters whose logits are far below the others for every sample (collapsed clusters)
    underflowed the solver's float32 kernel (NaN error, empty clusters); the trainer's labels
    stay balanced (the solve is redone when it fails)."""
    data = Blobs(n=300, k=5, augment=0.0)
    heads = HeadConfig(n_heads=2, n_clusters=5, hidden_dim=None, dropout=0.0)
    trainer = SelfLabelTrainer(encoders(), data, config(heads=heads, sinkhorn_max_iter=300))
    with torch.no_grad():
        for m in ("a", "b"):
            for h in range(2):
                trainer.model.heads[m].last_linear(h).bias[:2] -= 8.0  # two dead clusters
    with _no_warning():
        rec = trainer._cluster()
    sizes = torch.stack([torch.bincount(lab, minlength=5) for lab in trainer.labels_])
    assert rec["converged"] and int(sizes.min()) >= 40


def test_failed_accelerated_solve_is_redone(monkeypatch):
    """One head converges at once, the other needs hundreds of passes: with the solver's Anderson
    acceleration the converged head's potentials became NaN (all samples in one cluster); the
    trainer redoes the solve and gets balanced labels for both heads."""
    g = torch.Generator().manual_seed(1)
    hard = (3.0 * torch.randn(150, 4, generator=g)).log_softmax(-1)
    easy = (0.05 * torch.randn(150, 4, generator=g)).log_softmax(-1)
    x = torch.stack([hard, easy])
    heads = HeadConfig(n_heads=2, n_clusters=4, hidden_dim=None, dropout=0.0)
    trainer = SelfLabelTrainer(encoders(), Blobs(n=150), config(heads=heads, prior="gaussian",
                                                                seed=1, head_groups=1))
    monkeypatch.setattr(clustering, "mean_log_probs_fn", lambda model, heads: heads)
    monkeypatch.setattr(trainer.passes, "eval_pass",
                        lambda model, data, pos, mods, heads, n, desc: (pos, {"log_p": x[heads]}))
    with _no_warning():
        rec = trainer._cluster()
    assert rec["converged"]
    sizes = torch.stack([torch.bincount(lab, minlength=4) for lab in trainer.labels_])
    assert int(sizes.min()) >= 25
    assert bool(torch.isfinite(trainer.labeler_.state_dict()["log_v"]).all())


class _no_warning:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


# -- training ----------------------------------------------------------------------------------

def test_fit_learns_the_shared_classes_and_follows_the_schedule():
    data = Blobs(n=240, k=4)
    trainer = SelfLabelTrainer(encoders(), data, config(epochs=4, n_clusterings=5),
                               ground_truth=data.y)
    history = trainer.fit()
    assert history is trainer.history_
    kinds = [r["event"] for r in history]
    assert kinds[0] == "align" and kinds.count("epoch") == 4
    clusterings = [r for r in history if r["event"] == "clustering"]
    assert [r["step"] for r in clusterings] == trainer.schedule_
    assert trainer.schedule_[0] == 0 and trainer.schedule_[-1] == trainer.total_steps == 32
    assert trainer.labels_.shape == (3, 240) and trainer.labels_.dtype == torch.int64
    last = clusterings[-1]
    assert last["nmi"] > 0.9 and last["acc"] > 0.9 and last["nmi_mean"] > 0.9
    assert 0 <= last["changed"] < 0.1 and last["converged"]
    assert last["size_entropy"] == pytest.approx(torch.log(torch.tensor(4.0)).item(), abs=0.02)
    losses = [r["loss"] for r in history if r["event"] == "epoch"]
    assert losses[-1] < losses[0]
    assert trainer.fit() is history and len(history) == len(kinds)  # finished: nothing more


def test_fit_with_mlp_heads_groups_and_gaussian_prior_and_progress_bars(capsys):
    data = Blobs(n=150, k=3)
    heads = HeadConfig(n_heads=4, n_clusters=3, hidden_dim=8, dropout=0.3)
    trainer = SelfLabelTrainer(encoders(), data,
                               config(heads=heads, prior="gaussian", head_groups=2, epochs=2,
                                      batch_size=16, show_progress=True), ground_truth=data.y)
    trainer.fit()
    assert trainer.prior_.shape == (4, 3)
    assert trainer.labels_.shape == (4, 150)
    assert "epoch 2/2" in capsys.readouterr().err


def test_three_modalities():
    data = Blobs(n=200, k=4, modalities=("a", "b", "c"))
    trainer = SelfLabelTrainer(encoders(("a", "b", "c")), data, config(), ground_truth=data.y)
    history = trainer.fit()
    assert [r["modality"] for r in history if r["event"] == "align"] == ["b", "c"]
    assert list(trainer.model.heads) == ["a", "b", "c"]
    assert [r for r in history if r["event"] == "clustering"][-1]["nmi"] > 0.9


# -- inference ---------------------------------------------------------------------------------

def test_extract_and_predict_are_in_index_order():
    n = 120
    train = Blobs(n=n, k=4)
    trainer = SelfLabelTrainer(encoders(), train, config(epochs=2))
    trainer.fit()
    test = Blobs(n=n, k=4, augment=0.0, index_of=lambda i: n - 1 - i)  # positions reversed
    feats = trainer.extract(test)
    model = trainer.model.eval()
    with torch.no_grad():
        direct = {m: model.encoders[m](test.x[m]) for m in ("a", "b")}
        direct_lp = {m: torch.log_softmax(model.heads[m](direct[m]), -1) for m in ("a", "b")}
    for m in ("a", "b"):
        torch.testing.assert_close(feats[m], direct[m])
    lp = trainer.predict_log_probs(test, batch_size=7)
    for m in ("a", "b"):
        assert lp[m].shape == (3, n, 4)
        torch.testing.assert_close(lp[m], direct_lp[m])
    labels, conf = trainer.predict(test)
    mean = (direct_lp["a"] + direct_lp["b"]) / 2
    assert_same_argmax(labels, mean)
    torch.testing.assert_close(conf, mean.log_softmax(-1).exp().amax(-1))
    assert bool(((conf > 0) & (conf <= 1)).all())
    only_a, _ = trainer.predict(test, modalities="a")
    assert_same_argmax(only_a, direct_lp["a"])
    assert list(trainer.extract(test, modalities=["b"])) == ["b"]
    with pytest.raises(ValueError, match="unknown modalities"):
        trainer.extract(test, modalities=["video"])


def test_inference_from_a_checkpoint_without_a_trainer(tmp_path):
    """SelfLabelModel.from_checkpoint + predict: no optimiser, no training dataset."""
    n = 120
    trainer = SelfLabelTrainer(encoders(), Blobs(n=n, k=4), config(epochs=2,
                                                                   checkpoint_dir=str(tmp_path)))
    trainer.fit()
    test = Blobs(n=n, k=4, augment=0.0, index_of=lambda i: n - 1 - i)
    model = SelfLabelModel.from_checkpoint(tmp_path, encoders(seed=7))  # the folder: its last.pt
    assert not model.training and model.modalities == ["a", "b"]
    labels, conf = model.predict(test, batch_size=7)
    want_labels, want_conf = trainer.predict(test)
    lp = trainer.predict_log_probs(test)
    assert_same_argmax(labels, (lp["a"] + lp["b"]) / 2)  # other batches: near ties may flip
    assert_same_argmax(want_labels, (lp["a"] + lp["b"]) / 2)
    torch.testing.assert_close(conf, want_conf)
    feats = model.extract(test)
    torch.testing.assert_close(feats["b"], trainer.extract(test)["b"])
    lp = model.log_probs_from_features(feats)
    torch.testing.assert_close(lp["a"], trainer.predict_log_probs(test)["a"])
    torch.testing.assert_close(model.mean_log_probs(feats), (lp["a"] + lp["b"]) / 2)

    only_b = SelfLabelModel.from_checkpoint(tmp_path / "last.pt", {"b": encoders()["b"]})
    assert only_b.modalities == ["b"]
    assert torch.equal(only_b.predict(test)[0], trainer.predict(test, modalities="b")[0])
    with pytest.raises(ValueError, match=r"encoders \['video'\] are not modalities"):
        SelfLabelModel.from_checkpoint(tmp_path, {"video": encoders()["a"]})


@pytest.mark.parametrize("name", ["otcluster._train.model", "otcluster._train.trainer",
                                  "otcluster._io", "otcluster._threads", "otcluster._schedule",
                                  "otcluster._heads", "otcluster._train.veto",
                                  "otcluster._train.weighting"])
def test_docstring_examples_of_the_trainer_modules(name):
    import doctest
    import importlib

    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    assert tests, f"{name} has no docstring examples"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        torch.manual_seed(0)
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
