"""Threads of the project: fewer torch intra-op threads, and more cores without another rounding.

:func:`limit_threads` runs a block on fewer torch threads (one, for results that do not depend
on the thread count). :func:`map_batches` and :func:`split_convolutions` then use more cores
for work whose floats do not depend on how it is split: whole batches of an inference pass, and
the batch chunks and the two gradients of a training step's convolutions.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import torch
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

__all__ = ["limit_threads", "map_batches", "split_convolutions", "start_numba_pool"]

T = TypeVar("T")


@contextlib.contextmanager
def limit_threads(n: int = 1) -> Iterator[None]:
    """Run the block with at most ``n`` torch intra-op threads (restored afterwards).

    Small tensor ops gain nothing from parallel regions, and on a busy machine waiting for the
    other threads (OpenMP workers spinning on the cores) made tiny ops 10-100x slower (a 64 x 99
    log-mel; small matrix products). DataLoader workers already use one thread.

    numba's thread pool is started first: with numba's OpenMP threading layer, the pool's start
    sets the process's OpenMP thread count to numba's, which would undo the limit for every
    torch op after the first numba kernel of the block (measured: a ``training.threads = 1``
    run trained on all cores from its first clustering on, and its weights depended on the
    machine's core count). Started before the limit, the pool leaves it alone.

    Examples
    --------
    >>> with limit_threads(1):
    ...     torch.get_num_threads()
    1
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    start_numba_pool()
    old = torch.get_num_threads()
    if old <= n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def start_numba_pool() -> None:
    """Start numba's thread pool now, keeping torch's thread count (once per process).

    With numba's OpenMP threading layer the pool's start sets the process's OpenMP thread count
    to numba's, which is torch's too: a ``torch.set_num_threads(1)`` made before (by a user, or
    by :func:`limit_threads`) would silently stop holding. So the count torch had is put back
    right after. The project's numba modules call this when they are imported, before any of
    their kernels runs, and :func:`limit_threads` calls it before it limits torch (a numba kernel
    of someone else's inside the block then finds the pool started). Later kernel launches
    leave the count alone. Nothing in a DataLoader worker (it runs no numba kernel) or without
    numba.
    """
    if torch.utils.data.get_worker_info() is not None:
        return
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; the torch back-end without it
        return
    before = torch.get_num_threads()
    numba.get_num_threads()  # starts the pool (numba.np.ufunc.parallel._launch_threads)
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


def map_batches(fn: Callable[[Any], T], batches: Iterable[Any], threads: int = 1) -> Iterator[T]:
    """``fn(batch)`` of each batch, in order, without gradients; up to ``threads`` at once.

    For inference passes on the CPU with one torch thread: each batch then runs whole on one
    worker thread (itself on one torch thread), so every result is bit for bit the one a
    sequential pass gives, on any number of ``threads``, while the batches use more cores (the
    ``cpu`` preset's demo on 2 cores: a clustering pass 5.1 s instead of 8.2 s, median over its
    30 clusterings, with ``threads=2``; ``docs/video.md``). ``batches`` is iterated in the calling
    thread, one batch ahead of the workers: loading overlaps with the computing. ``fn`` must not
    draw random numbers (their order would depend on the threads' timing) or change shared
    state. Runs sequentially when ``threads`` is 1 or torch runs on more than one thread (the
    workers would then compete for the cores, and torch's thread count is shared by them).

    Examples
    --------
    >>> import torch
    >>> with limit_threads(1):
    ...     out = list(map_batches(lambda x: x * 2, [torch.ones(2), torch.zeros(2)], threads=2))
    >>> [o.tolist() for o in out]
    [[2.0, 2.0], [0.0, 0.0]]
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")

    def call(batch: Any) -> T:
        with torch.no_grad():
            return fn(batch)

    if threads == 1 or torch.get_num_threads() != 1:
        yield from map(call, batches)
        return
    with _one_thread_pool(threads, "otcluster-batches") as pool:
        pending: deque[Future[T]] = deque()
        try:
            for batch in batches:
                pending.append(pool.submit(call, batch))
                if len(pending) >= threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _one_thread_pool(workers: int, name: str) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,),
                              thread_name_prefix=name)


def _no_grad(fn: Callable[..., T], *args: Any) -> T:
    with torch.no_grad():
        return fn(*args)


#: Back-ends that compute a convolution sample by sample (ATen's own, without oneDNN or NNPACK):
#: a chunk of the batch gives the floats of the same samples in the whole batch.
_PER_SAMPLE = frozenset({"Slow2d", "Slow3d"})
_ARG_NAMES = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def _geometry(value: Any, dims: int) -> tuple[int, ...] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * dims
    if isinstance(value, (tuple, list)) and len(value) == dims and \
            all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    return None  # e.g. padding="same": left to torch


def _backend(x: torch.Tensor, weight: torch.Tensor, geometry: tuple) -> str | None:
    stride, padding, dilation, groups = geometry
    try:  # private, but the only way to know the back-end torch will pick
        found = torch._C._select_conv_backend(x, weight, None, list(stride), list(padding),
                                              list(dilation), False, [0] * len(stride), groups)
    except (AttributeError, RuntimeError, TypeError):  # pragma: no cover - another torch
        return None
    return str(found.name)


class _SplitConvolution(torch.autograd.Function):
    """A convolution computed in batch chunks, its input and weight gradients side by side."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                conv: Callable, geometry: tuple, chunks: int, pool: ThreadPoolExecutor
                ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conv_args = (geometry, pool, None if bias is None else list(bias.shape))
        if chunks < 2:
            return conv(x, weight, bias, *geometry)
        first, *rest = x.tensor_split(chunks)
        futures = [pool.submit(_no_grad, conv, part, weight, bias, *geometry) for part in rest]
        return torch.cat([conv(first, weight, bias, *geometry)] + [f.result() for f in futures])

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        x, weight = ctx.saved_tensors
        (stride, padding, dilation, groups), pool, bias_sizes = ctx.conv_args
        need_x, need_w, need_b = ctx.needs_input_grad[:3]

        def part(mask: list[bool]) -> tuple:
            return torch.ops.aten.convolution_backward(
                grad, x, weight, bias_sizes, list(stride), list(padding), list(dilation), False,
                [0] * len(stride), groups, mask)

        if need_x and need_w:  # two products of the same size: one on each core
            future = pool.submit(_no_grad, part, [False, True, False])
            grad_x, _, grad_b = part([True, False, bool(need_b)])
            grad_w = future.result()[1]
        else:
            grad_x, grad_w, grad_b = part([bool(need_x), bool(need_w), bool(need_b)])
        return grad_x, grad_w, grad_b, None, None, None, None


class _SplitMode(TorchFunctionMode):
    _CONVS = {torch.nn.functional.conv2d: 2, torch.nn.functional.conv3d: 3}

    def __init__(self, pool: ThreadPoolExecutor, threads: int):
        super().__init__()
        self.pool, self.threads = pool, threads

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        dims = self._CONVS.get(func)
        if dims is not None and torch.is_grad_enabled():
            call = dict(zip(_ARG_NAMES, args), **kwargs)
            split = self._split(call, dims)
            if split is not None:
                return _SplitConvolution.apply(call["input"], call["weight"], call.get("bias"),
                                               func, *split, self.pool)
        return func(*args, **kwargs)

    def _split(self, call: dict, dims: int) -> tuple[tuple, int] | None:
        x, weight = call.get("input"), call.get("weight")
        if not (isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor)) or \
                x.device.type != "cpu" or x.dim() != dims + 2 or \
                not (x.requires_grad or weight.requires_grad) or \
                torch.is_autocast_enabled("cpu") or torch.get_num_threads() != 1:
            return None
        geometry = [_geometry(call.get(k, d), dims)
                    for k, d in (("stride", 1), ("padding", 0), ("dilation", 1))]
        groups = call.get("groups", 1)
        if None in geometry or not isinstance(groups, int):
            return None
        full = (*geometry, groups)
        if _backend(x, weight, full) not in _PER_SAMPLE:
            return None
        chunks = min(self.threads, x.shape[0])
        if chunks > 1 and _backend(x[: x.shape[0] // chunks], weight, full) not in _PER_SAMPLE:
            chunks = 1  # a chunk would take another back-end (e.g. NNPACK from 16 samples)
        return full, chunks


@contextlib.contextmanager
def split_convolutions(threads: int = 2) -> Iterator[None]:
    """Compute the block's convolutions on ``threads`` threads, each float as on one thread.

    For a training step on one torch thread (``torch.set_num_threads(1)``, the ``cpu`` preset's
    reproducible setting), which leaves the other cores idle. Inside the block, each 2-d and 3-d
    convolution whose input or weight needs a gradient runs its forward pass in ``threads``
    chunks of the batch, and its backward pass computes the input gradient and the weight
    gradient side by side. Each runs whole on one thread of one torch thread, and only on ATen's
    own CPU back-ends, which compute sample by sample (:data:`_PER_SAMPLE`; oneDNN off, as
    under :func:`otcluster.portable_kernels`): every output and gradient is bit for bit the
    one a single thread computes. Everything else runs as usual: other back-ends, padding given
    as a string, autocast, other devices, and whatever needs no gradient. Off when ``threads``
    is 1 or torch runs on more than one thread. It holds for the calling thread's torch calls
    only (a :class:`torch.overrides.TorchFunctionMode`).

    Examples
    --------
    >>> import torch
    >>> conv = torch.nn.Conv2d(2, 3, 3)
    >>> x = torch.randn(4, 2, 8, 8)
    >>> with limit_threads(1), split_convolutions(2):
    ...     conv(x).sum().backward()
    >>> conv.weight.grad.shape
    torch.Size([3, 2, 3, 3])
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if threads == 1 or torch.get_num_threads() != 1:
        yield
        return
    with _one_thread_pool(threads - 1, "otcluster-convolutions") as pool, \
            _SplitMode(pool, threads):
        yield
