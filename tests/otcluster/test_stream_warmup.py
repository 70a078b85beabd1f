"""The stream warm-up (``TrainerConfig.stream_warmup``): each modality clustered from its own
heads and trained on its own labels for the first clusterings, then aligned and shared."""

from __future__ import annotations

import copy

import pytest
import torch
from selflabel_data import Blobs, encoders, single_threaded
from sklearn.metrics import normalized_mutual_info_score as nmi

from otcluster import HeadConfig, SelfLabelTrainer, SinkhornLabeler, TrainerConfig


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


class TwoPartitions(Blobs):
    """Modality ``a`` sees the classes ``y``; modality ``b`` sees another, independent partition
    ``y_b`` of the same samples (the streams disagree on what the clusters are)."""

    def __init__(self, n=240, k=4, **kw):
        super().__init__(n=n, k=k, **kw)
        g = torch.Generator().manual_seed(99)
        self.y_b = torch.randperm(n, generator=g) % k
        self.x["b"] = 2.0 * torch.randn(k, self.d, generator=g)[self.y_b] \
            + 0.4 * torch.randn(n, self.d, generator=g)


def test_each_stream_learns_its_own_clusters_then_the_labels_are_shared():
    data = TwoPartitions()
    assert nmi(data.y, data.y_b) < 0.05
    cfg = _config(epochs=6, n_clusterings=6, stream_warmup=0.5)
    trainer = SelfLabelTrainer(encoders(), data, cfg, ground_truth=data.y)
    seen = {}

    def on_record(rec):
        if rec["event"] == "clustering" and rec["stream_warmup"]:
            seen[rec["clustering"]] = trainer.stream_labels_.clone()

    history = trainer.fit(on_record=on_record)
    assert trainer.stream_clusterings_ == 3
    recs = [r for r in history if r["event"] == "clustering"]
    assert [r["stream_warmup"] for r in recs] == [True] * 3 + [False] * 3
    assert all("stream_nmi" in r for r in recs[:3]) and not any("stream_nmi" in r for r in recs[3:])
    # the last clustering of the warm-up: each stream's labels follow its own partition
    last = seen[2]
    assert last.shape == (2, 2, 240)
    for h in range(2):
        own_a, other_a = nmi(data.y, last[0, h]), nmi(data.y_b, last[0, h])
        own_b, other_b = nmi(data.y_b, last[1, h]), nmi(data.y, last[1, h])
        assert own_a > 0.5 > 0.1 > other_a and own_b > 0.5 > 0.1 > other_b
    assert recs[2]["stream_nmi"]["b"] < 0.1 < 0.5 < recs[2]["stream_nmi"]["a"]
    # the heads are aligned once more, right before the first shared clustering
    kinds = [(r["event"], r.get("after_stream_warmup", r.get("stream_warmup"))) for r in history
             if r["event"] in ("align", "clustering")]
    assert kinds == [("align", None), *[("clustering", True)] * 3, ("align", True),
                     *[("clustering", False)] * 3]
    assert trainer.stream_labels_ is None and trainer.labels_.shape == (2, 240)


def test_warmup_labels_are_the_transport_labels_of_each_stream_alone():
    data = Blobs(n=200, k=4, augment=0.0)  # no augmentation: the pass is reproducible
    cfg = _config(stream_warmup=0.4, prior="gaussian", sinkhorn_tol=1e-6, sinkhorn_max_iter=5000)
    trainer = SelfLabelTrainer(encoders(), data, cfg)
    trainer._align()
    trainer._cluster()
    x = {m: torch.stack([data[i][m] for i in range(len(data))]) for m in ("a", "b")}
    model = trainer.model.eval()
    with torch.no_grad():
        lp = {m: torch.log_softmax(model.heads[m](model.encoders[m](x[m])), -1) for m in x}
        mean = model.mean_log_probs({m: model.encoders[m](x[m]) for m in x})
    for i, m in enumerate(("a", "b")):
        ref = SinkhornLabeler(4, prior="gaussian", random_state=cfg.seed, lam=cfg.lam, n_heads=2,
                              tol=1e-6, max_iter=5000).fit(lp[m], heads=[0, 1])
        agree = (ref.labels_.reshape(2, -1) == trainer.stream_labels_[i]).double().mean()
        assert agree >= 0.99, (m, agree)
    shared = SinkhornLabeler(4, prior="gaussian", random_state=cfg.seed, lam=cfg.lam, n_heads=2,
                             tol=1e-6, max_iter=5000).fit(mean, heads=[0, 1]).labels_.reshape(2, -1)
    assert not torch.equal(shared, trainer.stream_labels_[1])
    assert torch.equal(trainer.labels_, trainer.stream_labels_[0])


