"""Moved to the solver package :mod:`otcluster._solver` (kept so old private imports work)."""

from ._solver import ConvergenceWarning, SinkhornResult, sinkhorn, sinkhorn_features

__all__ = ["SinkhornResult", "sinkhorn", "sinkhorn_features", "ConvergenceWarning"]
