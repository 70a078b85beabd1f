"""The Sinkhorn-Knopp iteration on (H, K) column potentials (paper eq. 3).

Solves ``min_Q <Q, -log P> + (1/lam) KL(Q || r c^T)`` over plans with row sums ``c = 1/N``
and column sums ``r`` (the cluster prior). The solution is ``Q = diag(u) exp(lam log P) diag(v)``;
labels are ``argmax_k Q_ik``. A back-end (``_ops``) does the N x K work; everything here is
(H, K) work on float64 vectors. Inputs are assumed validated (``_options``, ``_api``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from .._distributed import all_reduce_sum
from ._anderson import Accelerator
from ._options import Problem, SolverOptions
from ._priors import sort_prior
from ._relaxed import column_error, damping, residual
from ._result import ConvergenceWarning, SinkhornResult
from ._rounding import round_plan

__all__ = ["solve"]


_allreduce = all_reduce_sum  # the project's one all-reduce (otcluster._distributed)


def _broadcast_prior(prior: torch.Tensor, group, device) -> torch.Tensor:
    """The prior must be identical on every rank (a Gaussian draw, a user vector): take rank 0's."""
    import torch.distributed as dist

    prior_d = prior.to(device)
    dist.broadcast(prior_d, src=dist.get_global_rank(group, 0) if group is not dist.group.WORLD else 0,
                   group=group)
    return prior_d.cpu()


# Largest row shift (max_k lam * log_p_ik + g_k) the float32 kernel takes. The numba kernel
# subtracts the shift with fast-math fused multiply-adds, whose rounding (|shift| * 1.1e-16)
# must stay below a fraction of a nat (0.1 here): at shifts ~3e21 (log_p * 1e20, lam=20) a
# solve died in an OverflowError, at ~3e101 every entry of a row flushed to 0 and the plan was
# NaN after one pass (with a warning that blamed max_iter).
_MAX_SHIFT_F32 = 1e15


def _non_finite_error(ops, lam: float) -> ValueError:
    """The error for non-finite kernel entries: bad input, or finite input that overflowed."""
    x = getattr(ops, "x", None)  # dense back-ends keep the input (torch or numpy)
    if x is None:  # memory-bounded: the inputs were checked finite at the boundary
        return ValueError(f"lam * log_softmax(features @ weight.T + bias) overflows "
                          f"{ops.kmat_dtype} ({ops.n_bad} entries); use dtype=torch.float64 or "
                          "rescale the features")
    xt = torch.as_tensor(x)
    if bool(torch.isfinite(xt).all()):
        amax = float(xt.abs().max())
        return ValueError(f"lam * log_p overflows the {ops.kmat_dtype} kernel (|log_p| up to "
                          f"{amax:.3g}, lam={lam:g}); use dtype=torch.float64, or rescale log_p")
    return ValueError(f"log_p contains non-finite values ({ops.n_bad} entries NaN or inf)")


def _check_shift(ops, lam: float) -> None:
    """Refuse a problem whose row shifts the float32 kernel cannot represent (see above)."""
    rowmax = getattr(ops, "rowmax", None)
    if ops.kmat_dtype != torch.float32 or rowmax is None or ops.n_bad:
        return
    shift = float(rowmax.abs().max())
    if shift > _MAX_SHIFT_F32:
        raise ValueError(
            f"lam * log_p is too large for the float32 kernel: row maxima reach {shift:.3g} "
            f"(limit {_MAX_SHIFT_F32:g}, lam={lam:g}); use dtype=torch.float64, or rescale "
            "log_p (subtracting each row's maximum does not change the labels)")


