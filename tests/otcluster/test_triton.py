"""The fused Triton pass of the dense CUDA solve (``otcluster/_solver/_kernels_triton.py``).

Without a GPU the kernel runs in Triton's interpreter (``TRITON_INTERPRET=1``, set before
Triton is imported, so in a child process) on CPU tensors, against the torch pass it replaces.
The tests marked ``cuda`` run it compiled, on a lent GPU machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from otcluster import sinkhorn

triton = pytest.importorskip("triton")

INTERPRETED = textwrap.dedent(
    """
    import torch
    from otcluster import sinkhorn
    from otcluster._solver import _kernels_triton as kt, _ops

    def torch_pass(kmat, v):
        s = torch.bmm(kmat, v[:, :, None])[..., 0]
        u = torch.where(s > 0, 1 / s, torch.zeros_like(s))
        return u, torch.bmm(u[:, None, :], kmat)[:, 0].double()

    g = torch.Generator().manual_seed(0)
    # rows not a multiple of BLOCK_N, columns not a multiple of BLOCK_K, several heads, a zero row
    for H, N, K in [(1, 100, 7), (2, 37, 300), (1, 203, 513)]:
        kmat = torch.rand(H, N, K, generator=g)
        kmat[-1, 3] = 0.0
        v = torch.rand(H, K, generator=g)
        u = torch.full((H, N), -1.0)
        part = torch.full((H, kt.n_programs(torch.device("cpu"), N), K), 7.0)  # overwritten
        kt.fused_pass(kmat, v, u, part)
        u_ref, acc_ref = torch_pass(kmat, v)
        torch.testing.assert_close(u, u_ref, rtol=1e-5, atol=0)
        assert float(u[-1, 3]) == 0.0
        torch.testing.assert_close(part.sum(1, dtype=torch.float64), acc_ref, rtol=1e-5, atol=0)

    # the whole solve with the kernel (asked for: "auto" keeps numba on the CPU even here),
    # against torch ops
    calls = []
    real = kt.fused_pass
    kt.fused_pass = lambda *a: (calls.append(1), real(*a))[1]
    x = (2.0 * torch.randn(2, 300, 12, generator=g)).log_softmax(-1)
    sinkhorn(x, tol=1e-5)
    assert not calls, "auto ran the interpreted kernel on the CPU"
    tri = sinkhorn(x, tol=1e-5, backend="triton")
    assert calls, "the Triton pass did not run"
    ref = sinkhorn(x, tol=1e-5, backend="torch")
    assert abs(tri.n_iter - ref.n_iter) <= 5, (tri.n_iter, ref.n_iter)  # float32 sums in another order
    assert float((tri.labels == ref.labels).double().mean()) >= 0.99
    torch.testing.assert_close(tri.log_v, ref.log_v, rtol=0, atol=2e-3)
    n = len(calls)
    sinkhorn(x, tol=1e-5, backend="triton", dtype=torch.float64)  # float64: torch ops
    assert len(calls) == n
    print("ok")
    """
)


def test_the_fused_pass_in_the_interpreter_matches_the_torch_pass():
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", INTERPRETED], capture_output=True, text=True,
                         env=env, timeout=600)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]


def test_triton_backend_is_refused_where_it_cannot_run():
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("the interpreter runs Triton on the CPU")
    with pytest.raises(ValueError, match="backend='triton' needs a CUDA tensor"):
        sinkhorn(torch.zeros(10, 3), backend="triton")
    with pytest.raises(ValueError, match="backend must be one of"):
        sinkhorn(torch.zeros(10, 3), backend="cuda")


def test_a_failing_kernel_falls_back_to_torch_ops_with_one_warning(monkeypatch):
    """A GPU Triton cannot compile for must not break the solve: torch ops take over."""
    from otcluster._solver import _ops

    class Broken:
        calls = 0

        @staticmethod
        def n_programs(device, n_rows):
            return 1

        @classmethod
        def fused_pass(cls, *args):
            cls.calls += 1
            raise RuntimeError("no kernel image for this architecture\nmore detail")

    monkeypatch.setattr(_ops, "_TRITON", Broken)  # restored after the test
    monkeypatch.setattr(_ops, "triton_kernel", lambda device, asked=False: _ops._TRITON or None)
    x = (2.0 * torch.randn(2, 300, 12, generator=torch.Generator().manual_seed(3))).log_softmax(-1)
    with pytest.warns(RuntimeWarning, match="fused Triton pass failed on this device "
                                            r"\(RuntimeError: no kernel image for this architecture\)"):
        got = sinkhorn(x, tol=1e-5)
    assert Broken.calls == 1 and _ops._TRITON is False  # not tried again in this process
    want = sinkhorn(x, tol=1e-5, backend="torch")
    assert torch.equal(got.labels, want.labels) and got.n_iter == want.n_iter
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sinkhorn(x, tol=1e-5)  # no second warning
    assert Broken.calls == 1


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(1, 100_003, 300), (3, 20_000, 1000), (1, 4099, 3000)])
def test_the_compiled_pass_matches_the_torch_pass(shape, cuda_device):
    from otcluster._solver import _kernels_triton as kt

    g = torch.Generator(device=cuda_device).manual_seed(0)
    H, N, K = shape
    kmat = torch.rand(H, N, K, device=cuda_device, generator=g)
    v = torch.rand(H, K, device=cuda_device, generator=g)
    u = torch.empty(H, N, device=cuda_device)
    part = torch.empty(H, kt.n_programs(cuda_device, N), K, device=cuda_device)
    kt.fused_pass(kmat, v, u, part)
    s = torch.bmm(kmat.double(), v.double()[:, :, None])[..., 0]
    torch.testing.assert_close(u.double(), 1 / s, rtol=1e-5, atol=0)
    acc = torch.bmm((1 / s)[:, None, :], kmat.double())[:, 0]
    torch.testing.assert_close(part.sum(1, dtype=torch.float64), acc, rtol=1e-5, atol=0)


@pytest.mark.cuda
def test_auto_solves_with_the_kernel_on_cuda_and_agrees_with_torch_ops(cuda_device, monkeypatch):
    from otcluster._solver import _kernels_triton as kt

    calls = []
    real = kt.fused_pass
    monkeypatch.setattr(kt, "fused_pass", lambda *a: (calls.append(1), real(*a))[1])
    g = torch.Generator().manual_seed(1)
    x = (3.0 * torch.randn(50_000, 100, generator=g)).log_softmax(-1).to(cuda_device)
    tri = sinkhorn(x, tol=1e-5)
    assert calls and tri.labels.device.type == "cuda" and bool(tri.converged)
    ref = sinkhorn(x, tol=1e-5, backend="torch")
    assert float((tri.labels == ref.labels).double().mean()) >= 0.999
    torch.testing.assert_close(tri.log_v, ref.log_v, rtol=0, atol=2e-3)
