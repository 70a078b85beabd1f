"""OTKMeans: k-means whose assignment step is a prior-constrained optimal transport.

scikit-learn is a soft dependency: without it, importing this module (``otcluster.OTKMeans``)
raises an ImportError that says what to install.
"""

from __future__ import annotations

import contextlib
import numbers
import warnings
from typing import Any

import numpy as np
import torch

from ._labeler import SinkhornLabeler
from ._solver import PRIOR_KINDS, ConvergenceWarning, SinkhornResult
from ._threads import limit_threads

__all__ = ["OTKMeans"]

try:
    from sklearn.base import (
        BaseEstimator,
        ClassNamePrefixFeaturesOutMixin,
        ClusterMixin,
        TransformerMixin,
    )
    from sklearn.cluster import kmeans_plusplus
    from sklearn.utils import check_random_state
    from sklearn.utils.validation import check_is_fitted
except ImportError as exc:  # scikit-learn is optional: say what to install
    raise ImportError(
        "OTKMeans needs scikit-learn: pip install scikit-learn (it comes with the 'video' "
        "and 'dev' extras: pip install 'otcluster[video]')") from exc

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _sk_validate_data(est, X, **kwargs):
        return est._validate_data(X, **kwargs)


METRICS = ("sqeuclidean", "cosine")
# Up to this many cost entries (n_samples * n_clusters) the assignment uses torch ops.
_SMALL_PROBLEM = 1 << 16
INITS = ("k-means++", "random")


def _few_threads_if_small(numel: int) -> contextlib.AbstractContextManager[Any]:
    """Run torch single-threaded on small problems (restored afterwards).

    Below ~65k cost entries parallel regions cost more than they save, and on an oversubscribed
    machine waiting for the other threads made each small matrix product ~100x slower.
    """
    return limit_threads(1) if numel <= _SMALL_PROBLEM else contextlib.nullcontext()


def _pairwise_cost(x: torch.Tensor, c: torch.Tensor, metric: str) -> torch.Tensor:
    """(N, K) cost: squared Euclidean distance, or ``1 - cos`` for unit-norm rows."""
    if metric == "cosine":
        return (1.0 - x @ c.T).clamp_min_(0.0)
    d = x.pow(2).sum(1, keepdim=True) - 2.0 * (x @ c.T) + c.pow(2).sum(1)
    return d.clamp_min_(0.0)


def _normalize_rows(x: torch.Tensor) -> torch.Tensor:
    norm = x.norm(dim=1, keepdim=True)
    return x / torch.where(norm > 0, norm, torch.ones_like(norm))


def _assigner(n_clusters: int, numel: int, lam: float, prior: Any, permute: bool, tol: float,
              seed: int | None) -> SinkhornLabeler:
    """The labeler of the assignment step (it resolves ``prior``; no warm start)."""
    # Small problems: plain torch ops (single-threaded below torch's grain size) have less
    # per-iteration overhead than the parallel numba kernel.
    backend = "torch" if numel <= _SMALL_PROBLEM else "auto"
    # Over-relaxed Sinkhorn steps without Anderson mixing: with few clusters the mixing stagnated
    # far from the marginals (relative error 0.34 after 1000 passes on a 10 x 3 problem, K=3,
    # memory 5); over-relaxation 1.5 took 745 instead of > 1000 passes on 3 separated blobs.
    return SinkhornLabeler(n_clusters, prior=prior, lam=lam, permute_prior=permute, tol=tol,
                           dtype=torch.float64, anderson=0, overrelax=1.5, warm_start=False,
                           random_state=seed, backend=backend)


def _ot_assign(cost: torch.Tensor, labeler: SinkhornLabeler) -> SinkhornResult:
    """Sinkhorn on the cost divided by its mean (so ``lam`` does not depend on the data scale)."""
    if not bool(torch.isfinite(cost).all()):  # finite X whose squared distances overflow
        raise ValueError(f"X is too large: its squared distances to the cluster centres overflow "
                         f"{cost.dtype} (rescale X, e.g. standardise its features)")
    scale = float(cost.mean())
    log_p = -cost / (scale if scale > 0 else 1.0)
    # Unconverged solves are counted, not warned about one by one (see _warn_unconverged).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = labeler.fit(log_p).result_
    assert res is not None
    return res


def _warn_unconverged(n_bad: int, n_total: int, tol: float) -> None:
    if n_bad:
        warnings.warn(
            f"{n_bad} of {n_total} transport assignments stopped at the Sinkhorn iteration cap "
            f"before reaching sinkhorn_tol={tol:g}; labels come from the partially balanced plan. "
            "Lower lam or raise sinkhorn_tol for exact cluster proportions.",
            ConvergenceWarning, stacklevel=3)