class _State:
    """Potentials of one solve: ``g`` absorbed into the back-end's kernel, ``logv`` on top."""

    def __init__(self, ops, g0: torch.Tensor | None, H: int, K: int, c: float, lam: float, group,
                 device):
        self.ops, self.c, self.lam, self.group, self.device = ops, c, lam, group, device
        self.thresh = 30.0 if ops.kmat_dtype == torch.float32 else 200.0
        self.g = torch.zeros((H, K), dtype=torch.float64) if g0 is None else g0.clone()
        ops.build(self.g.to(device))
        _check_shift(ops, lam)
        self.logv = torch.zeros((H, K), dtype=torch.float64)

    def measure(self) -> torch.Tensor:
        """One pass over the data: the column masses of the row-normalised plan, (H, K)."""
        ops, logv = self.ops, self.logv
        acc = _allreduce(ops.fused(torch.exp(logv).to(self.device)).to(self.device), self.group).cpu()
        if ops.n_bad:
            raise _non_finite_error(ops, self.lam)
        return (self.c * acc * torch.exp(logv)).clamp_min(1e-300)

    def prior_free_mass(self) -> torch.Tensor:
        """One pass: the column masses of the row-normalised kernel without potentials (what the
        data alone gives each cluster), (H, K). Called before the first move (``logv`` is 0).

        The kernel is rebuilt without potentials (two builds), whatever their size: undoing them
        with ``v = exp(-g)`` where they were small was cheaper, but chose its branch by the
        largest potential of all heads solved together, so one head clustered alone (the
        memory-bounded path) or with others (the dense one) got different flushed entries and
        labels (1 of 300 differed)."""
        self.ops.build(torch.zeros_like(self.g).to(self.device))
        try:
            return self.measure()
        finally:
            self.ops.build(self.g.to(self.device))

    def move(self, new: torch.Tensor) -> None:
        """Set the centred potentials to ``new``, absorbing them into the kernel when large."""
        new = new - new.mean(-1, keepdim=True)  # potentials are defined up to a constant
        self.logv = new - self.g
        if self.ops.absorb_every_pass or self.logv.abs().amax() > self.thresh:
            # absorb the scalings into the kernel (log-domain stabilisation)
            self.g = new
            self.logv = torch.zeros_like(self.g)
            self.ops.build(self.g.to(self.device))


def solve(ops, problem: Problem, opts: SolverOptions, *, device: Any,
          return_plan: bool) -> SinkhornResult:
    """The Sinkhorn-Knopp loop on (H, K) vectors; ``ops`` (see ``_ops``) does the N x K work."""
    H, N, K = ops.shape
    group, tol, max_iter = opts.process_group, opts.tol, opts.max_iter
    n_total = _allreduce(torch.tensor([float(N)], dtype=torch.float64, device=device), group)
    c = 1.0 / float(n_total.item())

    st = _State(ops, problem.g0, H, K, c, opts.lam, group, device)
    prior = problem.prior if group is None else _broadcast_prior(problem.prior, group, device)

    # A column whose kernel entries are all flushed to 0 (mass 0) says only that its potential is
    # far too low, not how far: its step is capped at a probe that keeps every entry of that column
    # below its row's maximum (the kernel flushes entries below e^-55 of the row max in float32,
    # e^-600 in float64). An uncapped step (log r - log 1e-300 ~ 690) overshot, emptied every other
    # column, and the potentials ping-ponged and diverged (lam=1000, or a column 1000 below the rest).
    probe = 40.0 if ops.kmat_dtype == torch.float32 else 400.0

    sort = problem.permute and not problem.uniform
    # eq. 4 ranks the clusters by the mass the data gives them. With a warm start the first
    # pass measures the previous solve's plan, i.e. the previous clustering's sorted prior:
    # the permutation drawn at the first clustering (a random network) was never revised
    # (Zipf digits: NMI 0.495 +- 0.034 vs 0.560 +- 0.041 ranked by the prior-free masses).
    # The prior-free pass comes first: the back-ends keep the row scalings of their last pass for
    # the labels, which must be those of the warm-started plan (labels of a solve that was
    # converged from its warm start came from the prior-free pass: 57 % of them differed from the
    # memory-bounded path's)
    free = st.prior_free_mass() if sort and problem.g0 is not None else None
    mass = st.measure()
    n_iter = 1 + (free is not None)
    r = sort_prior(prior, mass if free is None else free) if sort else prior
    logr = torch.log(r.clamp_min(1e-300))
    # lam-scaling (opts.scaling_stages): the prior was sorted at lam above, as without it; the
    # stages at lam / 2**s ... lam / 2 then each run to tol from the previous one's potentials,
    # each within its share of the passes left (a head stuck at a stage used up the budget of
    # every later stage: 2 heads, N=8, K=2; the other head, 220 passes alone, was not solved)
    for s in range(opts.scaling_stages, 0, -1):
        share = (max_iter - n_iter) // (s + 1)
        if share < 2:
            break
        mass = _rescale(st, opts.lam / 2 ** s)
        mass, _, n_iter = _iterate(st, mass, logr, r, damping(opts.tau, st.lam), tol,
                                   n_iter + share, n_iter + 1, opts, probe)
    if st.lam != opts.lam:
        mass = _rescale(st, opts.lam)
        n_iter += 1
    mass, err, n_iter = _iterate(st, mass, logr, r, opts.phi, tol, max_iter, n_iter, opts, probe)
    return _finish(st, r, err, n_iter, opts, return_plan, problem.batched, mass)


def _rescale(st: _State, lam: float) -> torch.Tensor:
    """Move ``st`` to ``lam``: the potentials scale with it (``lam * log_p + g``); one pass."""
    pot = (st.g + st.logv) * (lam / st.lam)
    st.lam = st.ops.lam = lam
    st.g, st.logv = pot - pot.mean(-1, keepdim=True), torch.zeros_like(pot)
    st.ops.build(st.g.to(st.device))
    return st.measure()


