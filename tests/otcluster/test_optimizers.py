"""Tests of the per-modality optimisers (``TrainerConfig.optimizer`` / ``lr`` as dicts)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from otcluster import HeadConfig
from otcluster._heads import MultiHead
from otcluster._schedule import ChainedOptimizer, LinearWarmup, learning_rates, modality_optimizer
from otcluster._train.model import SelfLabelModel

MOMENTUM, DECAY = 0.9, 1e-4


def _model(seed=0):
    torch.manual_seed(seed)
    cfg = HeadConfig(n_heads=2, n_clusters=3, hidden_dim=None, dropout=0.0)
    enc = {"a": nn.Linear(4, 6), "b": nn.Linear(5, 6)}
    return SelfLabelModel(enc, {m: MultiHead(6, cfg) for m in enc})


def _batches(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [({"a": torch.randn(8, 4, generator=g), "b": torch.randn(8, 5, generator=g)},
             torch.randint(0, 3, (16,), generator=g)) for _ in range(n)]


def _loss(model, batch):
    x, y = batch
    out = model(x)
    return sum(nn.functional.cross_entropy(out[m].reshape(16, 3), y) for m in ("a", "b"))


def _train(model, optimizers, batches):
    """Steps with ``optimizers``, each behind its own linear warm-up over 3 steps."""
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, LinearWarmup(3)) for o in optimizers]
    lrs = []
    for batch in batches:
        for o in optimizers:
            o.zero_grad(set_to_none=True)
        _loss(model, batch).backward()
        for o, s in zip(optimizers, schedulers):
            o.step()
            s.step()
        lrs.append([g["lr"] for o in optimizers for g in o.param_groups])
    return lrs


def _params(model, m):
    return [*model.encoders[m].parameters(), *model.heads[m].parameters()]


def test_each_modality_steps_as_its_own_optimiser_would():
    model = _model()
    reference = copy.deepcopy(model)
    chained = modality_optimizer(model, {"a": "adamw", "b": "sgd"}, {"a": 1e-3, "b": 0.05},
                                 MOMENTUM, DECAY)
    assert isinstance(chained, ChainedOptimizer)
    assert [type(o) for o in chained.optimizers] == [torch.optim.AdamW, torch.optim.SGD]
    own = [torch.optim.AdamW(_params(reference, "a"), lr=1e-3, weight_decay=DECAY),
           torch.optim.SGD(_params(reference, "b"), lr=0.05, momentum=MOMENTUM,
                           weight_decay=DECAY)]
    batches = _batches()
    # one scheduler over the chained optimiser sets both modalities' learning rates
    lrs = _train(model, [chained], batches)
    assert _train(reference, own, batches) == lrs
    assert lrs[0] == pytest.approx([1e-3 * 2 / 3, 0.05 * 2 / 3]) and lrs[-1] == [1e-3, 0.05]
    assert learning_rates(chained) == {"lr": 1e-3, "lr_per_modality": {"a": 1e-3, "b": 0.05}}
    assert learning_rates(own[1]) == {"lr": 0.05}  # a plain torch optimiser: its first group
    for name, p in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], p)
    assert not torch.equal(model.encoders["a"].weight, _model().encoders["a"].weight)


def test_a_chained_state_dict_resumes_the_same_steps():
    batches = _batches(8)
    full = _model()
    opt = modality_optimizer(full, {"a": "adamw", "b": "sgd"}, {"a": 1e-3, "b": 0.05},
                             MOMENTUM, DECAY)
    _train(full, [opt], batches[:4])
    state, weights = copy.deepcopy(opt.state_dict()), copy.deepcopy(full.state_dict())
    assert len(state["optimizers"]) == 2 and state["optimizers"][0]["state"]  # AdamW moments
    _train(full, [opt], batches[4:])

    resumed = _model(seed=7)  # other weights and a fresh optimiser: the states replace them
    resumed.load_state_dict(weights)
    opt2 = modality_optimizer(resumed, {"a": "adamw", "b": "sgd"}, {"a": 1e-3, "b": 0.05},
                              MOMENTUM, DECAY)
    opt2.load_state_dict(state)
    for g in opt2.param_groups:  # the warm-up is over: the scheduler below starts at full lr
        g["initial_lr"] = g["lr"]
    _train(resumed, [opt2], batches[4:])
    for name, p in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], p)
    with pytest.raises(ValueError, match="state has 1 optimizer states, this one chains 2"):
        opt2.load_state_dict({"optimizers": state["optimizers"][:1]})


def test_one_kind_is_one_torch_optimiser_with_a_group_per_modality():
    model = _model()
    opt = modality_optimizer(model, "sgd", {"a": 0.01, "b": 0.1}, MOMENTUM, DECAY)
    assert type(opt) is torch.optim.SGD
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.1]
    assert [len(g["params"]) for g in opt.param_groups] == [len(_params(model, m)) for m in "ab"]
    # a dict of one kind with one lr is the paper's single group, as the plain name is
    same = modality_optimizer(model, {"a": "adamw", "b": "adamw"}, 1e-3, MOMENTUM, DECAY)
    assert type(same) is torch.optim.AdamW and len(same.param_groups) == 1
    assert len(same.param_groups[0]["params"]) == len(list(model.parameters()))


def test_a_per_modality_setting_names_every_modality():
    model = _model()
    with pytest.raises(ValueError, match=r"optimizer has entries for \['a'\], the modalities "
                                         r"are \['a', 'b'\]"):
        modality_optimizer(model, {"a": "adamw"}, 0.1, MOMENTUM, DECAY)
    with pytest.raises(ValueError, match=r"lr has entries for \['a', 'c'\]"):
        modality_optimizer(model, "sgd", {"a": 0.1, "c": 0.1}, MOMENTUM, DECAY)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        modality_optimizer(model, {"a": "lars", "b": "sgd"}, 0.1, MOMENTUM, DECAY)
    chained = modality_optimizer(model, {"a": "adamw", "b": "sgd"}, 0.1, MOMENTUM, DECAY)
    with pytest.raises(ValueError, match="takes no closure"):
        chained.step(lambda: 0.0)
