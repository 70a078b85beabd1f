"""Reproducibility across thread counts (issue 10 item 6, solver part): the same problem gives
bit-identical labels and potentials with 1, 2 or 4 numba / torch threads.

Each thread count runs in a fresh interpreter (numba's thread count is fixed per process by
NUMBA_NUM_THREADS). Covered: the dense numba kernels (float32, float64, a Zipf prior sorted onto
the clusters, semi-relaxed columns, tied rows rounded by the plan's masses, 2 heads) and the
memory-bounded feature path (torch matmul and sums: identical here, but torch does not promise
it; with ``MKL_CBWR=COMPATIBLE``, the portable kernels' MKL branch, it differs, so this test
runs MKL on its own branch). The dense torch back-end (CUDA, or CPU without numba) is not
covered: ``torch.bmm`` on CPU (MKL / OpenBLAS) does not promise a summation order independent of
the thread count (it gave identical digests for 1, 2 and 4 threads on this machine too). Across
CPUs: numba compiles for the host; the five digests here are the same compiled for AVX2
(``NUMBA_CPU_NAME=haswell``) and for this AVX-512 CPU, and differ for float64 without SIMD
(``generic``) (docs/video.md, "Reproducibility").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import hashlib, json, os, torch
torch.set_num_threads(int(os.environ["NUMBA_NUM_THREADS"]))
from otcluster import make_prior, sinkhorn, sinkhorn_features

def digest(res):
    h = hashlib.sha256()
    for t in (res.labels, res.log_v, res.log_u):
        h.update(t.contiguous().cpu().numpy().tobytes())
    return h.hexdigest()

g = torch.Generator().manual_seed(0)
x = (3 * torch.randn(2, 6000, 40, generator=g)).log_softmax(-1)
r = make_prior("zipf", 40, n_heads=2)
tied = x.clone()
tied[:, :2000] = tied[:, :1]
f, w = torch.randn(6000, 16, generator=g), torch.randn(2, 40, 16, generator=g)
out = {
    "float32": digest(sinkhorn(x, prior=r)),
    "float64": digest(sinkhorn(x, prior=r, dtype=torch.float64)),
    "relaxed": digest(sinkhorn(x, prior=r, tau=1.0)),
    "tied rows": digest(sinkhorn(tied, prior=r)),
    "features": digest(sinkhorn_features(f, w, prior=r, block_rows=1000)),
}
print(json.dumps(out))
"""


def run(threads: int) -> dict:
    env = {**{k: v for k, v in os.environ.items() if k != "MKL_CBWR"},  # MKL's own branch
           "NUMBA_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def digests() -> dict:
    return {t: run(t) for t in (1, 2, 4)}


@pytest.mark.parametrize("case", ["float32", "float64", "relaxed", "tied rows", "features"])
def test_bit_identical_across_thread_counts(digests, case):
    assert digests[1][case] == digests[2][case] == digests[4][case]


def test_chunking_does_not_depend_on_the_thread_count():
    import numba

    from otcluster._solver import _kernels_numba

    before = numba.get_num_threads()
    try:
        sizes = []
        for t in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(t)
            sizes.append([_kernels_numba.n_chunks(n) for n in (1, 300, 10_000, 2_000_000)])
        assert all(s == sizes[0] for s in sizes)
        assert sizes[0] == [1, 2, 40, 64]
    finally:
        numba.set_num_threads(before)
