"""Shared test configuration: hypothesis profiles, the ``cuda`` marker, seeded generators.

Generic on purpose: helpers specific to one module live in that module's test file.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings


def _pin_installed_packages(*names: str) -> None:
    """Bind the installed packages before test folders named like them can shadow them.

    pytest puts ``tests/`` on ``sys.path`` (for this file and top-level test files); the folders
    ``tests/otcluster`` and ``tests/otcluster_video`` have no ``__init__.py``, so with the
    ``pytest`` console script (no repository root on ``sys.path``) ``import otcluster`` would
    find them as empty namespace packages. Resolve each package with ``tests/`` hidden and
    register it. Executed at once, not lazily: a lazily loaded parent package ran its
    ``__init__`` in the middle of a test file's first ``import otcluster._private.module`` and
    that module was then imported twice (two different classes of one name).
    """
    here = os.path.dirname(os.path.abspath(__file__))
    saved = list(sys.path)
    sys.path[:] = [p for p in saved if os.path.abspath(p or os.curdir) != here]
    try:
        for name in names:
            if name in sys.modules:
                continue
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None:
                continue
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except ImportError:  # e.g. the video extras missing: its tests report it themselves
                del sys.modules[name]
    finally:
        sys.path[:] = saved


_pin_installed_packages("otcluster", "otcluster_video")

# "dev" (default): random examples, no per-example deadline (the first call of a numba kernel can
# compile, and the CI machine is shared). "ci": the same examples on every run.
settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``cuda`` cleanly when no CUDA device is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_global_rngs():
    """Every test starts from the same global torch / numpy RNG state (reproducible failures)."""
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 - legacy global state, seeded for code that uses it
    yield


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy generator."""
    return np.random.default_rng(0)


@pytest.fixture
def torch_gen() -> torch.Generator:
    """A seeded CPU torch generator."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def cuda_device() -> torch.device:
    """The CUDA device; skips the test when there is none."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda")


@pytest.fixture
def serial_numba():
    """Run numba kernels on one thread for the duration of a test.

    For tiny problems numba's OpenMP pool dominates: on a shared 2-core machine each parallel
    launch waits for a descheduled worker, ~5 ms per Sinkhorn pass on a 60 x 6 problem against
    ~0.1 ms serially. Tests of small instances use this; tests of the parallel path do not.
    """
    numba = pytest.importorskip("numba")
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


@pytest.fixture(scope="session")
def load_benchmark():
    """A loader of ``benchmarks/<name>.py`` (a folder of scripts, not a package) as a module."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
