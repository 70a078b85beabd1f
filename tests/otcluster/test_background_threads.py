"""Threads that change no result: ``map_batches`` (inference batches computed at once on worker
threads: the outputs of a sequential pass bit for bit, in order, without gradients; the trainer's
``eval_threads``) and ``Prefetch`` (the next training batch loaded during the backward pass: the
random numbers drawn in the same order; the trainer's ``prefetch``)."""

from __future__ import annotations

import threading

import pytest
import torch
from selflabel_data import Blobs, encoders, single_threaded
from torch import nn

from otcluster import HeadConfig, SelfLabelTrainer, TrainerConfig
from otcluster._threads import limit_threads, map_batches
from otcluster._train.data import Prefetch


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(3, 8, (1, 3, 3)), nn.BatchNorm3d(8), nn.ReLU(),
                         nn.Conv3d(8, 8, (3, 1, 1)), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                         nn.Linear(8, 5)).eval()


def _batches(n: int = 9) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(4, 3, 4, 12, 12, generator=g) for _ in range(n)]


@pytest.mark.parametrize("threads", [2, 3])
def test_outputs_are_bit_identical_to_a_sequential_pass_and_in_order(threads):
    net, batches = _net(), _batches()
    with limit_threads(1):
        seq = list(map_batches(net, batches, 1))
        par = list(map_batches(net, batches, threads))
    assert len(par) == len(batches)
    assert all(torch.equal(a, b) for a, b in zip(seq, par))
    assert not any(torch.equal(seq[0], s) for s in seq[1:])  # order matters: outputs differ
    assert all(not out.requires_grad for out in par)  # no graph kept in the workers either


def test_batches_run_on_worker_threads_only_with_one_torch_thread():
    def where(_: int) -> str:
        return threading.current_thread().name

    with limit_threads(1):
        names = set(map_batches(where, range(8), 2))
    assert all(n.startswith("otcluster-batches") for n in names)
    assert len(names) <= 2
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:  # torch on 2 threads: sequential, in this thread (workers would compete for the cores)
        assert set(map_batches(where, range(4), 2)) == {threading.current_thread().name}
    finally:
        torch.set_num_threads(before)


def test_an_error_in_a_batch_reaches_the_caller_and_bad_threads_are_refused():
    def fail_on_3(x: int) -> int:
        if x == 3:
            raise RuntimeError("batch 3 is bad")
        return x

    with limit_threads(1), pytest.raises(RuntimeError, match="batch 3 is bad"):
        list(map_batches(fail_on_3, range(6), 2))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            list(map_batches(fail_on_3, range(2), bad))


def test_stopping_early_reads_and_computes_at_most_threads_batches():
    read, calls = [], []

    def source():
        for i in range(100):
            read.append(i)
            yield i

    with limit_threads(1):
        it = map_batches(calls.append, source(), 2)
        next(it)  # batches 0 and 1 submitted, 0's result returned
        it.close()  # batch 1 cancelled unless already running; nothing more is read
    assert read == [0, 1]
    assert 1 <= len(calls) <= 2


def test_trainer_eval_threads_give_the_same_run():
    undo = single_threaded()
    try:
        runs = []
        for threads in (1, 2):
            data = Blobs(n=96, k=3, seed=0)
            cfg = TrainerConfig(heads=HeadConfig(n_heads=2, n_clusters=3, hidden_dim=16),
                                epochs=2, batch_size=16, eval_batch_size=8, n_clusterings=3,
                                head_groups=1, show_progress=False, seed=0, eval_threads=threads)
            trainer = SelfLabelTrainer(encoders(), data, cfg)
            trainer.fit()
            runs.append((trainer.labels_.clone(), trainer.extract(data)))
        assert torch.equal(runs[0][0], runs[1][0])
        assert all(torch.equal(runs[0][1][m], runs[1][1][m]) for m in runs[0][1])
    finally:
        undo()
    with pytest.raises(ValueError, match="eval_threads"):
        TrainerConfig(eval_threads=0).validate()


class _Recorded(Blobs):
    """Blobs (fresh noise from the global generator on every read) noting the loading threads."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.threads: set[str] = set()

    def __getitem__(self, i):
        self.threads.add(threading.current_thread().name)
        return super().__getitem__(i)


def test_prefetch_gives_the_same_weights_and_labels_and_loads_in_the_background():
    # augmentations (Blobs' noise) and dropout (the heads') both draw from the global generator:
    # the prefetched run must draw them in the same order to end with the same weights
    undo = single_threaded()
    try:
        runs = []
        for prefetch in (False, True):
            data = _Recorded(n=96, k=3, seed=0)
            cfg = TrainerConfig(heads=HeadConfig(n_heads=2, n_clusters=3, hidden_dim=16,
                                                 dropout=0.3),
                                epochs=3, batch_size=8, n_clusterings=4, head_groups=1,
                                show_progress=False, seed=0, prefetch=prefetch)
            trainer = SelfLabelTrainer(encoders(), data, cfg)
            trainer.fit()
            runs.append((trainer.labels_.clone(), trainer.model.state_dict(), data.threads))
        (lab0, w0, t0), (lab1, w1, t1) = runs
        assert torch.equal(lab0, lab1)
        assert all(torch.equal(w0[k], w1[k]) for k in w0)
        assert not any(n.startswith("otcluster-prefetch") for n in t0)
        assert any(n.startswith("otcluster-prefetch") for n in t1)
    finally:
        undo()


def test_prefetch_yields_every_batch_in_order_and_is_off_on_several_torch_threads():
    with limit_threads(1), Prefetch(range(5)) as batches:
        out = []
        for b in batches:
            out.append(b)
            batches.start()
            batches.start()  # once per batch: a second call does not skip one
    assert out == [0, 1, 2, 3, 4]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        off = Prefetch(iter([threading.current_thread().name]))
        off.start()
        assert off._pool is None and list(off) == [threading.current_thread().name]
    finally:
        torch.set_num_threads(before)