class OTKMeans(ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, BaseEstimator):
    """k-means with an optimal-transport assignment step that enforces cluster sizes.

    Alternates (1) an assignment step: the entropic optimal transport of the samples to the
    prototypes with cluster marginals given by ``prior`` (solved by :func:`otcluster.sinkhorn`,
    with the prior permuted so that the largest prior mass goes to the currently largest
    cluster, paper eq. 4), labels = argmax of the plan; and (2) an update step: each prototype
    becomes the mean of its assigned samples (an empty cluster keeps its prototype).

    **Cost scale.** The assignment solves Sinkhorn on ``log_p = -D / mean(D)``, where ``D`` is the
    (n_samples, n_clusters) matrix of squared Euclidean distances (or cosine distances
    ``1 - cos``) to the current prototypes: the entropic regularisation is ``mean(D) / lam``,
    so ``lam`` is scale-free (multiplying X by a constant changes nothing). Larger ``lam`` gives
    sharper, more k-means-like assignments; smaller ``lam`` gives more weight to the prior.

    Parameters
    ----------
    n_clusters : int, default 8
        Number of clusters K.
    prior : {"uniform", "zipf", "gaussian"} or array-like of shape (n_clusters,), default "uniform"
        Target cluster proportions (summing to 1), known up to a permutation. Strings use
        :func:`otcluster.make_prior` defaults (Zipf exponent 1; Gaussian drawn from
        ``random_state``).
    metric : {"sqeuclidean", "cosine"}, default "sqeuclidean"
        ``"cosine"`` clusters unit-normalised rows with unit-norm prototypes (spherical
        k-means).
    lam : float, default 20.0
        Inverse entropic regularisation of the assignment, relative to the mean cost.
    max_iter : int, default 100
        Maximum number of assignment / update alternations per run.
    tol : float, default 1e-4
        Stop when the labels no longer change or when the squared movement of the prototypes is
        at most ``tol`` times the mean per-feature variance of X (as scikit-learn's KMeans).
    sinkhorn_tol : float, default 1e-3
        Relative L1 marginal error at which each Sinkhorn solve stops.
    n_init : int, default 1
        Runs from different initialisations; the run with the lowest ``inertia_`` is kept.
    init : {"k-means++", "random"} or array-like of shape (n_clusters, n_features), default "k-means++"
        Initial prototypes: k-means++ seeding, random distinct samples, or given (then a single
        run is made whatever ``n_init``).
    random_state : int, RandomState instance or None, default None
        Seed of the initialisation (and of a ``"gaussian"`` prior).
    device : str or torch.device, optional
        Where to compute (e.g. ``"cuda"``); default CPU. Fitted attributes are numpy arrays.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Prototypes (means of the assigned samples; unit-norm with ``metric="cosine"``).
    labels_ : ndarray of shape (n_samples,), int64
        Balanced (optimal-transport) labels of the training samples; ``cluster_centers_`` are
        the means of these clusters.
    inertia_ : float
        Sum of costs (squared distances, or cosine distances) of the training samples to the
        prototype of their label.
    n_iter_ : int
        Alternations run by the kept run.
    prior_ : ndarray of shape (n_clusters,)
        Cluster proportions used by the last assignment, in cluster order (after sorting).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when X has string feature names.

    Notes
    -----
    ``predict(X)`` returns the nearest prototype of each sample, which is per-sample and does not
    enforce the prior: on the training data it can differ from ``labels_``. Use
    ``predict(X, balanced=True)`` to assign a batch with the transport step and ``prior_``.

    The prior is re-sorted at every assignment step from the soft cluster masses of the current
    prototypes. Like k-means, the alternation finds a local optimum, and a non-uniform prior
    makes bad optima more likely: when the initial prototypes split a large class, sorting
    gives the largest prior mass to the wrong cluster. Use ``n_init > 1`` with non-uniform
    priors (the run with the lowest inertia is kept).

    On small problems (n_samples * n_clusters <= 65536) torch runs single-threaded during
    ``fit`` / ``predict`` / ``transform`` (``torch.set_num_threads``, restored afterwards).

    Examples
    --------
    >>> import numpy as np
    >>> from otcluster import OTKMeans
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 1, (60, 2)), rng.normal(8, 1, (40, 2))])
    >>> km = OTKMeans(n_clusters=2, prior=[0.6, 0.4], random_state=0).fit(X)
    >>> np.bincount(km.labels_).tolist()
    [60, 40]
    >>> km.predict([[0.0, 0.0], [8.0, 8.0]]).tolist() == km.labels_[[0, -1]].tolist()
    True
    """

    def __init__(
        self, n_clusters: int = 8, *, prior: Any = "uniform", metric: str = "sqeuclidean",
        lam: float = 20.0, max_iter: int = 100, tol: float = 1e-4, sinkhorn_tol: float = 1e-3,
        n_init: int = 1, init: Any = "k-means++", random_state: Any = None, device: Any = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.prior = prior
        self.metric = metric
        self.lam = lam
        self.max_iter = max_iter
        self.tol = tol
        self.sinkhorn_tol = sinkhorn_tol
        self.n_init = n_init
        self.init = init
        self.random_state = random_state
        self.device = device

    # --- validation ----------------------------------------------------------------------------

    def _check_params(self, n_samples: int, n_features: int) -> None:
        def positive_int(name: str) -> int:
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
            return int(value)

        def positive_float(name: str) -> float:
            value = getattr(self, name)
            if (not isinstance(value, numbers.Real) or isinstance(value, bool)
                    or not np.isfinite(float(value)) or value <= 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
            return float(value)

        k = positive_int("n_clusters")
        positive_int("max_iter")
        positive_int("n_init")
        positive_float("lam")
        positive_float("tol")
        positive_float("sinkhorn_tol")
        if n_samples < k:
            raise ValueError(f"n_samples={n_samples} should be >= n_clusters={k}.")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if isinstance(self.init, str):
            if self.init not in INITS:
                raise ValueError(f"init must be one of {INITS} or an array, got {self.init!r}")
        else:
            shape = np.shape(self.init)
            if shape != (k, n_features):
                raise ValueError(f"init array must have shape (n_clusters, n_features) = "
                                 f"({k}, {n_features}), got {shape}")
            if not np.isfinite(np.asarray(self.init, dtype=np.float64)).all():
                raise ValueError("init array contains NaN or infinite values")
        if isinstance(self.prior, str) and self.prior not in PRIOR_KINDS:
            raise ValueError(f"prior must be one of {PRIOR_KINDS} or an array, got {self.prior!r}")

    def _labeler(self, n_samples: int, rs: np.random.RandomState) -> SinkhornLabeler | None:
        """The assignment step's labeler, which owns the prior (None for one cluster)."""
        k = int(self.n_clusters)
        if k == 1:
            return None
        # a named prior's draw is seeded from random_state (drawn here, before the init)
        named = isinstance(self.prior, str) and self.prior != "uniform"
        seed = int(rs.randint(2**31 - 1)) if named else None
        lab = _assigner(k, n_samples * k, float(self.lam), self.prior, True,
                        float(self.sinkhorn_tol), seed)
        try:
            lab._fixed_prior()  # validate (or draw) it now
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid prior for n_clusters={k}: {exc}") from None
        return lab

    def _device(self) -> torch.device:
        return torch.device("cpu" if self.device is None else self.device)

    def _to_tensor(self, X: np.ndarray) -> torch.Tensor:
        x = torch.tensor(X, device=self._device())  # copies: X may be a read-only memmap
        return _normalize_rows(x) if self.metric == "cosine" else x

    # --- fitting -------------------------------------------------------------------------------

    def _init_centers(self, X: np.ndarray, x: torch.Tensor, rs: np.random.RandomState
                      ) -> torch.Tensor:
        k = int(self.n_clusters)
        if not isinstance(self.init, str):
            c = torch.as_tensor(np.asarray(self.init, dtype=X.dtype), device=x.device)
        elif self.init == "random":
            c = x[torch.as_tensor(rs.choice(X.shape[0], size=k, replace=False))]
        else:
            xs = x.cpu().numpy()
            idx = kmeans_plusplus(xs, k, random_state=rs)[1]
            c = x[torch.as_tensor(idx)]
        c = c.clone()
        return _normalize_rows(c) if self.metric == "cosine" else c

    def _update_centers(self, x: torch.Tensor, labels: torch.Tensor, old: torch.Tensor
                        ) -> torch.Tensor:
        k = old.shape[0]
        sums = torch.zeros_like(old).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], old)
        return _normalize_rows(new) if self.metric == "cosine" else new

    def _single_run(self, X: np.ndarray, x: torch.Tensor, labeler: SinkhornLabeler | None,
                    rs: np.random.RandomState, tol_abs: float, stats: list[int]):
        """One alternation from one initialisation; ``stats`` counts [solves, unconverged]."""
        centers = self._init_centers(X, x, rs)
        k = centers.shape[0]
        labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        r = torch.full((k,), 1.0 / k, dtype=torch.float64)
        n_iter = 0
        for n_iter in range(1, int(self.max_iter) + 1):  # noqa: B007 - n_iter used after
            if labeler is None:
                new_labels = torch.zeros_like(labels)
            else:
                cost = _pairwise_cost(x, centers, self.metric)
                # No warm start: each solve re-sorts the prior by the soft cluster masses of
                # the current prototypes (paper eq. 4), so the ranks can still change.
                res = _ot_assign(cost, labeler)
                stats[0] += 1
                stats[1] += int(not bool(res.converged))
                new_labels, r = res.labels.to(x.device), res.prior
            new_centers = self._update_centers(x, new_labels, centers)
            shift = float((new_centers - centers).pow(2).sum())
            same = n_iter > 1 and torch.equal(new_labels, labels)
            labels, centers = new_labels, new_centers
            if same or shift <= tol_abs:
                break
        cost = _pairwise_cost(x, centers, self.metric)
        inertia = float(cost.gather(1, labels[:, None]).sum())
        return labels, centers, inertia, n_iter, r

    def fit(self, X: Any, y: Any = None) -> OTKMeans:
        """Cluster X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training samples (dense; converted to float64 unless float32).
        y : Ignored
            Present for API consistency.

        Returns
        -------
        self : OTKMeans
            The fitted estimator.
        """
        X = _sk_validate_data(self, X, dtype=[np.float64, np.float32], copy=False)
        self._check_params(X.shape[0], X.shape[1])
        rs = check_random_state(self.random_state)
        labeler = self._labeler(X.shape[0], rs)
        x = self._to_tensor(X)
        tol_abs = float(self.tol) * float(np.mean(np.var(X, axis=0))) if X.shape[0] > 1 else 0.0
        n_runs = int(self.n_init) if isinstance(self.init, str) else 1
        best = None
        stats = [0, 0]
        with _few_threads_if_small(X.shape[0] * int(self.n_clusters)):
            for _ in range(n_runs):
                run = self._single_run(X, x, labeler, rs, tol_abs, stats)
                if best is None or run[2] < best[2]:
                    best = run
        _warn_unconverged(stats[1], stats[0], float(self.sinkhorn_tol))
        assert best is not None  # n_runs >= 1
        labels, centers, inertia, n_iter, r = best
        self.labels_ = labels.cpu().numpy().astype(np.int64)
        self.cluster_centers_ = centers.cpu().numpy().astype(X.dtype, copy=False)
        self.inertia_ = inertia
        self.n_iter_ = int(n_iter)
        self.prior_ = r.cpu().numpy().astype(np.float64)
        self._n_features_out = self.cluster_centers_.shape[0]
        return self

    # --- inference -----------------------------------------------------------------------------

    def _cost_to_centers(self, X: Any) -> tuple[np.ndarray, torch.Tensor]:
        check_is_fitted(self)
        X = _sk_validate_data(self, X, dtype=[np.float64, np.float32], reset=False, copy=False)
        x = self._to_tensor(X)
        c = torch.as_tensor(self.cluster_centers_, device=x.device).to(x.dtype)
        with _few_threads_if_small(x.shape[0] * c.shape[0]):
            return X, _pairwise_cost(x, c, self.metric)

    def predict(self, X: Any, balanced: bool = False) -> np.ndarray:
        """Assign samples to clusters.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to assign.
        balanced : bool, default False
            False: the nearest prototype of each sample (per-sample, ignores the prior).
            True: the transport assignment of the whole batch with cluster proportions
            ``prior_`` (not re-sorted), the cost scaled by its mean over this batch, as in
            ``fit``. Needs ``n_samples >= n_clusters``.

        Returns
        -------
        labels : ndarray of shape (n_samples,), int64
        """
        X, cost = self._cost_to_centers(X)
        k = cost.shape[1]
        if not balanced or k == 1:
            return cost.argmin(1).cpu().numpy().astype(np.int64)
        if X.shape[0] < k:
            raise ValueError(f"balanced prediction needs n_samples={X.shape[0]} >= "
                             f"n_clusters={k}")
        lab = _assigner(k, cost.numel(), float(self.lam), self.prior_, False,
                        float(self.sinkhorn_tol), None)
        with _few_threads_if_small(cost.numel()):
            res = _ot_assign(cost, lab)
        _warn_unconverged(int(not bool(res.converged)), 1, float(self.sinkhorn_tol))
        return res.labels.cpu().numpy().astype(np.int64)

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit and return ``labels_`` (the balanced labels of the training samples).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        labels : ndarray of shape (n_samples,), int64
        """
        return self.fit(X).labels_

    def transform(self, X: Any) -> np.ndarray:
        """Distances of the samples to the prototypes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        distances : ndarray of shape (n_samples, n_clusters)
            Euclidean distances (``metric="sqeuclidean"``, as scikit-learn's KMeans) or cosine
            distances ``1 - cos`` (``metric="cosine"``), in the dtype of X (float32 or float64).
        """
        X, cost = self._cost_to_centers(X)
        out = cost.sqrt() if self.metric == "sqeuclidean" else cost
        return out.cpu().numpy().astype(X.dtype, copy=False)
