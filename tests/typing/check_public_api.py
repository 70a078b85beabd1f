"""Type checks of the public API, read by mypy in ``make lint`` (pytest does not collect this file).

Good calls must type-check; each misuse is marked ``# type: ignore[arg-type]`` and, because the
configuration sets ``warn_unused_ignores``, mypy fails if it ever accepts the misuse (an input
typed ``Any`` accepted ``sinkhorn("not an array")``). The functions are never called.
"""

from __future__ import annotations

import numpy as np
import torch

from otcluster import (
    align,
    align_from_cost,
    alignment_cost_matrix,
    ari_score,
    cluster_report,
    head_agreement,
    hungarian_accuracy,
    kmeans_baseline,
    nmi_score,
    permute_linear,
    permute_linear_,
    select_head,
    sinkhorn,
    sinkhorn_features,
)


def accepted() -> None:
    p = torch.rand(10, 3).softmax(1)
    align(p, p)
    align(p.numpy(), np.full((10, 3), 1 / 3))
    align([[0.5, 0.5], [0.25, 0.75]], [[0.5, 0.5], [1.0, 0.0]])
    alignment_cost_matrix(p, p, backend="torch")
    align_from_cost(torch.eye(3))
    permute_linear_(torch.nn.Linear(2, 3), [2, 0, 1])
    permute_linear(torch.nn.Linear(2, 3), torch.tensor([2, 0, 1]))
    nmi_score([0, 1, 1], np.array([1, 0, 0]))
    ari_score(torch.tensor([0, 1]), [1, 0])
    hungarian_accuracy([0, 1], [1, 0])
    cluster_report(np.zeros(4, dtype=np.int64), [0, 1, 0, 1])
    head_agreement([[0, 1, 1], [1, 0, 0]])
    select_head(np.zeros((2, 5), dtype=np.int64))
    kmeans_baseline(np.random.default_rng(0).random((100, 4)), 3)
    sinkhorn(torch.randn(10, 3))
    sinkhorn(np.zeros((2, 10, 3)), prior="zipf")
    sinkhorn_features(torch.randn(10, 4), torch.randn(3, 4))


def rejected() -> None:
    p = torch.rand(10, 3).softmax(1)
    align("not an array", p)  # type: ignore[arg-type]
    alignment_cost_matrix(p, {"a": 1})  # type: ignore[arg-type]
    align_from_cost("cost")  # type: ignore[arg-type]
    permute_linear_(torch.nn.Linear(2, 3), "210")  # type: ignore[arg-type]
    nmi_score("abc", [0, 1, 2])  # type: ignore[arg-type]
    cluster_report([0.5, 1.5], [0, 1])  # type: ignore[arg-type]
    kmeans_baseline("features", 3)  # type: ignore[arg-type]
    sinkhorn("not an array")  # type: ignore[arg-type]
    sinkhorn_features("features", torch.randn(3, 4))  # type: ignore[arg-type]
