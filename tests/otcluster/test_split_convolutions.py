"""``split_convolutions`` (the trainer's ``step_threads``): a training step's convolutions on more
threads (batch chunks in the forward pass, the input and weight gradients side by side) with
every output and gradient bit for bit the one a single thread computes."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from selflabel_data import Blobs, single_threaded
from torch import nn

from otcluster import HeadConfig, SelfLabelTrainer, TrainerConfig, _threads, portable_kernels
from otcluster._threads import limit_threads, split_convolutions


def _video_net(bias: bool) -> nn.Module:
    """(2+1)D-style: a strided spatial conv, a temporal conv, a strided 1x1x1 shortcut, a 2-d conv."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.spatial = nn.Conv3d(3, 6, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=bias)
            self.bn = nn.BatchNorm3d(6)
            self.temporal = nn.Conv3d(6, 8, (3, 1, 1), padding=(1, 0, 0), bias=bias)
            self.shortcut = nn.Conv3d(6, 8, 1, stride=2, bias=bias)
            self.frame = nn.Conv2d(8, 4, 3, padding=1, bias=bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.bn(self.spatial(x)))
            y = self.temporal(h)[:, :, ::2, ::2, ::2] + self.shortcut(h)
            frames = y.transpose(1, 2).flatten(0, 1)  # (B * T, C, H, W)
            return self.frame(frames).square().mean()

    return Net()


def _step(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    loss = net(x)
    loss.backward()
    grads = [p.grad.clone() for p in net.parameters()]
    if x.requires_grad:
        grads.append(x.grad.clone())
    return loss.detach(), grads


@pytest.fixture
def spy(monkeypatch):
    """Counts the split convolutions and notes the threads their parts ran on."""
    seen = {"split": 0, "threads": set()}
    apply = _threads._SplitConvolution.apply
    no_grad = _threads._no_grad

    def counted(*args):
        seen["split"] += 1
        return apply(*args)

    def noted(fn, *args):
        seen["threads"].add(threading.current_thread().name)
        return no_grad(fn, *args)

    monkeypatch.setattr(_threads._SplitConvolution, "apply", counted)
    monkeypatch.setattr(_threads, "_no_grad", noted)
    return seen


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("input_grad", [False, True])
def test_outputs_and_gradients_are_those_of_one_thread_bit_for_bit(spy, threads, bias, input_grad):
    net = _video_net(bias)
    twin = copy.deepcopy(net)
    x = torch.randn(5, 3, 4, 10, 10, generator=torch.Generator().manual_seed(1))
    x1, x2 = x.clone().requires_grad_(input_grad), x.clone().requires_grad_(input_grad)
    with portable_kernels(), limit_threads(1):
        loss1, grads1 = _step(net, x1)
        assert spy["split"] == 0
        with split_convolutions(threads):
            loss2, grads2 = _step(twin, x2)
    assert spy["split"] == 4  # all four convolutions, a batch of 5 in up to 3 chunks
    assert spy["threads"] and all(n.startswith("otcluster-convolutions") for n in spy["threads"])
    assert torch.equal(loss1, loss2)
    assert len(grads1) == len(grads2) == len(list(net.parameters())) + input_grad
    assert all(torch.equal(a, b) for a, b in zip(grads1, grads2))
    assert all(g.abs().sum() > 0 for g in grads2)  # every gradient really computed


def test_several_steps_of_sgd_end_with_the_same_weights(spy):
    nets = [_video_net(False), _video_net(False)]
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(4, 3, 4, 8, 8, generator=g) for _ in range(4)]
    weights = []
    with portable_kernels(), limit_threads(1):
        for net, threads in zip(nets, (1, 2)):
            opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
            with split_convolutions(threads):
                for x in batches:
                    opt.zero_grad()
                    net(x).backward()
                    opt.step()
            weights.append(net.state_dict())
    assert spy["split"] == 4 * len(batches)
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_what_it_leaves_to_torch(spy):
    conv = nn.Conv2d(2, 3, 3)
    x = torch.randn(4, 2, 8, 8)
    with portable_kernels(), limit_threads(1):
        with split_convolutions(1):  # one thread: nothing to split
            conv(x).sum().backward()
        with split_convolutions(2):
            with torch.no_grad():  # inference: map_batches' business
                conv(x)
            nn.functional.conv2d(x, conv.weight, padding="same").sum().backward()  # a string
    assert spy["split"] == 0
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:  # torch on 2 threads: its own kernels already use the cores
        with portable_kernels(), split_convolutions(2):
            conv(x).sum().backward()
    finally:
        torch.set_num_threads(before)
    assert spy["split"] == 0


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
def test_other_back_ends_run_as_usual(spy):
    # oneDNN (torch's default CPU kernels) may round a batch chunk differently: left alone
    conv = nn.Conv2d(2, 3, 3)
    x = torch.randn(4, 2, 8, 8)
    with torch.backends.mkldnn.flags(enabled=True), limit_threads(1), split_convolutions(2):
        conv(x).sum().backward()
    assert spy["split"] == 0


@pytest.mark.skipif(not torch.backends.nnpack.is_available(), reason="needs NNPACK")
def test_a_batch_that_takes_nnpack_is_not_split(spy):
    # from 16 samples torch takes NNPACK for a 2-d convolution, whose floats are not per sample
    conv = nn.Conv2d(2, 3, 3)
    x = torch.randn(16, 2, 8, 8)
    with portable_kernels(), limit_threads(1), split_convolutions(2):
        conv(x).sum().backward()
    assert spy["split"] == 0


def test_bad_threads_are_refused():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            with split_convolutions(bad):
                pass
    with pytest.raises(ValueError, match="step_threads"):
        TrainerConfig(step_threads=0).validate()


class _ConvEncoder(nn.Module):
    """Blobs' 6-d vectors as 1 x 2 x 3 images through a conv, batch norm and a linear layer."""

    feature_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 3 * 4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x.reshape(-1, 1, 2, 3))))
        return self.fc(h.flatten(1))


def test_trainer_step_threads_give_the_same_weights_and_labels(spy):
    undo = single_threaded()
    try:
        runs = []
        for threads in (1, 2):
            torch.manual_seed(0)
            encoders = {"a": _ConvEncoder(), "b": _ConvEncoder()}
            data = Blobs(n=64, k=3, seed=0)
            cfg = TrainerConfig(heads=HeadConfig(n_heads=2, n_clusters=3, hidden_dim=16),
                                epochs=2, batch_size=8, n_clusterings=3, head_groups=1,
                                show_progress=False, seed=0, step_threads=threads)
            with portable_kernels():
                trainer = SelfLabelTrainer(encoders, data, cfg)
                trainer.fit()
            runs.append((trainer.labels_.clone(), trainer.model.state_dict(), spy["split"]))
        (lab1, w1, split1), (lab2, w2, split2) = runs
        assert split1 == 0 and split2 == 2 * 2 * 8  # 2 encoders x 2 epochs x 8 steps
        assert torch.equal(lab1, lab2)
        assert all(torch.equal(w1[k], w2[k]) for k in w1)
    finally:
        undo()
