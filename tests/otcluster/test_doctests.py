"""The Examples sections of the core modules' docstrings run and print what they show."""

from __future__ import annotations

import doctest
import io

import pytest
import torch

from otcluster import _kernels, _labeler, _threads
from otcluster._solver import _api, _priors

MODULES = [_api, _priors, _labeler, _kernels, _threads]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module):
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    assert tests, f"{module.__name__} has no docstring examples"
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        torch.manual_seed(0)  # examples draw random data: make a failure reproducible
        runner.run(test, out=out.write)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, out.getvalue()


def test_public_functions_have_examples():
    """Every public solver entry point shows a runnable example."""
    import otcluster

    missing = [name for name in ("sinkhorn", "make_prior", "SinkhornLabeler", "decorrelated_head_groups")
               if ">>>" not in (getattr(otcluster, name).__doc__ or "")]
    assert not missing, missing
