"""Tests of sharding and of distributed clustering / training (2 gloo processes on the CPU)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from selflabel_data import Blobs, encoders, single_threaded
from sklearn.metrics import normalized_mutual_info_score

from otcluster import (
    HeadConfig,
    SelfLabelTrainer,
    TrainerConfig,
    make_prior,
    sinkhorn,
    sinkhorn_features,
)
from otcluster._distributed import (
    all_reduce_sum,
    broadcast_from_first,
    cluster_shard,
    epoch_shard,
    gather_labels,
    group_rank_size,
)
from otcluster._train.veto import artefact_clusters
from otcluster._train.weighting import stability_kappas

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with gloo")
WORLD = 2


# -- single-process pieces ---------------------------------------------------------------------

@pytest.mark.parametrize("n,world", [(10, 3), (7, 2), (1001, 4), (5, 5)])
def test_cluster_shards_cover_every_sample_once(n, world):
    shards = [cluster_shard(n, r, world) for r in range(world)]
    assert sorted(torch.cat(shards).tolist()) == list(range(n))
    assert max(s.numel() for s in shards) - min(s.numel() for s in shards) <= 1


@pytest.mark.parametrize("n,world", [(10, 3), (7, 2), (64, 4)])
def test_epoch_shards_are_equal_sized_and_cover_every_sample(n, world):
    shards = [epoch_shard(n, 3, 0, r, world) for r in range(world)]
    assert len({s.numel() for s in shards}) == 1 and shards[0].numel() == -(-n // world)
    assert set(torch.cat(shards).tolist()) == set(range(n))
    assert torch.equal(epoch_shard(n, 3, 0, 1, world), shards[1])  # deterministic
    assert not torch.equal(epoch_shard(n, 4, 0, 0, world), shards[0]) or n < 8  # reshuffled


def test_single_process_helpers():
    assert group_rank_size(None) == (0, 1)
    t = torch.arange(3.0)
    assert all_reduce_sum(t, None) is t and broadcast_from_first(t, None) is t
    labels = gather_labels(torch.tensor([[5, 6, 7]]), torch.tensor([2, 0, 1]), 3, None)
    assert labels.tolist() == [[6, 7, 5]]
    with pytest.raises(ValueError, match=r"permutation of 0\.\.2: missing \[2\], repeated \[1\]"):
        gather_labels(torch.tensor([[5, 6, 7]]), torch.tensor([1, 0, 1]), 3, None)
    with pytest.raises(ValueError, match=r"must lie in 0\.\.2"):
        gather_labels(torch.tensor([[5, 6, 7]]), torch.tensor([1, 0, 3]), 3, None)


# -- two processes -----------------------------------------------------------------------------

def _problem():
    g = torch.Generator().manual_seed(0)
    n, h, k, d = 1001, 3, 7, 5
    x = (2.0 * torch.randn(h, n, k, generator=g)).log_softmax(-1)
    feats = torch.randn(n, d, generator=g)
    weight = torch.randn(h, k, d, generator=g)
    bias = torch.randn(h, k, generator=g)
    return x, feats, weight, bias, make_prior("gaussian", k, n_heads=h, seed=0)


def _sinkhorn_part(rank: int, out: str) -> None:
    group = dist.group.WORLD
    x, feats, weight, bias, prior = _problem()
    pos = cluster_shard(x.shape[1], rank, WORLD)  # uneven: 501 and 500 rows
    res = sinkhorn(x[:, pos], lam=20.0, prior=prior, process_group=group)
    res_f = sinkhorn_features(feats[pos], weight, bias, lam=20.0, prior=prior, block_rows=128,
                              process_group=group)
    torch.save({
        "labels": gather_labels(res.labels, pos, x.shape[1], group),
        "labels_f": gather_labels(res_f.labels, pos, x.shape[1], group),
        "n_iter": (res.n_iter, res_f.n_iter), "log_v": res.log_v,
        "sum": all_reduce_sum(torch.tensor([rank + 1.0]), group),
        "first": broadcast_from_first(torch.tensor([rank + 10]), group),
    }, Path(out) / f"sinkhorn{rank}.pt")


@pytest.mark.slow
def test_sharded_sinkhorn_gives_the_single_process_labels(two_processes):
    outs = [torch.load(two_processes / f"sinkhorn{r}.pt") for r in range(WORLD)]
    x, feats, weight, bias, prior = _problem()
    single = sinkhorn(x, lam=20.0, prior=prior)
    single_f = sinkhorn_features(feats, weight, bias, lam=20.0, prior=prior, block_rows=128)
    for out in outs:
        assert out["sum"].item() == 3.0 and out["first"].item() == 10
        assert out["labels"].shape == (3, 1001)
        assert out["n_iter"] == (single.n_iter, single_f.n_iter)
        torch.testing.assert_close(out["log_v"], single.log_v, rtol=0, atol=1e-3)
        # the same problem; only the order of float64 sums differs
        assert (out["labels"] == single.labels).double().mean() >= 0.999
        assert (out["labels_f"] == single_f.labels).double().mean() >= 0.999
    assert torch.equal(outs[0]["labels"], outs[1]["labels"])


def _train_part(rank: int, out: str) -> None:
    data = Blobs(n=201, k=4)
    cfg = TrainerConfig(
        heads=HeadConfig(n_heads=2, n_clusters=4, hidden_dim=8, dropout=0.3), epochs=3,
        batch_size=16, lr=0.05, warmup_epochs=1, n_clusterings=4, prior="gaussian",
        modality_weights="information", show_progress=False,
        checkpoint_dir=str(Path(out) / "ckpt"))
    trainer = SelfLabelTrainer(encoders(seed=rank), data, cfg, process_group=dist.group.WORLD,
                               ground_truth=data.y)
    history = trainer.fit()
    # the memory-bounded clustering of the trained model, sharded as well
    trainer.config.memory_bounded = True
    trainer._cluster()
    # the stability weights' kappas: counts of both shards summed, so the same on each rank
    kappas = stability_kappas(trainer.model, trainer.passes, data, cluster_shard(201, rank, WORLD),
                              201, 4, dist.group.WORLD)
    # on a capped subset (the ranks' shares of one subset), and with one rank's share empty
    capped = stability_kappas(trainer.model, trainer.passes, data, cluster_shard(201, rank, WORLD),
                              201, 4, dist.group.WORLD, max_samples=60, seed=3)
    one = stability_kappas(trainer.model, trainer.passes, data, cluster_shard(201, rank, WORLD),
                           201, 4, dist.group.WORLD, max_samples=1, seed=3)
    history = list(history)
    # the veto's counts are pooled over the ranks: the same flags as one process on all samples
    # (modality 1 follows modality 0's clusters 0-2 and scatters its clusters 3-5)
    a = torch.randint(0, 6, (2, 2, 201), generator=torch.Generator().manual_seed(5))
    a[1] = torch.where(a[0] < 3, a[0], a[1])
    flags = artefact_clusters(a[..., cluster_shard(201, rank, WORLD)], 6, 2.0, dist.group.WORLD)
    vetoed = []
    trainer.config.modality_veto = 3.0
    for memory_bounded in (False, True):
        trainer.config.memory_bounded = memory_bounded
        vetoed.append((trainer._cluster()["vetoed"], trainer.labels_.clone()))
    # k-means first labels: every rank's features gathered, the first rank's labels everywhere
    trainer.config.init_labels = "kmeans"
    local, index, _, _ = trainer.clusterer(cluster_shard(201, rank, WORLD), [], False, first=True)
    kmeans = gather_labels(local, index, 201, dist.group.WORLD)
    torch.save({"labels": trainer.labels_, "history": history, "kappas": kappas, "kmeans": kmeans,
                "capped": capped, "one": one, "flags": flags, "argmax": a, "vetoed": vetoed,
                "params": {k: v.clone() for k, v in trainer.model.state_dict().items()}},
               Path(out) / f"train{rank}.pt")


def _worker(rank: int, store: str, out: str) -> None:
    single_threaded()
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        _sinkhorn_part(rank, out)
        _train_part(rank, out)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """One run of 2 gloo processes (process start-up dominates): a sharded solve, then training."""
    out = tmp_path_factory.mktemp("dist")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(str(out / "store"), str(out)), nprocs=WORLD)
    return out


@pytest.mark.slow
def test_two_process_training_agrees_on_labels(two_processes):
    a, b = (torch.load(two_processes / f"train{r}.pt") for r in range(WORLD))
    assert a["labels"].shape == (2, 201) and torch.equal(a["labels"], b["labels"])
    for name, p in a["params"].items():  # DDP kept the replicas identical
        torch.testing.assert_close(b["params"][name], p)
    clusterings = [r for r in a["history"] if r["event"] == "clustering"]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a["history"]]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b["history"]]
    assert clusterings[-1]["nmi"] > 0.8
    # the information weights come from cross-entropies summed over both ranks: the same on each
    weights = clusterings[-1]["modality_weights"]
    assert weights != {"a": 0.5, "b": 0.5} and abs(sum(weights.values()) - 1) < 1e-6
    assert a["kappas"] == b["kappas"] and len(a["kappas"]) == 2
    assert a["capped"] == b["capped"] and a["capped"][0] > 0.3 and a["one"] == b["one"]
    assert all(-1 <= k <= 1 for k in a["kappas"]) and a["kappas"][0] > 0.5  # a trained, stable model
    assert [r["modality"] for r in a["history"] if r["event"] == "align"] == ["b"]
    assert a["history"][-1]["event"] == "clustering" and a["history"][-1]["memory_bounded"]
    flags = artefact_clusters(a["argmax"], 6, 2.0)
    assert torch.equal(a["flags"], flags) and torch.equal(b["flags"], flags)
    assert flags[0, :, 3:].all() and not flags[0, :, :3].any()
    for (va, la), (vb, lb) in zip(a["vetoed"], b["vetoed"]):  # dense, then memory-bounded
        assert va == vb and torch.equal(la, lb) and set(va) == {"a", "b"}
    assert torch.equal(a["kmeans"], b["kmeans"]) and a["kmeans"].shape == (2, 201)
    for head in a["kmeans"]:  # balanced, and the trained features' clusters are the blobs
        assert sorted(torch.bincount(head, minlength=4).tolist()) == [50, 50, 50, 51]
        assert normalized_mutual_info_score(Blobs(n=201, k=4).y, head) > 0.8
    state = torch.load(two_processes / "ckpt" / "last.pt", weights_only=True)
    assert state["epoch"] == 3 and state["world_size"] == 2 and len(state["rng"]) == 2
