"""Eq. 6: averaging views (modalities, augmentations) of the same samples in log space,
plainly or with weights."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ._validation import as_tensor

__all__ = ["average_views", "confidence_weights", "view_weights"]


def _view_items(views: Any) -> list[tuple[str, Any]]:
    """(name, array) of each view: a dict's items, a list's entries, or one array."""
    if isinstance(views, Mapping):
        items = list(views.items())
    elif isinstance(views, Sequence) and not isinstance(views, (str, bytes)) and len(views) > 0 \
            and not isinstance(views[0], (int, float)):
        items = [(f"views[{i}]", v) for i, v in enumerate(views)]
    else:
        items = [("log_p", views)]
    if len(items) == 0:
        raise ValueError("no views given")
    return items


def average_views(views: Any, *, normalize: bool = True, weights: Any = None) -> torch.Tensor:
    """Average several views of the same samples in log space (paper eq. 6).

    Parameters
    ----------
    views : array-like of shape (N, K) or (H, N, K), or a list / dict of such arrays
        Log-probabilities (or logits, with ``normalize=True``) of the same N samples, e.g.
        the audio and the video heads.
    normalize : bool, default True
        Apply ``log_softmax`` over clusters to each view first, so logits and log-probabilities
        are both accepted (it leaves log-probabilities unchanged).
    weights : sequence of float, dict or "confidence", optional
        Weight of each view (non-negative, positive sum; normalised to sum to 1): a weighted
        mean instead of the plain one. A dict is keyed like ``views`` when that is a dict.
        Views of weight 0 are left out. ``"confidence"``: each view (per head) weighs by the
        confidence of its predictions over these samples (:func:`confidence_weights`).

    Returns
    -------
    Tensor of shape (N, K) or (H, N, K)
        ``mean_views log_softmax(view)`` (or ``sum_v w_v log_softmax(view_v)``); a single
        array is returned (normalised) as is.

    Examples
    --------
    >>> a, b = torch.log(torch.tensor([[0.5, 0.5]])), torch.log(torch.tensor([[0.9, 0.1]]))
    >>> average_views([a, b], weights=[1, 3]).exp().round(decimals=3)
    tensor([[0.7770, 0.1500]])
    >>> average_views([a, b], weights="confidence").argmax(-1)  # the uniform view weighs 0
    tensor([0])
    """
    if isinstance(weights, str):
        if weights != "confidence":
            raise ValueError(f"weights must be numbers or 'confidence', got {weights!r}")
        return _confidence_average(views, normalize)
    items = _view_items(views)
    # not detached: averaging stays differentiable (the labeler calls it under no_grad)
    tensors = [(name, as_tensor(v, name, detach=False)) for name, v in items]
    shape0 = tuple(tensors[0][1].shape)
    for name, t in tensors[1:]:
        if tuple(t.shape) != shape0:
            raise ValueError(
                f"all views must have the same shape (same N samples, K clusters, heads); "
                f"{tensors[0][0]} is {shape0} but {name} is {tuple(t.shape)}"
            )
    w = None if weights is None else view_weights(weights, [name for name, _ in items])
    if w is not None:
        tensors = [nt for nt, wi in zip(tensors, w) if wi > 0]
        w = [wi for wi in w if wi > 0]
    if len(tensors) == 1 and not normalize:
        return tensors[0][1]
    # one N x K buffer in all: the first view's log_softmax (a new tensor) accumulates the others
    out: torch.Tensor | None = None
    for i, (_, t) in enumerate(tensors):
        t = t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
        if normalize:
            t = torch.log_softmax(t, dim=-1)
        if w is not None and len(tensors) > 1:
            t = t * w[i]  # a new tensor
            out = t if out is None else out.add_(t.to(out.device, out.dtype))
        elif out is None:
            out = t if normalize else t.clone()  # never write into the caller's tensor
        else:
            out.add_(t.to(out.device, out.dtype))
    assert out is not None
    return out.div_(len(tensors)) if len(tensors) > 1 and w is None else out


def _log_probs(views: Any, normalize: bool) -> list[torch.Tensor]:
    """The views as float tensors of one shape, ``log_softmax``-ed when ``normalize`` (not
    detached, like :func:`average_views`)."""
    tensors = [(name, as_tensor(v, name, detach=False)) for name, v in _view_items(views)]
    shape0 = tuple(tensors[0][1].shape)
    for name, t in tensors:
        if tuple(t.shape) != shape0:
            raise ValueError(f"views must all have the shape of the first, {shape0}; {name} is "
                             f"{tuple(t.shape)}")
        if bool(torch.isnan(t).any()) or bool((t == math.inf).any()):
            raise ValueError(f"{name} contains NaN or +inf (log-probabilities may be -inf only)")
    out = [t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for _, t in tensors]
    return [torch.log_softmax(t, -1) for t in out] if normalize else out


def confidence_weights(views: Any, *, normalize: bool = True) -> torch.Tensor:
    """Weight of each view by how confident its predictions are over these samples.

    A view's confidence is ``1 - mean_n H(p_n) / log K``: 0 for predictions that are uniform
    on average, 1 for one-hot ones (``H`` the entropy of sample ``n``'s distribution over the
    ``K`` clusters). The weights are the confidences normalised to sum to 1, per head; equal
    when every view is uniform. In eq. 6 they let a view whose heads have not learnt to
    separate the samples count less than one that has, without ground truth.

    Parameters
    ----------
    views : list or dict of array-like of shape (N, K) or (H, N, K)
        Log-probabilities (or logits, with ``normalize=True``) of the same samples.
    normalize : bool, default True
        ``log_softmax`` over clusters first.

    Returns
    -------
    Tensor of shape (V,) or (H, V)
        Weights of the V views (per head), each row summing to 1.

    Examples
    --------
    >>> sure = torch.log(torch.tensor([[0.98, 0.01, 0.01], [0.01, 0.98, 0.01]]))
    >>> unsure = torch.log(torch.tensor([[0.4, 0.3, 0.3], [0.3, 0.3, 0.4]]))
    >>> confidence_weights([sure, unsure]).round(decimals=2)
    tensor([0.9900, 0.0100])
    """
    return _confidences(_log_probs(views, normalize))


def _confidences(log_p: list[torch.Tensor]) -> torch.Tensor:
    """:func:`confidence_weights` of views already checked and normalised."""
    k = log_p[0].shape[-1]
    if k < 2:
        raise ValueError(f"confidence needs at least 2 clusters, got K = {k}")
    # entr(p) = -p log p, 0 at p = 0 (a log-probability of -inf)
    conf = torch.stack([1 - torch.special.entr(t.exp()).sum(-1).mean(-1) / math.log(k)
                        for t in log_p], -1)
    conf = conf.double().clamp_min(0.0)
    total = conf.sum(-1, keepdim=True)
    equal = torch.full_like(conf, 1.0 / conf.shape[-1])
    return torch.where(total > 0, conf / total.clamp_min(1e-300), equal).to(log_p[0].dtype)


def _confidence_average(views: Any, normalize: bool) -> torch.Tensor:
    log_p = _log_probs(views, normalize)
    w = _confidences(log_p)
    out = torch.zeros_like(log_p[0])
    for i, t in enumerate(log_p):
        wi = w[..., i].to(t.dtype)
        wi = wi if wi.ndim == 0 else wi.view(-1, 1, 1)
        out = out + torch.where(wi > 0, wi * t, torch.zeros_like(t))  # a view of weight 0 is left out
    return out


def view_weights(weights: Any, names: Sequence[str]) -> list[float]:
    """``weights`` (a sequence, or a dict keyed by ``names``) as floats summing to 1; raises
    ``ValueError`` naming the problem (length, keys, negative or non-finite values, zero sum)."""
    if isinstance(weights, Mapping):
        missing = [n for n in names if n not in weights]
        extra = [k for k in weights if k not in names]
        if missing or extra:
            raise ValueError(f"weights must have one entry per view {list(names)}; missing "
                             f"{missing}, unknown {extra}")
        values = [weights[n] for n in names]
    else:
        values = weights.reshape(-1).tolist() if isinstance(weights, torch.Tensor) \
            else list(weights)
        if len(values) != len(names):
            raise ValueError(f"weights has {len(values)} entries for {len(names)} views")
    try:
        floats = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"weights must be numbers, got {values!r}") from None
    if not all(math.isfinite(v) and v >= 0 for v in floats) or sum(floats) <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all 0, got {floats}")
    total = sum(floats)
    return [v / total for v in floats]
