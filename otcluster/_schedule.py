"""When to re-cluster, the learning-rate schedules (pure functions of the step) and the
optimisers.

The paper's code clusters at the training steps ``epochs * n_batches * (linspace(0, 1, n) ** p)``
(read in decreasing order and popped from the end), so the first clustering is at step 0 and the
clusterings are denser early in training (``p = 1.5`` in SeLaVi, ``p = 2`` in SeLa).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["clustering_steps", "steps_per_epoch", "LinearWarmup", "WarmupCosine", "LR_SCHEDULES",
           "OPTIMIZERS", "make_optimizer", "modality_optimizer", "per_modality", "ChainedOptimizer",
           "learning_rates"]

#: ``TrainerConfig.lr_schedule`` values
LR_SCHEDULES = ("constant", "cosine")
#: ``TrainerConfig.optimizer`` values
OPTIMIZERS = ("sgd", "adamw")


def make_optimizer(params: Any, name: str, lr: float, momentum: float, weight_decay: float
                   ) -> torch.optim.Optimizer:
    """``"sgd"`` (with ``momentum``; the paper's) or ``"adamw"`` (torch's default betas,
    decoupled ``weight_decay``; ``momentum`` unused) over ``params``.

    >>> make_optimizer([torch.zeros(1, requires_grad=True)], "adamw", 1e-3, 0.9, 0.0).__class__.__name__
    'AdamW'
    """
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def per_modality(value: Any, modalities: list[str], name: str) -> dict[str, Any]:
    """``{modality: value}``: one value for every modality, or a mapping that must name each
    modality exactly once.

    >>> per_modality(0.1, ["video", "audio"], "lr")
    {'video': 0.1, 'audio': 0.1}
    """
    if not isinstance(value, Mapping):
        return {m: value for m in modalities}
    if set(value) != set(modalities):
        raise ValueError(f"TrainerConfig.{name} has entries for {sorted(value)}, the modalities "
                         f"are {sorted(modalities)}: give one for each")
    return {m: value[m] for m in modalities}


class ChainedOptimizer(torch.optim.Optimizer):
    """Several optimisers stepped as one (e.g. AdamW for one modality, SGD for another).

    ``param_groups`` are the sub-optimisers' own group dicts, so a learning-rate scheduler or a
    ``GradScaler`` over this object acts on all of them; ``state_dict`` holds one state per
    sub-optimiser.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = list(optimizers)
        groups = [g for o in self.optimizers for g in o.param_groups]
        super().__init__([{"params": g["params"]} for g in groups], {})
        self.param_groups = groups  # shared with the sub-optimisers, not copies

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        if closure is not None:
            raise ValueError("ChainedOptimizer.step takes no closure")
        for o in self.optimizers:
            o.step()
        return None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict.get("optimizers")
        if not isinstance(states, list) or len(states) != len(self.optimizers):
            raise ValueError(f"state has {len(states) if isinstance(states, list) else 'no'} "
                             f"optimizer states, this one chains {len(self.optimizers)}")
        for o, s in zip(self.optimizers, states):
            o.load_state_dict(s)
        # torch's load makes new group dicts: share those (a scheduler must reach them)
        self.param_groups = [g for o in self.optimizers for g in o.param_groups]


