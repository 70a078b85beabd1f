"""A fused Sinkhorn pass for CUDA in Triton: one pass over the kernel matrix per iteration.

The torch back-end's pass is two matrix-vector products, ``s = K v`` and ``acc = K^T (1/s)``,
so it reads the N x K matrix from device memory twice. Here each program takes a block of
rows, sums them against ``v`` (first read), and at once adds ``K_ik u_i`` for the same rows into
its own row of column partial sums (second read of the same block, meant to come from the L2
cache: 1.4 reads of the matrix were measured per pass, see docs/benchmarks/gpu.md). Programs
stride over the row blocks (a persistent grid), so the partial sums are a small (H, P, K)
float32 array owned row by row (no atomics); their sum over P is taken in float64 by the caller.

Imported only when a float32 solve runs on a CUDA device and Triton is installed (the
``triton`` package comes with torch's CUDA wheels). With ``TRITON_INTERPRET=1`` set before the
import, the same kernel runs on CPU tensors (the tests check it against torch there).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["fused_pass", "n_programs"]

# The tile and grid that were fastest on an H200 at 1M x 3000 float32 (two sweeps of 48 and 54
# tiles, median of 7 runs each; docs/benchmarks/gpu.md): 3.89 ms a pass, 1.40 reads of the
# matrix, against 9.63 ms for the torch ops' two mat-vecs. Tiles of 1024-2048 columns, 4-8 rows
# and 2-4 programs per multiprocessor were all within 5 % of it.
BLOCK_N = 8  # rows per block: small, so a block is still in L2 for its second read
BLOCK_K = 2048  # columns per tile (at most: a smaller K takes the next power of 2 above it)
PROGRAMS_PER_SM = 2
NUM_WARPS = 4


@triton.jit
def _pass(k_ptr, v_ptr, u_ptr, part_ptr, N, K, P,
          BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    h = tl.program_id(1)
    k_head = k_ptr + h.to(tl.int64) * N * K
    v_head = v_ptr + h * K
    part_row = part_ptr + (h * P + pid).to(tl.int64) * K
    n_blocks = tl.cdiv(N, BLOCK_N)
    for rb in range(pid, n_blocks, P):
        rows = rb * BLOCK_N + tl.arange(0, BLOCK_N)
        rmask = rows < N
        row_off = rows.to(tl.int64)[:, None] * K
        s = tl.zeros([BLOCK_N], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            cmask = cols < K
            tile = tl.load(k_head + row_off + cols[None, :], mask=rmask[:, None] & cmask[None, :],
                           other=0.0)
            vv = tl.load(v_head + cols, mask=cmask, other=0.0)
            s += tl.sum(tile * vv[None, :], axis=1)
        u = tl.where(s > 0, 1.0 / tl.where(s > 0, s, 1.0), 0.0)
        tl.store(u_ptr + h.to(tl.int64) * N + rows, u, mask=rmask)
        for k0 in range(0, K, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            cmask = cols < K
            tile = tl.load(k_head + row_off + cols[None, :], mask=rmask[:, None] & cmask[None, :],
                           other=0.0)
            col = tl.sum(tile * u[:, None], axis=0)
            acc = tl.load(part_row + cols, mask=cmask, other=0.0)
            tl.store(part_row + cols, acc + col, mask=cmask)


def n_programs(device: torch.device, n_rows: int, per_sm: int = PROGRAMS_PER_SM,
               block_n: int = BLOCK_N) -> int:
    """Programs per head: a few per multiprocessor, never more than there are row blocks."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
    else:  # the interpreter (tests)
        sms = 2
    return max(1, min(per_sm * sms, triton.cdiv(n_rows, block_n)))


def fused_pass(kmat: torch.Tensor, v: torch.Tensor, u: torch.Tensor, partial: torch.Tensor,
               block_n: int = BLOCK_N, block_k: int = BLOCK_K, num_warps: int = NUM_WARPS) -> None:
    """One pass: ``u = 1 / (kmat @ v)`` (0 where the row sum is 0) and, in ``partial`` (H, P, K),
    each program's sums of ``kmat[h, i, :] * u[h, i]`` over its rows.

    ``kmat`` (H, N, K), ``v`` (H, K), ``u`` (H, N) and ``partial``: contiguous float32 on one
    device; ``partial`` is overwritten. ``P`` programs per head (see :func:`n_programs`);
    ``block_n``, ``block_k`` (powers of 2: the tile) and ``num_warps`` are for benchmarks.
    """
    H, N, K = kmat.shape
    P = partial.shape[1]
    block_k = min(block_k, triton.next_power_of_2(K))
    partial.zero_()
    _pass[(P, H)](kmat, v, u, partial, N, K, P, BLOCK_N=block_n, BLOCK_K=block_k,
                  num_warps=num_warps)
