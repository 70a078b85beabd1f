"""Kernel back-ends for the Sinkhorn iteration.

The iteration (``_iterate.solve``) only needs three things from the N x K side:

* ``build(g)``: (re)build the kernel ``K_ik = exp(lam * x_ik + g_k - m_i)`` with the column
  potentials ``g`` absorbed and each row shifted by its max ``m_i``;
* ``fused(v) -> acc``: one pass over the data computing ``s_i = sum_k K_ik v_k``, ``u_i = 1/s_i``
  and the column sums ``acc_k = sum_i K_ik u_i``, (H, K) float64; also remembers ``u`` and the
  row argmax of ``K_ik v_k`` (the labels) of that pass;
* ``potentials / labels / plan`` after the last pass, and ``rows(v, h, idx)``: the
  row-normalised plan rows ``idx`` of head ``h``, float64 (for ``_rounding``).

Back-ends: a fused numba kernel over a dense matrix (CPU), torch ops over a dense matrix (CUDA,
or CPU without numba) whose float32 pass on CUDA is one fused Triton kernel when Triton is
installed, and a memory-bounded one that recomputes blocks of logits from features and head
weights every pass (never holds N x K).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["DenseNumba", "DenseTorch", "FromFeatures", "have_numba", "triton_kernel"]

# The numba kernels, imported on the first solve that uses them (importing numba costs ~0.2 s,
# which ``import otcluster`` should not pay): None = not tried yet, False = unavailable.
_NB: Any = None


def _kernels() -> Any:
    global _NB
    if _NB is None:
        try:  # numba is a dependency, but keep a working torch path if it is absent or broken
            from . import _kernels_numba

            _NB = _kernels_numba
        except Exception:  # pragma: no cover - exercised only without numba
            _NB = False
    return _NB


def have_numba() -> bool:
    """Whether the numba kernels can be used (imports them on the first call)."""
    return _kernels() is not False


_TRITON: Any = None  # as _NB, for the fused CUDA pass (_kernels_triton)


def triton_kernel(device: torch.device, asked: bool = False) -> Any:
    """The fused Triton pass (float32 kernels) if it can run on ``device``, else None.

    It runs on CUDA when Triton imports. On the CPU only when ``asked`` for
    (``backend="triton"``) under ``TRITON_INTERPRET=1``, Triton's interpreter (the tests): a
    user debugging their own kernels keeps the numba solve.
    """
    global _TRITON
    interpreted = asked and os.environ.get("TRITON_INTERPRET") == "1"
    if not (device.type == "cuda" or interpreted):
        return None
    if _TRITON is None:
        try:
            from . import _kernels_triton

            _TRITON = _kernels_triton
        except Exception:  # no Triton (CPU-only torch builds): torch ops
            _TRITON = False
    return _TRITON or None


def _triton_failed(err: Exception) -> None:
    """The fused pass failed (compiling it, most likely): warn once, use torch ops from now on."""
    global _TRITON
    if _TRITON is not False:
        _TRITON = False
        warnings.warn(f"the fused Triton pass failed on this device ({type(err).__name__}: "
                      f"{str(err).splitlines()[0][:200] if str(err) else ''}); using torch ops "
                      "(backend='torch') from now on", RuntimeWarning, stacklevel=4)


def _normalised(rows: torch.Tensor) -> torch.Tensor:
    return rows / rows.sum(-1, keepdim=True).clamp_min(1e-300)


def _row_blocks(n: int, k: int, budget: int = 1 << 22):
    """Row slices of about ``budget`` entries each (CPU: 16 MB of float32, cache-sized)."""
    step = max(1, budget // max(k, 1))
    for lo in range(0, n, step):
        yield slice(lo, min(n, lo + step))


class DenseNumba:
    """Dense kernel on CPU, one fused numba pass per iteration."""

    absorb_every_pass = False

    def __init__(self, x: torch.Tensor, lam: float, dtype: torch.dtype):
        self._nb = _nb = _kernels()
        self.x = x.numpy()  # (H, N, K), not modified
        self.lam = lam
        H, N, K = x.shape
        self.shape = (H, N, K)
        self.kmat_dtype = dtype
        self.kmat = torch.empty((H, N, K), dtype=dtype)
        self._k = self.kmat.numpy()
        self.rowmax = torch.empty((H, N), dtype=torch.float64)
        self.u = torch.empty((H, N), dtype=dtype)
        self.labels_ = torch.empty((H, N), dtype=torch.int64)
        self.ncph = _nb.n_chunks(N)
        self.partial = torch.empty((H * self.ncph, K), dtype=torch.float64)
        self.n_bad = 0

    def build(self, g: torch.Tensor) -> None:
        nb = self._nb
        build = nb.build_kernel_f32 if self._k.dtype == np.float32 else nb.build_kernel
        self.n_bad = int(build(self.x, self.lam, g.numpy(), self._k, self.rowmax.numpy(), self.ncph))

    def fused(self, v: torch.Tensor) -> torch.Tensor:
        self._nb.fused_pass(
            self._k, v.to(self.kmat.dtype).numpy(), self.u.numpy(), self.partial.numpy(), self.ncph
        )
        H, _, K = self.shape
        # numpy adds the chunks in order (torch's CPU sum may split it by thread count)
        return torch.from_numpy(self.partial.numpy().reshape(H, self.ncph, K).sum(1))

    def labels(self, v: torch.Tensor) -> torch.Tensor:
        self._nb.row_argmax(self._k, v.to(self.kmat.dtype).numpy(), self.labels_.numpy(), self.ncph)
        return self.labels_

    def rows(self, v: torch.Tensor, h: int, idx: torch.Tensor) -> torch.Tensor:
        return _normalised(self.kmat[h, idx].double() * v[h].double())

    def row_potential(self) -> torch.Tensor:
        return torch.log(self.u.double()) - self.rowmax

    def plan(self, v: torch.Tensor, c: float) -> torch.Tensor:
        self._nb.scale_plan(self._k, self.u.numpy(), v.to(self.kmat.dtype).numpy(), c)
        return self.kmat


class DenseTorch:
    """Dense kernel with torch ops (CUDA, or CPU when numba is unavailable)."""

    absorb_every_pass = False

    def __init__(self, x: torch.Tensor, lam: float, dtype: torch.dtype, kernel: Any = None):
        self.x = x
        self.lam = lam
        H, N, K = x.shape
        self.shape = (H, N, K)
        self.kmat_dtype = dtype
        self.kmat = torch.empty((H, N, K), dtype=dtype, device=x.device)
        self.rowmax = torch.empty((H, N), dtype=torch.float64, device=x.device)
        self.u = torch.empty((H, 0), dtype=dtype, device=x.device)  # set by each pass
        self.n_bad = 0
        self.kernel = kernel  # the fused Triton pass (triton_kernel), or None: torch ops
        if kernel is not None:
            self.u = torch.empty((H, N), dtype=dtype, device=x.device)
            P = kernel.n_programs(x.device, N)
            self.partial = torch.empty((H, P, K), dtype=dtype, device=x.device)

    def _blocks(self):
        # on CUDA, blocks of 2^26 entries (256 MB of float32): at 2^22 the 1M x 3000 set-up
        # made 715 blocks of small launches and took 0.19 s of a 0.21 s solve on an H200
        H, N, K = self.shape
        return _row_blocks(N, K * H, 1 << 26 if self.kmat.is_cuda else 1 << 22)

    def build(self, g: torch.Tensor) -> None:
        gk = g.to(self.kmat.dtype)[:, None, :]
        bad = torch.zeros((), dtype=torch.int64, device=self.kmat.device)
        for b in self._blocks():
            z = self.x[:, b].to(self.kmat.dtype) * self.lam + gk
            bad += (~torch.isfinite(z)).sum()  # counted on the device: one wait at the end
            m = z.amax(-1, keepdim=True)
            torch.exp(z.sub_(m), out=self.kmat[:, b])
            self.rowmax[:, b] = m[..., 0].double()
        self.n_bad = int(bad)

    def fused(self, v: torch.Tensor) -> torch.Tensor:
        vk = v.to(self.kmat.dtype)
        if self.kernel is not None:  # one read of kmat instead of two
            try:
                self.kernel.fused_pass(self.kmat, vk.contiguous(), self.u, self.partial)
                return self.partial.sum(1, dtype=torch.float64)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as err:  # e.g. a GPU Triton does not compile for: torch ops
                _triton_failed(err)
                self.kernel = None
        s = torch.bmm(self.kmat, vk[:, :, None])[..., 0]
        u = torch.where(s > 0, 1.0 / s, torch.zeros_like(s))
        self.u = u
        return torch.bmm(u[:, None, :], self.kmat)[:, 0].double()

    def labels(self, v: torch.Tensor) -> torch.Tensor:
        H, N, K = self.shape
        vk = v.to(self.kmat.dtype)[:, None, :]
        out = torch.empty((H, N), dtype=torch.int64, device=self.kmat.device)
        for b in self._blocks():
            out[:, b] = (self.kmat[:, b] * vk).argmax(-1)
        return out

    def rows(self, v: torch.Tensor, h: int, idx: torch.Tensor) -> torch.Tensor:
        return _normalised(self.kmat[h, idx.to(self.kmat.device)].double() * v[h].double())

    def row_potential(self) -> torch.Tensor:
        return torch.log(self.u.double()) - self.rowmax

    def plan(self, v: torch.Tensor, c: float) -> torch.Tensor:
        self.kmat.mul_(self.u[:, :, None] * c).mul_(v.to(self.kmat.dtype)[:, None, :])
        return self.kmat


class FromFeatures:
    """Memory-bounded kernel: logits = features @ W_h^T + b_h recomputed block by block.

    ``x`` is never materialised: each pass computes, per block of rows,
    ``z = lam * log_softmax(features_b @ W^T + b) + g`` and works in the log domain
    (the potentials are absorbed every pass, so nothing can over- or underflow).
    """

    absorb_every_pass = True

    def __init__(self, features, weight, bias, lam, dtype, block_rows):
        self.f = features  # (N, D)
        self.w = weight.to(dtype)  # (H, K, D)
        self.b = None if bias is None else bias.to(dtype)  # (H, K)
        self.lam = lam
        H, K, _ = weight.shape
        N = features.shape[0]
        self.shape = (H, N, K)
        self.dtype = self.kmat_dtype = dtype
        self.block_rows = int(block_rows)
        self.g = torch.zeros((H, K), dtype=torch.float64, device=features.device)
        self.labels_ = torch.empty((H, N), dtype=torch.int64, device=features.device)
        self.logu = torch.empty((H, N), dtype=torch.float64, device=features.device)
        self.n_bad = 0

    def build(self, g: torch.Tensor) -> None:
        self.g = g.to(self.dtype)

    def _blocks(self):
        N = self.shape[1]
        for lo in range(0, N, self.block_rows):
            b = slice(lo, min(N, lo + self.block_rows))
            logits = torch.einsum("nd,hkd->hnk", self.f[b].to(self.dtype), self.w)
            if self.b is not None:
                logits = logits + self.b[:, None, :]
            z = torch.log_softmax(logits, dim=-1).mul_(self.lam).add_(self.g[:, None, :])
            yield b, z

    def fused(self, v: torch.Tensor) -> torch.Tensor:
        # v is all ones here (potentials absorbed every pass); kept for the common interface.
        H, N, K = self.shape
        acc = torch.zeros((H, K), dtype=torch.float64, device=self.f.device)
        bad = 0
        for b, z in self._blocks():
            if not bool(torch.isfinite(z).all()):
                bad += int((~torch.isfinite(z)).sum())
            m = z.amax(-1, keepdim=True)
            e = torch.exp(z - m)
            s = e.sum(-1)
            self.labels_[:, b] = z.argmax(-1)
            self.logu[:, b] = (-torch.log(s) - m[..., 0]).double()
            acc += (e / s[..., None]).sum(1).double()
        self.n_bad = bad
        return acc

    def labels(self, v: torch.Tensor) -> torch.Tensor:
        return self.labels_

    def rows(self, v: torch.Tensor, h: int, idx: torch.Tensor) -> torch.Tensor:
        logits = self.f[idx.to(self.f.device)].to(self.dtype) @ self.w[h].T
        if self.b is not None:
            logits = logits + self.b[h]
        z = torch.log_softmax(logits, dim=-1).mul_(self.lam).add_(self.g[h])
        return torch.softmax(z.double(), dim=-1)

    def row_potential(self) -> torch.Tensor:
        return self.logu

    def plan(self, v, c):  # pragma: no cover - guarded by the caller
        raise ValueError("the memory-bounded solver does not materialise the plan")
