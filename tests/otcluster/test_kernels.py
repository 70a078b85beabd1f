"""Portable kernels (issue 10 item 6, across CPUs): oneDNN off and MKL on its COMPATIBLE branch.

What they buy end to end (the same tiny training run on an emulated AVX2 CPU and on this one) is
tested in ``tests/otcluster_video/test_demo.py``; here the mechanism: the switch, its undoing, MKL's
reported mode, and the warning when MKL was started before the branch could be chosen.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from otcluster import mkl_cnr_mode, portable_kernels
from otcluster._kernels import PORTABLE_MKL_BRANCH

needs_mkl = pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="torch without MKL")


def test_portable_kernels_switch_onednn_off_and_back():
    before = torch.backends.mkldnn.enabled
    with _quiet(), portable_kernels():
        assert torch.backends.mkldnn.enabled is False
    assert torch.backends.mkldnn.enabled == before
    with pytest.raises(KeyError), _quiet(), portable_kernels():
        raise KeyError("inside")
    assert torch.backends.mkldnn.enabled == before  # restored after an error too


def test_portable_convolutions_compute_the_same_function():
    # Another summation order, not another result: a 3-D convolution and its gradients agree
    # with torch's default kernels to float32 rounding.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 16, 16, generator=g, requires_grad=True)
    w = torch.randn(8, 3, 3, 3, 3, generator=g, requires_grad=True)

    def run() -> tuple[torch.Tensor, ...]:
        y = F.conv3d(x, w, padding=1)
        gx, gw = torch.autograd.grad(y.square().sum(), (x, w))
        return y.detach(), gx, gw

    fast = run()
    with _quiet(), portable_kernels():
        portable = run()
    for a, b in zip(fast, portable):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-3)


_FRESH = r"""
import json, warnings, torch
from otcluster import mkl_cnr_mode, portable_kernels
if {use_mkl_first}:
    torch.ones(64, 64) @ torch.ones(64, 64)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with portable_kernels():
        mode = mkl_cnr_mode()
print(json.dumps({{"mode": mode, "warnings": [str(w.message) for w in caught]}}))
"""


def _fresh(use_mkl_first: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    proc = subprocess.run([sys.executable, "-c", _FRESH.format(use_mkl_first=use_mkl_first)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_mkl
def test_mkl_runs_the_compatible_branch_when_entered_before_mkl_starts():
    out = _fresh(use_mkl_first=False)
    assert out["mode"] == PORTABLE_MKL_BRANCH
    assert out["warnings"] == []


@needs_mkl
def test_a_warning_names_the_fix_when_mkl_started_first():
    out = _fresh(use_mkl_first=True)
    assert out["mode"] == "OFF"  # MKL read MKL_CBWR before portable_kernels could set it
    assert len(out["warnings"]) == 1
    assert f"MKL_CBWR={PORTABLE_MKL_BRANCH} before starting Python" in out["warnings"][0]


@needs_mkl
def test_mkl_cnr_mode_reads_what_mkl_reports_and_the_environment_is_left_alone():
    # This process started MKL long ago, in whatever mode the environment said then; asking
    # twice gives the same answer, and portable_kernels() leaves no MKL_CBWR behind for the
    # processes started later (they choose their own kernels).
    mode = mkl_cnr_mode()
    assert mode is not None and mode.split(",")[0] in {"OFF", "AUTO", PORTABLE_MKL_BRANCH}
    assert mkl_cnr_mode() == mode
    before = os.environ.get("MKL_CBWR")
    with _quiet(), portable_kernels():
        pass
    assert os.environ.get("MKL_CBWR") == before


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """This process started MKL long ago: portable_kernels warns about it (tested above)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
