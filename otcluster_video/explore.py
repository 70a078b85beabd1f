"""A static HTML page to browse clusters: thumbnails and an audio player per member video.

The page needs no server and no JavaScript: assets (JPEG strips, WAV excerpts, a PNG of cluster
sizes) are written to a folder beside it and referenced by relative URLs. All text, file names
included, goes through Jinja2 autoescaping.

Which members a cluster shows: its most confident ones first (the solver's confidence, column
``confidence`` of ``labels.csv``), then a random sample of the others, so that the page shows
both what the cluster is sure about and what it really holds (the first members in file order
once showed six discs for a cluster that is 88 % squares).
"""

from __future__ import annotations

import csv
import math
import os
import random
import re
import wave
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import av
import jinja2
import torch
from tqdm.auto import tqdm

from ._decode import DecodeError, read_audio, read_clip
from ._run import csv_value

__all__ = ["write_explorer"]


# Marks an assets folder as written by write_explorer: only such a folder is reused, and only
# the files the explorer names (below) are removed from it (a user's files are never touched).
_MARKER = ".otcluster-explorer"
_ASSET_RE = re.compile(r"(c\d{4}_\d{3}\.(jpg|wav)|sizes\.png)")


@dataclass
class _Member:
    name: str
    thumb: str | None
    audio: str | None
    truth: str
    confidence: float | None


@dataclass
class _Cluster:
    label: str
    heading: str
    size: int
    members: list[_Member]  # the most confident members (all shown members without confidences)
    sample: list[_Member]  # then a random sample of the others
    hidden: int
    majority: str | None
    purity: float | None


_Item = tuple[Path, str, float | None]  # (path, label, confidence)


def _heading(label: str) -> str:
    """"Cluster 3" for label "3" and also for "cluster 3" (never "Cluster cluster 3")."""
    bare = re.sub(r"^cluster\s+", "", label.strip(), flags=re.I)
    return f"Cluster {bare}" if bare else "Cluster (no label)"


def _finite(value: object, where: str) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: confidence must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{where}: confidence must be finite, got {value!r}")
    return out


def _read_csv(path: Path) -> list[_Item]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        key = next((k for k in ("label", "cluster") if k in columns), None)
        if "path" not in columns or key is None:
            raise ValueError(f"{path}: need columns 'path' and 'label' (or 'cluster'), got {columns}")
        has_conf = "confidence" in columns
        base = path.resolve().parent
        out: list[_Item] = []
        for line, row in enumerate(reader, start=2):
            if row.get("status", "ok") != "ok":  # labels.csv rows of undecodable videos
                continue
            conf = None
            if has_conf and (row["confidence"] or "").strip():
                conf = _finite(row["confidence"], f"{path}, line {line}")
            # labels.csv escapes cells a spreadsheet would run as formulas: read them back
            out.append((base / csv_value(row["path"]), csv_value(str(row[key])), conf))
        return out


def _read_items(
    items: str | Path | Sequence[tuple[str | Path, object]],
    confidence: Mapping[str, float] | None,
) -> list[_Item]:
    if isinstance(items, (str, Path)):
        if confidence is not None:
            raise ValueError("confidence goes with a sequence of items; a CSV brings its own "
                             "'confidence' column")
        return _read_csv(Path(items))
    conf = {str(k): v for k, v in (confidence or {}).items()}
    out = []
    for i, entry in enumerate(items):
        try:
            p, label = entry
        except (TypeError, ValueError):
            raise ValueError(f"items[{i}] must be a (path, label) pair, got {entry!r}") from None
        c = _finite(conf[str(p)], str(p)) if str(p) in conf else None
        out.append((Path(p), str(label), c))
    return out


def _choose(members: list[_Item], max_members: int, rng: random.Random
            ) -> tuple[list[int], list[int]]:
    """Indices of the most confident members (by decreasing confidence), then of a random sample.

    With confidences, half the slots (rounded up) go to the most confident members and the rest
    to a random sample of the others; without, every slot is random (never file order). A
    cluster that fits is shown whole, most confident first.
    """
    n = len(members)
    known = [i for i in range(n) if members[i][2] is not None]
    by_conf = sorted(known, key=lambda i: -float(members[i][2]))  # type: ignore[arg-type]
    if n <= max_members:
        return by_conf + [i for i in range(n) if members[i][2] is None], []
    top = by_conf[: math.ceil(max_members / 2)] if known else []
    chosen = set(top)
    rest = [i for i in range(n) if i not in chosen]
    return top, rng.sample(rest, max_members - len(top))


