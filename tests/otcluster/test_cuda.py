"""The core on a CUDA device: training with mixed precision, checkpoints that cross devices, and
the solver's options and the labeler against the same problem on the CPU.

Every test here is marked ``cuda`` and skipped where there is no device (CI); they run on a lent
GPU machine through ``benchmarks/gpu_check.sh``. The solver tests elsewhere cover the plain
solve on CUDA (``test_sinkhorn.py``), online codes (``test_codes.py``), alignment
(``test_align.py``) and k-means (``test_otkmeans.py``).
"""

from __future__ import annotations

import copy

import pytest
import torch
from selflabel_data import Blobs, encoders

from otcluster import (
    HeadConfig,
    SelfLabelModel,
    SelfLabelTrainer,
    SinkhornLabeler,
    TrainerConfig,
    make_prior,
    nmi_score,
    sinkhorn,
)

pytestmark = pytest.mark.cuda


def config(**kw):
    heads = kw.pop("heads", HeadConfig(n_heads=3, n_clusters=4, hidden_dim=16, dropout=0.0))
    base = dict(heads=heads, epochs=4, batch_size=32, lr=0.05, warmup_epochs=1, n_clusterings=5,
                prior="uniform", show_progress=False, amp=True)
    base.update(kw)
    return TrainerConfig(**base)


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.cpu() == b.cpu()).double().mean())


def log_probs(n: int, k: int, seed: int, heads: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (n, k) if heads is None else (heads, n, k)
    return (2.0 * torch.randn(*shape, generator=g)).log_softmax(-1)


@pytest.mark.parametrize("memory_bounded", [False, True])
def test_trainer_learns_on_cuda_with_mixed_precision(memory_bounded, cuda_device):
    data = Blobs(n=240, k=4)
    trainer = SelfLabelTrainer(encoders(), data, config(memory_bounded=memory_bounded),
                               device=cuda_device, ground_truth=data.y)
    assert trainer._amp and trainer.scaler.is_enabled()
    history = trainer.fit()
    assert all(p.device.type == "cuda" for p in trainer.model.parameters())
    last = [r for r in history if r["event"] == "clustering"][-1]
    assert last["nmi"] > 0.9 and last["converged"]
    losses = [r["loss"] for r in history if r["event"] == "epoch"]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert trainer.labels_.shape == (3, 240)
    assert nmi_score(data.y, trainer.labels_[0].cpu()) > 0.9


def test_cuda_checkpoint_resumes_and_loads_on_the_cpu(tmp_path, cuda_device):
    """A checkpoint written on CUDA (with the gradient scaler's state) resumes on CUDA and serves
    inference on a machine without one."""
    data = Blobs(n=120, k=4)
    whole = SelfLabelTrainer(encoders(), data, config(epochs=2), device=cuda_device)
    whole.fit()
    cut = SelfLabelTrainer(encoders(), data, config(epochs=1, checkpoint_dir=str(tmp_path)),
                           device=cuda_device)
    cut.fit()
    resumed = SelfLabelTrainer(encoders(), data, config(epochs=2, checkpoint_dir=str(tmp_path)),
                               device=cuda_device)
    history = resumed.fit(resume=True)
    assert [r["epoch"] for r in history if r["event"] == "epoch"] == [1, 2]
    assert resumed.labels_.shape == whole.labels_.shape

    test = Blobs(n=120, k=4, augment=0.0)
    model = SelfLabelModel.from_checkpoint(tmp_path, encoders(seed=7))
    assert all(p.device.type == "cpu" for p in model.parameters())
    labels, conf = model.predict(test)
    want, want_conf = resumed.predict(test)
    assert agreement(labels, want) >= 0.98  # fp32 on two devices: near ties may flip
    torch.testing.assert_close(conf, want_conf.cpu(), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("prior,options", [
    ("gaussian", {}), ("zipf", {}), ("uniform", dict(tau=1.0)), ("uniform", dict(scaling_stages=3)),
], ids=["gaussian", "zipf", "relaxed", "scaling"])
def test_solver_options_on_cuda_match_the_cpu(prior, options, cuda_device):
    x = log_probs(4000, 16, 0)
    k = x.shape[1]
    p = make_prior(prior, k, seed=0)
    cpu = sinkhorn(x, prior=p, tol=1e-5, **options)
    gpu = sinkhorn(x.to(cuda_device), prior=p.to(cuda_device), tol=1e-5, **options)
    assert gpu.labels.device.type == "cuda" and bool(gpu.converged)
    assert agreement(gpu.labels, cpu.labels) >= 0.995
    torch.testing.assert_close(gpu.log_v.cpu(), cpu.log_v, atol=1e-3, rtol=1e-3)


def test_flat_plan_rounding_respects_the_prior_on_cuda(cuda_device):
    x = torch.zeros(600, 3, device=cuda_device)  # every row identical: the plan does not decide
    p = torch.tensor([0.4, 0.35, 0.25], device=cuda_device)
    res = sinkhorn(x, prior=p)
    assert res.labels.device.type == "cuda"
    counts = torch.bincount(res.labels, minlength=3).cpu().double()
    assert float((counts - 600 * p.cpu().double()).abs().max()) < 1.0 + 1e-9, counts


def test_labeler_multi_head_views_on_cuda_match_the_cpu(cuda_device):
    views = torch.stack([log_probs(3000, 10, s, heads=4) for s in (1, 2)])  # (views, h, N, K)
    lab = dict(n_clusters=10, n_heads=4, prior="gaussian", random_state=0, dtype="float64")
    cpu = SinkhornLabeler(**lab).fit(views.mean(0))
    gpu = SinkhornLabeler(**lab).fit(views.mean(0).to(cuda_device))
    assert gpu.labels_.device.type == "cuda" and gpu.labels_.shape == (4, 3000)
    assert agreement(gpu.labels_, cpu.labels_) >= 0.999
    torch.testing.assert_close(gpu.prior_.cpu(), cpu.prior_)


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "amp"])
@pytest.mark.parametrize("memory_bounded", [False, True], ids=["dense", "memory-bounded"])
def test_vetoed_clustering_on_cuda_matches_the_cpu(memory_bounded, amp, cuda_device):
    """The per-clip veto (dense: M log-probability buffers; memory-bounded: scaled feature
    blocks) on CUDA, in float32 and under float16 autocast, against the same model clustering
    on the CPU."""
    data = Blobs(n=300, k=5, augment=0.0)
    data.x["b"] = torch.randn(300, 6, generator=torch.Generator().manual_seed(1))  # "b" is noise
    cfg = config(heads=HeadConfig(n_heads=3, n_clusters=5, hidden_dim=None, dropout=0.0),
                 modality_veto=3.0, modality_weights={"a": 1, "b": 3},
                 memory_bounded=memory_bounded, amp=amp)
    cpu = SelfLabelTrainer(encoders(), data, copy.deepcopy(cfg))
    gpu = SelfLabelTrainer(encoders(), data, copy.deepcopy(cfg), device=cuda_device)
    gpu.model.load_state_dict(cpu.model.state_dict())
    rc, rg = cpu._cluster(), gpu._cluster()
    assert rg["memory_bounded"] == memory_bounded
    assert sum(rc["vetoed"].values()) > 0
    for m in ("a", "b"):
        assert rg["vetoed"][m] == pytest.approx(rc["vetoed"][m], abs=0.05 if amp else 0.02)
    assert agreement(gpu.labels_, cpu.labels_) >= (0.95 if amp else 0.98)