def _iterate(st: _State, mass: torch.Tensor, logr: torch.Tensor, r: torch.Tensor, phi: float,
             tol: float, max_iter: int, n_iter: int, opts: SolverOptions, probe: float
             ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Sinkhorn passes (Anderson-accelerated) at ``st.lam`` until every head is within ``tol``
    or ``n_iter`` reaches ``max_iter``; returns the last column masses, errors and ``n_iter``."""
    H, K = st.g.shape
    err = column_error(mass, logr, r, st.g + st.logv, phi)
    best = err.clone()
    # centred potentials have K - 1 degrees of freedom: a longer memory makes the secant system
    # singular and the mixing stalls (seen: K=3, memory 5, error stuck at 0.34 for 1000 passes)
    acc = Accelerator(H, min(opts.anderson, max(K - 2, 0)))

    while bool((err > tol).any()) and n_iter < max_iter:
        pot = st.g + st.logv
        f = opts.overrelax * residual(mass, logr, pot, phi)  # of the column update
        empty = mass <= 1e-300
        if bool(empty.any()):  # probe steps are not fixed-point residuals: no acceleration
            f = torch.where(empty, f.clamp_max(probe), f)
            acc.forget()
            new, accelerated = pot + f, False
        else:
            new, accelerated = acc.propose(pot, f, err, tol)
        plain = pot + f  # the plain Sinkhorn step, kept to replace a rejected accelerated one
        # a head already within tol stays where it is while the others go on: stepping it (an
        # extrapolation from a zero residual is noise, up to the trust radius) knocked it out of
        # tol and restarted the shared memory at every other pass (seen: 3 heads, N=34, K=7,
        # lam=45: one head at error 0.0104 after 5000 passes; alone: 27)
        new = torch.where((err <= tol)[:, None], pot, new)
        st.move(new)
        mass = st.measure()
        n_iter += 1
        err = column_error(mass, logr, r, st.g + st.logv, phi)
        # heads already within tol are left out: their error is rounding noise (1e-16 against a
        # best of 1e-16), which restarted the memory at every pass and stalled the other heads
        # (seen: 3 heads, N=7, K=6, one head stuck at error 0.0136 for 5000 passes; alone: 148)
        worse = (err > 2.0 * best) & (err > tol)
        if bool(worse.any()):  # safeguard: restart the acceleration's memory ...
            acc.reject(worse)
            if accelerated and n_iter < max_iter:
                # ... and undo the accelerated step where it made things worse: take the plain
                # step from where that head was. Keeping the bad iterate could land on a plateau
                # of nearly hard assignments, from which each later extrapolation jumped again
                # (seen: N=12, K=3, lam=39, float32: error 0.46 after 5000 passes; plain: 192).
                st.move(torch.where(worse[:, None], plain, st.g + st.logv))
                mass = st.measure()
                n_iter += 1
                err = column_error(mass, logr, r, st.g + st.logv, phi)
        acc.record(err, best, tol, accelerated)
        best = torch.minimum(best, err)

    return mass, err, n_iter


def _finish(st: _State, r, err, n_iter: int, opts: SolverOptions, return_plan: bool,
            batched: bool, mass: torch.Tensor) -> SinkhornResult:
    converged = err <= opts.tol
    log_v = st.g + st.logv
    log_u = st.ops.row_potential().to(torch.float64) + math.log(st.c)
    if not bool(converged.all()):
        if not bool(torch.isfinite(err).all()):  # the loop stops at once on a NaN error
            msg = (f"Sinkhorn stopped after {n_iter} passes: the column error is not finite "
                   f"({err.max().item():.3g}) in the {st.ops.kmat_dtype} kernel; try "
                   "dtype=torch.float64 (or SinkhornLabeler's dtype='auto')")
        else:
            msg = (f"Sinkhorn did not reach tol after max_iter={opts.max_iter} iterations "
                   f"(error {err.max().item():.3g}); increase max_iter or tol")
        warnings.warn(msg, ConvergenceWarning, stacklevel=4)
    v = torch.exp(st.logv).to(st.device)
    labels = round_plan(st.ops, v, st.ops.labels(v), mass, 1.0 / st.c,
                        lambda t: _allreduce(t.to(st.device), st.group).cpu())  # argmax within capacities
    plan = st.ops.plan(v, st.c) if return_plan else None

    def sq(t: torch.Tensor) -> torch.Tensor:
        return t if batched else t[0]

    return SinkhornResult(
        labels=sq(labels), plan=None if plan is None else sq(plan), n_iter=int(n_iter),
        converged=sq(converged), error=sq(err), log_u=sq(log_u), log_v=sq(log_v), prior=sq(r),
    )