def _prepare_assets(assets: Path) -> None:
    """Create the assets folder, or clear what an earlier call wrote there; refuse a user's."""
    if assets.exists():
        if not assets.is_dir():
            raise FileExistsError(f"{assets} exists and is not a folder: choose another out_html")
        if not (assets / _MARKER).is_file() and any(assets.iterdir()):
            raise FileExistsError(
                f"{assets} exists and was not written by the explorer: choose another out_html "
                "(its files are left untouched)"
            )
        for f in assets.iterdir():
            if _ASSET_RE.fullmatch(f.name) and f.is_file() and not f.is_symlink():
                f.unlink()
    assets.mkdir(parents=True, exist_ok=True)
    (assets / _MARKER).write_text("assets of an otcluster explorer page\n")


def _display_names(paths: list[Path]) -> dict[Path, str]:
    """Paths relative to the members' common folder (so folder names show), else bare names."""
    if not paths:
        return {}
    try:
        common = Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))
        return {p: str(p.resolve().relative_to(common)) for p in paths}
    except ValueError:  # e.g. different drives
        return {p: p.name for p in paths}


def _duration(path: Path) -> float:
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if container.duration:
                return container.duration / 1e6
            stream = container.streams.video[0]
            return float(stream.duration * stream.time_base) if stream.duration else 0.0
    except (av.FFmpegError, OSError, IndexError, ValueError) as err:
        raise DecodeError(path, str(err)) from err


def _write_wav(path: Path, samples: torch.Tensor, sample_rate: int) -> None:
    pcm = (samples.clamp(-1, 1).numpy() * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())


