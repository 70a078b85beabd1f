"""Labels from a plan whose rows do not decide: argmax, with the plan's column masses as capacities.

The label of a row is the argmax of its plan row. Where the plan does not decide (rows that are
identical or nearly so, a flat plan), argmax sends every such row to the same cluster: N
identical rows all went to cluster 0 whatever the prior said. Here a cluster whose argmax count
exceeds its plan mass ``E_k = sum_i Q_ik / c`` (the expected count) by more than
``max(OVERFULL_ABS, OVERFULL_REL * E_k)`` (twice ``E_k``, at least 2 rows more) keeps only its
``round(E_k)`` rows of largest plan share; the others are dealt out again, rows in index order,
each to the cluster furthest below its expected count among those where the row's plan share is
at least ``CANDIDATE_SHARE`` of its largest share. Deterministic.

* Exactly tied rows end within 1 of ``N * prior_k`` in every cluster: a cluster is taken only
  while it is the furthest below its expected count, so none ends 1 or more below while another
  is above. This holds whenever argmax overfills past the slack: any prior whose largest share
  is below 1/2; above it, tied rows stay in their argmax cluster.
* A row the plan decides (share near 1) counts nearly 1 towards ``E_k``, so it is among the
  kept rows: it keeps its argmax.
* The slack leaves the argmax labels of ordinary plans unchanged: a converged plan at lam 20
  (sizes a few % off ``E_k``, e.g. 177-186 for 180) and soft plans at small lam (tens of %).

Cost: one bincount of the labels per head; only when a cluster is overfull, one read of the
plan's rows (expected counts, each row's share of its argmax cluster), one read of the moved
rows and a serial pass over them; memory O(N + block x K) (a flat 200k x 309 plan: 2.5 s against
0.3 s for argmax, ``benchmarks/bench_relaxed.py``). With a process group the decision is taken
on the all-reduced counts and each rank rounds its own rows.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["CANDIDATE_SHARE", "OVERFULL_ABS", "OVERFULL_REL", "overfull", "round_plan"]

OVERFULL_ABS = 2.0  # rows
OVERFULL_REL = 1.0  # of the expected count: more than twice it
# a moved row may go to the clusters where its plan share is at least this fraction of its
# largest share (a Zipf prior over 309 clusters spans a factor 309)
CANDIDATE_SHARE = 1e-3
_BLOCK = 1 << 15  # rows read at once


def _assign(q: np.ndarray, deficit: np.ndarray, nb) -> np.ndarray:
    out = np.empty(q.shape[0], dtype=np.int64)
    if nb:
        nb.assign_by_deficit(q, deficit, CANDIDATE_SHARE, out)
        return out
    for i in range(q.shape[0]):  # pragma: no cover - exercised only without numba
        ok = q[i] >= CANDIDATE_SHARE * q[i].max()
        k = int(np.argmax(np.where(ok, deficit, -np.inf)))
        out[i] = k
        deficit[k] -= 1.0
    return out


def overfull(counts: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """(H, K) bool: argmax counts above the expected counts by more than the slack."""
    return counts > expected + torch.clamp(OVERFULL_REL * expected, min=OVERFULL_ABS)


def round_plan(ops, v: torch.Tensor, labels: torch.Tensor, mass: torch.Tensor, n_total: float,
               allreduce) -> torch.Tensor:
    """Fix the labels (H, N) of overfull clusters in place; see the module text.

    ``mass`` (H, K): the plan's global column masses (sum 1); ``allreduce``: sums a tensor over
    the process group (identity without one). ``ops`` is the back-end after ``labels(v)``.
    """
    from ._ops import _kernels

    H, N = labels.shape
    K = mass.shape[-1]
    counts = torch.stack([torch.bincount(labels[h].cpu(), minlength=K) for h in range(H)]).double()
    counts = allreduce(counts)
    if not bool(overfull(counts, mass.cpu() * n_total).any()):
        return labels
    nb = _kernels()
    for h in range(H):
        lab = labels[h].cpu()
        # one pass: this rank's expected counts and each row's share of its argmax cluster
        expected = torch.zeros(K, dtype=torch.float64)
        share = torch.empty(N, dtype=torch.float64)
        for lo in range(0, N, _BLOCK):
            b = torch.arange(lo, min(N, lo + _BLOCK))
            q = ops.rows(v, h, b).cpu()
            expected += q.sum(0)
            share[b] = q.gather(1, lab[b, None])[:, 0]
        lab_np, share_np, expected_np = lab.numpy().copy(), share.numpy(), expected.numpy()
        full = np.nonzero(np.bincount(lab_np, minlength=K) > np.floor(expected_np + 0.5))[0]
        if full.size == 0:
            continue
        moved = []
        for k in full:
            rows_k = np.nonzero(lab_np == k)[0]
            order = np.argsort(-share_np[rows_k], kind="stable")  # largest share first
            moved.append(rows_k[order[int(np.floor(expected_np[k] + 0.5)):]])
        moved_t = torch.from_numpy(np.sort(np.concatenate(moved)))
        lab_np[moved_t.numpy()] = -1
        deficit = expected_np - np.bincount(lab_np[lab_np >= 0], minlength=K)
        for lo in range(0, moved_t.numel(), _BLOCK):  # rows in index order, deficit carried over
            b = moved_t[lo:lo + _BLOCK]
            lab_np[b.numpy()] = _assign(ops.rows(v, h, b).cpu().numpy(), deficit, nb)
        labels[h] = torch.from_numpy(lab_np).to(labels.device)
    return labels
