"""Sharding sample indices across ranks and gathering labels (explicit ``process_group``).

Every function takes the process group as an argument; ``None`` means a single process, and
then no ``torch.distributed`` call is made. Collectives run on the CPU for ``gloo`` and on the
current CUDA device for ``nccl``.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = [
    "group_rank_size",
    "cluster_shard",
    "epoch_shard",
    "all_reduce_sum",
    "all_reduce_max",
    "broadcast_from_first",
    "broadcast_buffers",
    "gather_labels",
    "all_gather_objects",
]


def group_rank_size(group: Any) -> tuple[int, int]:
    """``(rank, world_size)`` of this process in ``group``; ``(0, 1)`` without a group."""
    if group is None:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        raise RuntimeError("a process_group was given but torch.distributed is not initialised")
    return dist.get_rank(group), dist.get_world_size(group)


def _comm_device(group: Any) -> torch.device:
    import torch.distributed as dist

    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def cluster_shard(n: int, rank: int, world_size: int) -> torch.Tensor:
    """Positions ``rank, rank + W, rank + 2W, ...`` below ``n``: every sample exactly once.

    Shards differ in size by at most one (any ``n``; no padding, so no sample is counted
    twice in the transport problem).

    Returns
    -------
    LongTensor of shape (ceil((n - rank) / W),)
    """
    return torch.arange(rank, n, world_size, dtype=torch.int64)


def epoch_shard(n: int, epoch: int, seed: int, rank: int, world_size: int, *,
                shuffle: bool = True) -> torch.Tensor:
    """This rank's sample positions for one training epoch (like ``DistributedSampler``).

    The permutation depends only on ``(seed, epoch)``, identical on every rank; it is padded
    by wrapping around to a multiple of ``world_size`` so every rank gets ``ceil(n / W)``
    positions and runs the same number of steps.

    Returns
    -------
    LongTensor of shape (ceil(n / W),)
    """
    if shuffle:
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
        order = torch.randperm(n, generator=g)
    else:
        order = torch.arange(n)
    per_rank = -(-n // world_size)
    total = per_rank * world_size
    if total > n:
        order = torch.cat([order, order[: total - n]])
    return order[rank:total:world_size]


def all_reduce_sum(t: torch.Tensor, group: Any) -> torch.Tensor:
    """Sum ``t`` over the ranks of ``group`` (the project's one all-reduce).

    Returns a new tensor on ``t``'s device (``t`` itself without a group); ``t`` is not
    modified. The collective runs on the CPU for ``gloo`` and on the current CUDA device for
    ``nccl``, wherever ``t`` lives.
    """
    return _all_reduce(t, group, "sum")


def all_reduce_max(t: torch.Tensor, group: Any) -> torch.Tensor:
    """Element-wise maximum of ``t`` over the ranks of ``group`` (as :func:`all_reduce_sum`)."""
    return _all_reduce(t, group, "max")


def _all_reduce(t: torch.Tensor, group: Any, op: str) -> torch.Tensor:
    if group is None:
        return t
    import torch.distributed as dist

    buf = t.detach().to(_comm_device(group)).clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX, group=group)
    return buf.to(t.device)


def broadcast_from_first(t: torch.Tensor, group: Any) -> torch.Tensor:
    """The value of ``t`` on the group's first rank, on every rank."""
    if group is None:
        return t
    import torch.distributed as dist

    buf = t.detach().to(_comm_device(group)).clone()
    dist.broadcast(buf, src=dist.get_global_rank(group, 0), group=group)
    return buf.to(t.device)


def broadcast_buffers(module: torch.nn.Module, group: Any) -> None:
    """Give every rank the first rank's buffers of ``module`` (BatchNorm statistics), as DDP does
    before each training forward: evaluation-mode passes and checkpoints then agree."""
    if group is None:
        return
    with torch.no_grad():
        for buf in module.buffers():
            buf.copy_(broadcast_from_first(buf, group))


def gather_labels(local_labels: torch.Tensor, local_index: torch.Tensor, n: int,
                  group: Any) -> torch.Tensor:
    """Assemble every rank's labels into the full ``(H, n)`` array on every rank.

    Shards may be uneven: they are padded to the largest one for the all-gather.

    Parameters
    ----------
    local_labels : LongTensor of shape (H, n_local)
        Labels of this rank's samples.
    local_index : LongTensor of shape (n_local,)
        Sample indices (``0..n-1``) of those columns.
    n : int
        Total number of samples.
    group : ProcessGroup or None

    Returns
    -------
    LongTensor of shape (H, n), on the CPU

    Raises
    ------
    ValueError
        If some sample index was produced by no rank or by several (the dataset's ``"index"``
        values are not a permutation of ``0..n-1``).
    """
    local_labels = local_labels.detach().cpu().long()
    local_index = local_index.detach().cpu().long()
    H = local_labels.shape[0]
    if group is None:
        labels_all, index_all = local_labels, local_index
    else:
        import torch.distributed as dist

        dev = _comm_device(group)
        world = dist.get_world_size(group)
        size = torch.tensor([local_index.numel()], dtype=torch.int64, device=dev)
        sizes = [torch.zeros_like(size) for _ in range(world)]
        dist.all_gather(sizes, size, group=group)
        m = int(max(int(s) for s in sizes))
        packed = torch.full((H + 1, m), -1, dtype=torch.int64)
        packed[0, : local_index.numel()] = local_index
        packed[1:, : local_index.numel()] = local_labels
        packed = packed.to(dev)
        parts = [torch.empty_like(packed) for _ in range(world)]
        dist.all_gather(parts, packed, group=group)
        parts = [p[:, : int(s)].cpu() for p, s in zip(parts, sizes)]
        cat = torch.cat(parts, dim=1)
        index_all, labels_all = cat[0], cat[1:]
    counts = torch.bincount(index_all.clamp(0, n - 1), minlength=n) if index_all.numel() else \
        torch.zeros(n, dtype=torch.int64)
    if index_all.numel() and (int(index_all.min()) < 0 or int(index_all.max()) >= n):
        raise ValueError(f"sample indices must lie in 0..{n - 1}, got values in "
                         f"[{int(index_all.min())}, {int(index_all.max())}]")
    if bool((counts != 1).any()):
        missing = torch.nonzero(counts == 0).flatten()[:5].tolist()
        dup = torch.nonzero(counts > 1).flatten()[:5].tolist()
        raise ValueError(
            f"the dataset's 'index' values must be a permutation of 0..{n - 1}: "
            f"missing {missing}{'...' if int((counts == 0).sum()) > 5 else ''}, "
            f"repeated {dup}{'...' if int((counts > 1).sum()) > 5 else ''}"
        )
    out = torch.empty((H, n), dtype=torch.int64)
    out[:, index_all] = labels_all
    return out


def all_gather_objects(obj: Any, group: Any) -> list[Any]:
    """``[obj_rank0, obj_rank1, ...]`` (picklable objects); ``[obj]`` without a group."""
    if group is None:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out
