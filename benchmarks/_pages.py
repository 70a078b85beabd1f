"""A benchmark's page is a record: a run replaces one only when asked (``--overwrite``).

Every benchmark that writes a page (JSON, Markdown, PNG) into ``--out`` (``docs/benchmarks`` by
default, where the committed pages live) checks, before it measures anything, that none of its
files is there already, and stops with a message naming them otherwise: a run from the tree
without ``--out`` once replaced a committed page that took hours to measure.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

__all__ = ["add_overwrite_arg", "refuse_taken"]


def add_overwrite_arg(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: replace the page's files that are already in ``--out``."""
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the page's files already in --out (refused otherwise)")


def refuse_taken(parser: argparse.ArgumentParser, out: Path, files: Iterable[str],
                 overwrite: bool) -> None:
    """Exit through ``parser.error`` (status 2) when any of ``files`` exists in ``out`` and
    ``overwrite`` is false.
    """
    taken = [f for f in files if (Path(out) / f).exists()]
    if taken and not overwrite:
        parser.error(f"{out} already holds {', '.join(taken)}: give another --out (or --name "
                     f"where there is one), or --overwrite to replace them")
