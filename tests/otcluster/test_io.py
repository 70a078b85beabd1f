"""Tests of the one atomic write (otcluster._io) and the one thread limiter (otcluster._threads)."""

from __future__ import annotations

import os

import pytest
import torch

from otcluster._io import atomic_open, atomic_torch_save, atomic_write_bytes, atomic_write_text
from otcluster._threads import limit_threads


def test_writes_text_bytes_and_torch_files(tmp_path):
    assert atomic_write_text(tmp_path / "a" / "t.txt", "é\r\nx") == tmp_path / "a" / "t.txt"
    assert (tmp_path / "a" / "t.txt").read_bytes() == "é\r\nx".encode()  # no newline translation
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    atomic_torch_save({"x": torch.arange(3)}, tmp_path / "c.pt")
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["x"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b.bin", "c.pt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = atomic_write_text(tmp_path / "t.txt", "old")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(path, "w") as f:
        f.write("new, half written")
        raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]
    with pytest.raises(ValueError, match="mode must be"):
        with atomic_open(path, "a"):
            pass


def test_the_file_and_its_folder_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync file")
        real_fsync(fd)

    def replace(a, b):
        events.append("replace")
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write_bytes(tmp_path / "x", b"1")
    if os.path.isdir("/proc/self/fd"):
        assert events == ["fsync file", "replace", "fsync dir"]
    else:  # pragma: no cover - no /proc: only the order of the calls is known
        assert events[1] == "replace" and len(events) == 3


def test_limit_threads_restores_the_thread_count():
    before = torch.get_num_threads()
    with limit_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="positive integer"):
        with limit_threads(0):
            pass


#: Fresh processes in which the first numba kernel runs after torch's thread count was set to 1:
#: by ``limit_threads`` (the project's numba solver; someone else's numba kernel) or by the user
#: (the solver; the alignment's kernels). Each prints torch's count before and after.
_FIRST_NUMBA_KERNEL = {
    "solver inside limit_threads": """
from otcluster._threads import limit_threads
with limit_threads(1):
    before = torch.get_num_threads()
    sinkhorn(torch.randn(3000, 20).log_softmax(-1), backend="numba")
    print(before, torch.get_num_threads())
""",
    "own numba kernel inside limit_threads": """
import numba, numpy as np
from otcluster._threads import limit_threads

@numba.njit(parallel=True)
def total(a):
    s = 0.0
    for i in numba.prange(a.shape[0]):
        s += a[i]
    return s

with limit_threads(1):
    before = torch.get_num_threads()
    total(np.ones(1000))
    print(before, torch.get_num_threads())
""",
    "solver after torch.set_num_threads(1)": """
torch.set_num_threads(1)
sinkhorn(torch.randn(3000, 20).log_softmax(-1), backend="numba")
print(1, torch.get_num_threads())
""",
    "alignment after torch.set_num_threads(1)": """
from otcluster import alignment_cost_matrix
torch.set_num_threads(1)
p = torch.randn(500, 8).softmax(-1)
alignment_cost_matrix(p, p, backend="numba")
print(1, torch.get_num_threads())
""",
}


@pytest.mark.parametrize("case", sorted(_FIRST_NUMBA_KERNEL))
def test_torch_keeps_its_thread_count_when_numba_starts_its_pool(case):
    # numba's OpenMP threading layer sets the process's OpenMP thread count when its pool
    # starts. Started inside limit_threads(1), it undid the limit for every torch op after it (a
    # training.threads = 1 run trained on all cores from its first clustering on).
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "2", "NUMBA_NUM_THREADS": "2"}
    script = "import torch\nfrom otcluster import sinkhorn\n" + _FIRST_NUMBA_KERNEL[case]
    proc = subprocess.run([sys.executable, "-c", script], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["1", "1"]