def modality_optimizer(model: Any, name: str | Mapping[str, str], lr: float | Mapping[str, float],
                       momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """The optimiser of a :class:`~otcluster._train.model.SelfLabelModel`.

    ``name`` and ``lr`` are one value for the whole model (one parameter group, as in the paper)
    or ``{modality: value}``: then each modality's encoder and heads form a parameter group with
    its own learning rate and optimiser (a :class:`ChainedOptimizer` when they differ).
    """
    mods = list(model.modalities)
    kinds, lrs = per_modality(name, mods, "optimizer"), per_modality(lr, mods, "lr")
    if len(set(kinds.values())) == 1 and not isinstance(lr, Mapping):  # one group, the paper's
        return make_optimizer(model.parameters(), kinds[mods[0]], float(lr), momentum,
                              weight_decay)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for m in mods:
        params = [*model.encoders[m].parameters(), *model.heads[m].parameters()]
        by_kind.setdefault(kinds[m], []).append({"params": params, "lr": float(lrs[m]),
                                                 "modality": m})
    opts = [make_optimizer(groups, kind, groups[0]["lr"], momentum, weight_decay)
            for kind, groups in by_kind.items()]
    return opts[0] if len(opts) == 1 else ChainedOptimizer(opts)


def learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``{"lr": the first group's}``, plus ``"lr_per_modality"`` where the groups are
    :func:`modality_optimizer`'s."""
    groups = optimizer.param_groups
    out: dict[str, Any] = {"lr": float(groups[0]["lr"])}
    if "modality" in groups[0]:
        out["lr_per_modality"] = {g["modality"]: float(g["lr"]) for g in groups}
    return out


def clustering_steps(total_steps: int, n_clusterings: int, power: float = 1.5) -> list[int]:
    """Training steps before which the labels are recomputed.

    Parameters
    ----------
    total_steps : int
        ``epochs * batches_per_epoch`` (>= 1).
    n_clusterings : int
        ``n`` in ``total_steps * linspace(0, 1, n) ** power`` (>= 1).
    power : float, default 1.5
        Exponent ``p`` (> 0); larger values cluster more often early in training.

    Returns
    -------
    list of int
        Strictly increasing steps in ``[0, total_steps]``. The first is 0 (cluster before the
        first step); with ``n_clusterings >= 2`` the last is ``total_steps`` (a final
        clustering of the trained model). Steps that coincide after flooring are kept once, so
        the list can be shorter than ``n_clusterings`` when there are few steps.

    Examples
    --------
    >>> clustering_steps(100, 5, 2.0)
    [0, 6, 25, 56, 100]
    >>> clustering_steps(3, 10, 1.5)
    [0, 1, 2, 3]
    """
    if isinstance(total_steps, bool) or int(total_steps) != total_steps or total_steps < 1:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    if isinstance(n_clusterings, bool) or int(n_clusterings) != n_clusterings or n_clusterings < 1:
        raise ValueError(f"n_clusterings must be a positive integer, got {n_clusterings!r}")
    if not (np.isfinite(power) and power > 0):
        raise ValueError(f"power must be a positive finite number, got {power!r}")
    t = np.linspace(0.0, 1.0, int(n_clusterings)) ** float(power)
    # the paper's array is this one reversed; it is consumed from the end, i.e. in this order
    steps = np.floor(int(total_steps) * t + 1e-9).astype(np.int64)
    return sorted({int(s) for s in steps})


def steps_per_epoch(n_samples: int, world_size: int, batch_size: int) -> int:
    """Training steps per epoch of each rank (every rank gets ``ceil(N / W)`` positions).

    A last batch of one sample is skipped (BatchNorm cannot train on it).

    Examples
    --------
    >>> steps_per_epoch(100, 1, 32), steps_per_epoch(97, 1, 32), steps_per_epoch(1, 1, 32)
    (4, 3, 1)
    """
    n_local = -(-n_samples // world_size)
    singleton = 1 if n_local % batch_size == 1 and n_local > batch_size else 0
    return -(-n_local // batch_size) - singleton


class LinearWarmup:
    """Learning-rate factor for :class:`torch.optim.lr_scheduler.LambdaLR`: linear warm-up.

    ``factor(step) = min(1, (step + 1) / warmup_steps)``, then constant 1. A plain object (not
    a closure) so that ``LambdaLR.state_dict()`` stores its two integers.

    Parameters
    ----------
    warmup_steps : int
        Steps to reach the full learning rate (0: no warm-up).

    Examples
    --------
    >>> w = LinearWarmup(4)
    >>> [w(s) for s in range(6)]
    [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    """

    def __init__(self, warmup_steps: int):
        if isinstance(warmup_steps, bool) or int(warmup_steps) != warmup_steps or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: int) -> float:
        if self.warmup_steps == 0:
            return 1.0
        return min(1.0, (step + 1) / self.warmup_steps)

    def __repr__(self) -> str:
        return f"LinearWarmup({self.warmup_steps})"


class WarmupCosine(LinearWarmup):
    """Learning-rate factor for :class:`torch.optim.lr_scheduler.LambdaLR`: linear warm-up, then
    cosine decay to 0 at ``total_steps`` (Loshchilov & Hutter's SGDR without restarts).

    ``factor(step) = (step + 1) / warmup_steps`` during the warm-up, then
    ``(1 + cos(pi * (step - warmup_steps) / (total_steps - warmup_steps))) / 2``.

    Parameters
    ----------
    warmup_steps : int
        Steps to reach the full learning rate (0: no warm-up).
    total_steps : int
        The step at which the factor reaches 0 (the end of training), > ``warmup_steps``.

    Examples
    --------
    >>> w = WarmupCosine(2, 6)
    >>> [round(w(s), 3) for s in range(7)]
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0]
    """

    def __init__(self, warmup_steps: int, total_steps: int):
        super().__init__(warmup_steps)
        if isinstance(total_steps, bool) or int(total_steps) != total_steps \
                or total_steps <= warmup_steps:
            raise ValueError(f"total_steps must be an integer > warmup_steps ({warmup_steps}), "
                             f"got {total_steps!r}")
        self.total_steps = int(total_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return super().__call__(step)
        frac = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * frac))

    def __repr__(self) -> str:
        return f"WarmupCosine({self.warmup_steps}, {self.total_steps})"
