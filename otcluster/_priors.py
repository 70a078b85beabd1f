"""Moved to :mod:`otcluster._solver._priors` (kept so old private imports keep working)."""

from ._solver._priors import PRIOR_KINDS, make_prior, sort_prior, validate_prior

__all__ = ["make_prior", "validate_prior", "sort_prior", "PRIOR_KINDS"]
