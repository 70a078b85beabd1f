"""Portable CPU kernels: the same floats on any x86_64 CPU, not only on any thread count.

torch picks its CPU kernels by instruction set. Measured on an AVX-512 CPU against the same CPU
limited to AVX2 (``docs/video.md``, "Reproducibility"): oneDNN's convolutions round differently
(a tiny training run ends with other weights and other labels); ATen's own kernels, numba's
solver kernels and MKL's default branch on that CPU give bit-identical results. MKL picks its
branch by CPU vendor and instruction set too, and only its ``COMPATIBLE`` branch is the same code
on Intel and AMD CPUs. :func:`portable_kernels` therefore switches oneDNN off and runs MKL in
conditional-numerical-reproducibility mode on the ``COMPATIBLE`` branch.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import tempfile
import warnings
from collections.abc import Iterator

import torch

__all__ = ["PORTABLE_MKL_BRANCH", "mkl_cnr_mode", "portable_kernels"]

#: MKL's code branch that runs the same instructions on every x86_64 CPU (``MKL_CBWR``).
PORTABLE_MKL_BRANCH = "COMPATIBLE"


@functools.cache
def mkl_cnr_mode() -> str | None:
    """MKL's conditional-numerical-reproducibility mode, as MKL itself reports it.

    ``"OFF"`` (MKL picks its kernels per CPU), ``"COMPATIBLE"``, ``"AUTO"`` (fixed reductions,
    kernels still per CPU), ...; ``None`` when torch has no MKL or MKL did not say. MKL reads
    ``MKL_CBWR`` once, at its first call: calling this starts MKL, and the answer cannot change
    afterwards, so it is asked once per process.
    """
    if not torch.backends.mkl.is_available():
        return None
    libc = ctypes.CDLL(None)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(1)
        libc.fflush(None)
        os.dup2(tmp.fileno(), 1)
        try:
            with torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON):
                a = torch.ones(64, 64)
                torch.mm(a, a)
            libc.fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        tmp.seek(0)
        found = re.search(rb"CNR:(\S+)", tmp.read())
    return found.group(1).decode() if found else None


@contextlib.contextmanager
def portable_kernels() -> Iterator[None]:
    """Run the block on kernels that round the same way on any x86_64 CPU with AVX2.

    oneDNN is switched off (convolutions fall back to ATen's own kernels and MKL matrix
    products, about 2.4x slower for the ``cpu`` preset's encoders on one thread) and
    ``MKL_CBWR`` is set to ``COMPATIBLE`` unless the environment already sets it. MKL reads that
    variable at its first call: if MKL was already used in this process (or ``MKL_CBWR`` names
    another branch), a warning says that its products may still round differently on another
    CPU; set ``MKL_CBWR=COMPATIBLE`` before starting Python to be sure. The ``COMPATIBLE``
    branch splits its sums by thread (and so do ATen's convolution gradients): combine with one
    torch thread for results that depend on neither the CPU nor the thread count.

    Examples
    --------
    >>> import torch
    >>> with portable_kernels():
    ...     torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    False
    """
    ours = "MKL_CBWR" not in os.environ
    if ours:
        os.environ["MKL_CBWR"] = PORTABLE_MKL_BRANCH
    try:
        mode = mkl_cnr_mode()  # starts MKL, which reads MKL_CBWR now or never
    finally:
        if ours:  # not inherited by processes started later (they choose their own kernels)
            del os.environ["MKL_CBWR"]
    if mode is not None and mode.split(",")[0] != PORTABLE_MKL_BRANCH:
        warnings.warn(
            f"portable kernels: MKL runs with CNR mode {mode!r}, not {PORTABLE_MKL_BRANCH!r} "
            "(MKL was used before MKL_CBWR could be set, or MKL_CBWR names another branch), so "
            "its matrix products may round differently on another CPU; set "
            f"MKL_CBWR={PORTABLE_MKL_BRANCH} before starting Python",
            RuntimeWarning, stacklevel=3,
        )
    mkldnn = torch.backends.mkldnn
    was_enabled = bool(mkldnn.enabled)
    mkldnn.enabled = False  # type: ignore[assignment]  # (torch types it as its descriptor)
    try:
        yield
    finally:
        mkldnn.enabled = was_enabled  # type: ignore[assignment]
