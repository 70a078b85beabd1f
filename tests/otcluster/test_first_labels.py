"""``TrainerConfig.init_labels``: the first clustering's labels from balanced k-means of the
untrained encoders' features (``otcluster._train.first_labels``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from selflabel_data import Blobs, encoders, single_threaded
from sklearn.metrics import normalized_mutual_info_score

from otcluster import HeadConfig, OTKMeans, SelfLabelTrainer, TrainerConfig
from otcluster._train.first_labels import kmeans_labels, side_by_side


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    undo = single_threaded()
    yield
    undo()


def _config(**kw):
    base = dict(heads=HeadConfig(n_heads=2, n_clusters=4, hidden_dim=None, dropout=0.0),
                epochs=2, batch_size=32, lr=0.05, warmup_epochs=1, n_clusterings=3,
                prior="gaussian", show_progress=False, init_labels="kmeans")
    base.update(kw)
    return TrainerConfig(**base)


def test_side_by_side_gives_every_modality_unit_norm_whatever_its_scale():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(9, 3, generator=g), torch.randn(9, 5, generator=g)
    x = side_by_side({"a": a, "b": b})
    assert x.shape == (9, 8) and x.dtype == torch.float64
    torch.testing.assert_close(x[:, :3].norm(dim=1), torch.ones(9, dtype=torch.float64))
    torch.testing.assert_close(x[:, 3:].norm(dim=1), torch.ones(9, dtype=torch.float64))
    # a modality 1000x louder (or a wider one) has no more say
    torch.testing.assert_close(side_by_side({"a": 1000 * a, "b": b}), x)


def test_kmeans_labels_are_balanced_kmeans_of_the_features_one_start_per_head():
    data = Blobs(n=120, k=4, augment=0.0)
    feats = {m: data.x[m] for m in ("a", "b")}
    labels = kmeans_labels(feats, 4, 3, seed=2, lam=20.0)
    assert labels.shape == (3, 120) and labels.dtype == torch.int64
    x = side_by_side(feats).numpy()
    for h in range(3):  # the same as OTKMeans with head h's start
        want = OTKMeans(n_clusters=4, lam=20.0, random_state=2 * 7919 + h).fit(x).labels_
        assert np.array_equal(labels[h].numpy(), want)
        assert np.bincount(labels[h].numpy(), minlength=4).tolist() == [30] * 4  # uniform sizes
        assert normalized_mutual_info_score(data.y, labels[h]) > 0.95  # separated blobs found
    with pytest.raises(ValueError, match="at least n_clusters=4 samples, got 3"):
        kmeans_labels({m: f[:3] for m, f in feats.items()}, 4, 1, seed=0, lam=20.0)


@pytest.mark.parametrize("memory_bounded", [False, True])
def test_the_first_clustering_is_kmeans_of_the_untrained_features_and_the_next_are_not(
        memory_bounded):
    data = Blobs(n=160, k=4, augment=0.0)  # no augmentation: every pass reads the same inputs
    trainer = SelfLabelTrainer(encoders(), data, _config(memory_bounded=memory_bounded),
                               ground_truth=data.y)
    want = kmeans_labels(trainer.extract(data), 4, 2, seed=0, lam=20.0)
    first = trainer._cluster()
    assert torch.equal(trainer.labels_, want)
    assert first["n_iter"] == 0 and first["converged"] and first["min_size"] == 40
    # the next clustering is the transport of the heads' log-probabilities, as without the option
    trainer._cluster()
    heads = SelfLabelTrainer(encoders(), data, _config(init_labels="heads",
                                                       memory_bounded=memory_bounded))
    heads._n_clusterings = 1  # past the first clustering: the usual path
    heads._cluster()
    heads._cluster()
    assert torch.equal(trainer.labels_, heads.labels_)


def test_the_default_first_clustering_is_the_heads_transport():
    data = Blobs(n=160, k=4, augment=0.0)
    a = SelfLabelTrainer(encoders(), data, _config(init_labels="heads"))
    b = SelfLabelTrainer(encoders(), data, _config(init_labels="heads"))
    b._n_clusterings = 1  # never first: always the transport
    a._cluster()
    b._cluster()
    assert torch.equal(a.labels_, b.labels_)
    km = kmeans_labels(a.extract(data), 4, 2, seed=0, lam=20.0)
    assert not torch.equal(a.labels_, km)


def test_where_the_untrained_features_group_the_data_kmeans_starts_better_than_the_heads():
    """What the option is for (encoders whose features already group the data, e.g. pretrained
    ones): on the blobs, the first clustering finds the classes; the random heads' does not."""
    data = Blobs(n=240, k=4, augment=0.0)
    first = {}
    for init in ("heads", "kmeans"):
        trainer = SelfLabelTrainer(encoders(), data, _config(init_labels=init, prior="uniform"),
                                   ground_truth=data.y)
        first[init] = trainer._cluster()["nmi"]
    assert first["kmeans"] > 0.95 and first["heads"] < first["kmeans"] - 0.1, first


def test_bad_init_labels_is_named():
    with pytest.raises(ValueError, match=r"TrainerConfig.init_labels must be one of \('heads', "
                                         r"'kmeans'\), got 'random'"):
        _config(init_labels="random").validate()