def test_memory_bounded_warmup_gives_the_dense_labels():
    data = Blobs(n=300, k=5, augment=0.0)
    kw = dict(heads=HeadConfig(n_heads=3, n_clusters=5, hidden_dim=16, dropout=0.3),
              prior="gaussian", sinkhorn_tol=1e-4, stream_warmup=0.4)
    enc = encoders()
    a = SelfLabelTrainer(enc, data, _config(**kw))
    b = SelfLabelTrainer(copy.deepcopy(enc), data, _config(memory_bounded=True, **kw))
    b.model.load_state_dict(a.model.state_dict())
    a._cluster(), b._cluster()
    agree = (a.stream_labels_ == b.stream_labels_).double().mean().item()
    assert a.stream_labels_.shape == (2, 3, 300) and agree >= 0.997, agree


class _Crash(Exception):
    pass


class CrashAfterEpoch2(SelfLabelTrainer):
    def save_checkpoint(self, path):
        super().save_checkpoint(path)
        if self.epoch_ == 2:
            raise _Crash


def test_a_run_stopped_in_the_warmup_resumes_exactly(tmp_path):
    data = Blobs(n=150, k=4)
    cfg = dict(heads=HeadConfig(n_heads=2, n_clusters=4, hidden_dim=8, dropout=0.3),
               n_clusterings=6, prior="gaussian", stream_warmup=0.7)  # 4 of 6: past epoch 2
    full = SelfLabelTrainer(encoders(seed=5), data, _config(checkpoint_dir=str(tmp_path / "f"), **cfg))
    full.fit()
    crashing = CrashAfterEpoch2(encoders(seed=5), data,
                                _config(checkpoint_dir=str(tmp_path / "r"), **cfg))
    with pytest.raises(_Crash):
        crashing.fit()
    state = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert state["stream_labels"] is not None and state["stream_labels"].shape == (2, 2, 150)
    resumed = SelfLabelTrainer(encoders(seed=9), data,
                               _config(checkpoint_dir=str(tmp_path / "r"), **cfg))
    resumed.fit()
    assert torch.equal(resumed.labels_, full.labels_)
    for name, p in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], p, rtol=0, atol=0)


def test_off_by_default_with_one_modality_and_checked():
    data = Blobs(n=64, k=4, modalities=("a",))
    one = SelfLabelTrainer(encoders(("a",)), data, _config(epochs=1, stream_warmup=0.5))
    history = one.fit()
    assert one.stream_clusterings_ == 0 and one.stream_labels_ is None
    assert all("stream_warmup" not in r for r in history)
    plain = SelfLabelTrainer(encoders(), Blobs(n=64, k=4), _config(epochs=1))
    assert plain.stream_clusterings_ == 0
    assert all("stream_warmup" not in r for r in plain.fit())
    for bad in (1.0, -0.1, "half"):
        with pytest.raises(ValueError, match="stream_warmup"):
            _config(stream_warmup=bad).validate()


def test_in_the_warmup_each_stream_is_trained_on_its_own_labels():
    data = TwoPartitions(n=64, augment=0.0)
    trainer = SelfLabelTrainer(encoders(), data, _config(stream_warmup=0.5))
    trainer._align()
    trainer._cluster()
    own = trainer.stream_labels_
    assert not torch.equal(own[0], own[1])
    batch = torch.utils.data.default_collate([data[i] for i in range(16)])
    idx = batch["index"]
    with torch.no_grad():
        out = trainer.model({m: batch[m] for m in ("a", "b")})

    def ce(m, target):
        return torch.nn.functional.cross_entropy(out[m].reshape(2 * 16, -1), target.reshape(-1))

    expected = (ce("a", own[0][:, idx]) + ce("b", own[1][:, idx])) / 2
    shared = (ce("a", own[0][:, idx]) + ce("b", own[0][:, idx])) / 2
    loss = trainer._train_step(batch)  # the loss before the step's update
    assert loss == pytest.approx(float(expected), rel=1e-5)
    assert abs(float(shared) - float(expected)) > 1e-3