def _sizes_png(path: Path, clusters: list[_Cluster]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.4, 1.8), dpi=100)
    ax.bar(range(len(clusters)), [c.size for c in clusters], color="#4a7", width=0.9)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("cluster rank (largest first)")
    ax.set_ylabel("videos")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_explorer(
    out_html: str | Path,
    items: str | Path | Sequence[tuple[str | Path, object]],
    *,
    title: str = "Clusters",
    truth: Mapping[str, str] | None = None,
    max_members: int = 12,
    thumb_size: int = 64,
    n_thumb_frames: int = 3,
    audio_seconds: float = 2.0,
    audio_sample_rate: int = 16000,
    confidence: Mapping[str, float] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write a static HTML page showing every cluster, largest first.

    Each cluster shows its size and, for up to ``max_members`` members, its path (relative to
    the folder holding all members), a strip of
    ``n_thumb_frames`` frames and an HTML5 audio player with an excerpt from the middle of the
    video. The members shown are the most confident ones (half the slots, rounded up, by
    decreasing confidence), then a random sample of the others; without confidences, a random
    sample (never the first files). Assets go to ``<out_html stem>_files/``: a later call
    replaces the files it wrote there; a folder of that name the explorer did not write is
    refused. A member that cannot be decoded shows "no preview".

    Parameters
    ----------
    out_html : str or Path
        Page to write.
    items : sequence of (path, label) or str or Path
        Cluster label of every video, or a CSV with columns ``path`` and ``label`` (or
        ``cluster``) and optionally ``confidence`` (as in ``labels.csv``; rows whose ``status``
        is not ``ok`` are skipped); relative paths in the CSV are relative to its folder.
    title : str
        Page title.
    truth : mapping of str to str, optional
        Ground-truth class per video path (as given in ``items``), shown under each member
        with the majority class and its share per cluster.
    max_members : int
        Members shown per cluster.
    thumb_size : int
        Height of the thumbnails in pixels.
    n_thumb_frames : int
        Frames per thumbnail strip, evenly spread over the video.
    audio_seconds : float
        Length of each audio excerpt (WAV).
    audio_sample_rate : int
        Sample rate of the excerpts.
    confidence : mapping of str to float, optional
        Confidence of each video's label (e.g. its largest posterior probability), keyed by
        path as given in ``items`` (a sequence; a CSV brings its own column). Videos without
        one are only drawn in the random sample.
    seed : int
        Seed of the random samples (each cluster's sample depends only on it and the label).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    Path
        ``out_html``.

    Raises
    ------
    ValueError
        If a parameter is out of range, the CSV lacks the needed columns, or a confidence is
        not a finite number.
    FileExistsError
        If ``<out_html stem>_files`` exists and was not written by this function.
    """
    if max_members < 1 or thumb_size < 8 or n_thumb_frames < 1:
        raise ValueError("need max_members >= 1, thumb_size >= 8 and n_thumb_frames >= 1")
    out_html = Path(out_html)
    try:
        import matplotlib.image as plt_image  # lazy: keeps `import otcluster_video` light
    except ModuleNotFoundError as err:
        raise ImportError(
            f"write_explorer needs {err.name!r}, one of the video extras: "
            "pip install 'otcluster[video]'"
        ) from err

    pairs = _read_items(items, confidence)
    assets = out_html.parent / f"{out_html.stem}_files"
    _prepare_assets(assets)
    url_base = quote(assets.name)

    groups: dict[str, list[_Item]] = {}
    for item in pairs:
        groups.setdefault(item[1], []).append(item)
    order = sorted(groups, key=lambda k: (-len(groups[k]), k))
    names = _display_names([p for p, _, _ in pairs])
    truth = {str(k): v for k, v in (truth or {}).items()}

    clusters: list[_Cluster] = []
    todo = sum(min(len(groups[k]), max_members) for k in order)
    bar = tqdm(total=todo, desc="explorer previews", unit="video", disable=not progress)
    for rank, label in enumerate(order):
        top, sample = _choose(groups[label], max_members, random.Random(f"{seed}:{label}"))
        members = []
        for j, idx in enumerate(top + sample):
            path, _, conf = groups[label][idx]
            thumb, audio = _preview(path, assets, f"c{rank:04d}_{j:03d}", plt_image.imsave,
                                    thumb_size, n_thumb_frames, audio_seconds, audio_sample_rate)
            members.append(_Member(names[path], thumb, audio, truth.get(str(path), ""), conf))
            bar.update()
        clusters.append(_summary(label, groups[label], members, len(top), truth))
    bar.close()
    sizes_png = None
    if clusters:
        _sizes_png(assets / "sizes.png", clusters)
        sizes_png = f"{url_base}/sizes.png"

    html = _render(title=title, clusters=clusters, n_items=len(pairs),
                   has_confidence=any(c is not None for _, _, c in pairs), sizes_png=sizes_png,
                   thumb_size=thumb_size, card_width=max(thumb_size * n_thumb_frames, 160))
    out_html.write_text(html, encoding="utf-8")
    return out_html


def _summary(label: str, group: list[_Item], members: list[_Member], n_top: int,
             truth: Mapping[str, str]) -> _Cluster:
    """A cluster as the page shows it (the majority class and its share, given ``truth``)."""
    majority = purity = None
    if truth:
        counts = Counter(truth.get(str(p), "?") for p, _, _ in group)
        majority, n_major = counts.most_common(1)[0]
        purity = n_major / len(group)
    return _Cluster(label, _heading(label), len(group), members[:n_top], members[n_top:],
                    len(group) - len(members), majority, purity)


def _preview(path: Path, assets: Path, stem: str, imsave: Any, thumb_size: int,
             n_thumb_frames: int, audio_seconds: float, audio_sample_rate: int
             ) -> tuple[str | None, str | None]:
    """Write a member's thumbnail strip and audio excerpt into ``assets``; their URLs relative
    to the page, ``None`` where the video cannot be decoded ("no preview")."""
    url_base = quote(assets.name)
    try:
        duration = max(_duration(path), 1e-3)
        frames = read_clip(path, 0.1 * duration, n_thumb_frames, n_thumb_frames / (0.8 * duration),
                           short_side=thumb_size)
        strip = torch.cat(list(frames), dim=1).numpy()  # (H, n * W, 3)
        imsave(assets / f"{stem}.jpg", strip, pil_kwargs={"quality": 85})
        start = max(0.0, duration / 2 - audio_seconds / 2)
        samples = read_audio(path, start, audio_seconds, audio_sample_rate)
        _write_wav(assets / f"{stem}.wav", samples, audio_sample_rate)
    except DecodeError:
        return None, None
    return f"{url_base}/{stem}.jpg", f"{url_base}/{stem}.wav"


def _render(**context: Any) -> str:
    """The page from ``templates/explorer.html``, every value HTML-escaped (autoescape)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("otcluster_video", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("explorer.html").render(**context)
