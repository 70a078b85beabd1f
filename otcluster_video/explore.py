"""A static HTML page to browse clusters: thumbnails and an audio player per member video.

The page needs no server and no JavaScript: assets (JPEG strips, WAV excerpts, a PNG of cluster
sizes) are written to a folder beside it and referenced by relative URLs. All text, file names
included, goes through Jinja2 autoescaping.
"""

from __future__ import annotations

import csv
import os
import shutil
import wave
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import av
import jinja2
import torch
from tqdm.auto import tqdm

from ._decode import DecodeError, read_audio, read_clip

__all__ = ["write_explorer"]


@dataclass
class _Member:
    name: str
    thumb: str | None
    audio: str | None
    truth: str


@dataclass
class _Cluster:
    label: str
    size: int
    members: list[_Member]
    hidden: int
    majority: str | None
    purity: float | None


def _read_items(items: str | Path | Sequence[tuple[str | Path, object]]) -> list[tuple[Path, str]]:
    if isinstance(items, (str, Path)):
        path = Path(items)
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            key = next((k for k in ("label", "cluster") if k in columns), None)
            if "path" not in columns or key is None:
                raise ValueError(
                    f"{path}: need columns 'path' and 'label' (or 'cluster'), got {columns}"
                )
            base = path.resolve().parent
            return [(base / row["path"], str(row[key])) for row in reader]
    out = []
    for i, entry in enumerate(items):
        try:
            p, label = entry
        except (TypeError, ValueError):
            raise ValueError(f"items[{i}] must be a (path, label) pair, got {entry!r}") from None
        out.append((Path(p), str(label)))
    return out


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
    progress: bool = True,
) -> Path:
    """Write a static HTML page showing every cluster, largest first.

    Each cluster shows its size and, for up to ``max_members`` members, its path (relative to
    the folder holding all members), a strip of
    ``n_thumb_frames`` frames and an HTML5 audio player with an excerpt from the middle of the
    video. Assets go to ``<out_html stem>_files/`` (replaced on each call). A member that cannot
    be decoded shows "no preview".

    Parameters
    ----------
    out_html : str or Path
        Page to write.
    items : sequence of (path, label) or str or Path
        Cluster label of every video, or a CSV with columns ``path`` and ``label`` (or
        ``cluster``); relative paths in the CSV are relative to its folder.
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
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    Path
        ``out_html``.
    """
    if max_members < 1 or thumb_size < 8 or n_thumb_frames < 1:
        raise ValueError("need max_members >= 1, thumb_size >= 8 and n_thumb_frames >= 1")
    out_html = Path(out_html)
    import matplotlib.image as plt_image  # lazy: keeps `import otcluster_video` light

    pairs = _read_items(items)
    assets = out_html.parent / f"{out_html.stem}_files"
    if assets.exists():
        shutil.rmtree(assets)
    assets.mkdir(parents=True)
    url_base = quote(assets.name)

    groups: dict[str, list[Path]] = {}
    for path, label in pairs:
        groups.setdefault(label, []).append(path)
    order = sorted(groups, key=lambda k: (-len(groups[k]), k))
    names = _display_names([p for p, _ in pairs])
    truth = {str(k): v for k, v in (truth or {}).items()}

    clusters: list[_Cluster] = []
    todo = sum(min(len(groups[k]), max_members) for k in order)
    bar = tqdm(total=todo, desc="explorer previews", unit="video", disable=not progress)
    for rank, label in enumerate(order):
        members = []
        for j, path in enumerate(groups[label][:max_members]):
            thumb = audio = None
            stem = f"c{rank:04d}_{j:03d}"
            try:
                duration = max(_duration(path), 1e-3)
                frames = read_clip(
                    path,
                    0.1 * duration,
                    n_thumb_frames,
                    n_thumb_frames / (0.8 * duration),
                    short_side=thumb_size,
                )
                strip = torch.cat(list(frames), dim=1).numpy()  # (H, n * W, 3)
                plt_image.imsave(assets / f"{stem}.jpg", strip, pil_kwargs={"quality": 85})
                thumb = f"{url_base}/{stem}.jpg"
                start = max(0.0, duration / 2 - audio_seconds / 2)
                samples = read_audio(path, start, audio_seconds, audio_sample_rate)
                _write_wav(assets / f"{stem}.wav", samples, audio_sample_rate)
                audio = f"{url_base}/{stem}.wav"
            except DecodeError:
                pass
            members.append(_Member(names[path], thumb, audio, truth.get(str(path), "")))
            bar.update()
        majority = purity = None
        if truth:
            counts = Counter(truth.get(str(p), "?") for p in groups[label])
            majority, top = counts.most_common(1)[0]
            purity = top / len(groups[label])
        clusters.append(
            _Cluster(
                label,
                len(groups[label]),
                members,
                len(groups[label]) - len(members),
                majority,
                purity,
            )
        )
    bar.close()
    sizes_png = None
    if clusters:
        _sizes_png(assets / "sizes.png", clusters)
        sizes_png = f"{url_base}/sizes.png"

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("otcluster_video", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    html = env.get_template("explorer.html").render(
        title=title,
        clusters=clusters,
        n_items=len(pairs),
        sizes_png=sizes_png,
        thumb_size=thumb_size,
        card_width=max(thumb_size * n_thumb_frames, 160),
    )
    out_html.write_text(html, encoding="utf-8")
    return out_html
