"""The Sinkhorn solver (private package; public names are re-exported by ``otcluster``).

See ``docs/design.md`` for the module map. Nothing here imports ``torch.nn``.
"""
