"""Find videos, probe them once with PyAV, and write a manifest plus a report of skipped files."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import av
from tqdm.auto import tqdm

from otcluster._io import atomic_write_text

from ._files import absolute as _absolute
from ._files import csv_cell, csv_value, file_problem, index_videos

__all__ = [
    "PrepareReport",
    "ProbeError",
    "SkippedFile",
    "VideoInfo",
    "index_videos",
    "load_manifest",
    "prepare",
    "probe",
]

logger = logging.getLogger("otcluster_video")

#: Reasons a file is left out of a manifest.
SKIP_REASONS = (
    "corrupt",
    "truncated",
    "no_video",
    "no_audio",
    "too_short",
    "missing",
    "not_a_file",
    "unreadable",
)


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about one video file.

    Attributes
    ----------
    path : str
        Absolute path.
    label : str
        Class name from the folder or CSV (evaluation only); ``""`` when unknown.
    duration : float
        Seconds of video (from the demuxed packets).
    fps : float
        Average frame rate.
    n_frames : int
        Number of video packets (frames).
    width, height : int
        Frame size in pixels.
    has_audio : bool
        Whether the file has an audio stream.
    sample_rate : int
        Audio sample rate in Hz (0 without audio).
    audio_duration : float
        Seconds of audio (0 without audio).
    """

    path: str
    label: str
    duration: float
    fps: float
    n_frames: int
    width: int
    height: int
    has_audio: bool
    sample_rate: int
    audio_duration: float


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of the manifest, with the reason (one of ``SKIP_REASONS``)."""

    path: str
    label: str
    reason: str
    detail: str


class ProbeError(Exception):
    """A file that cannot be used as a video; ``reason`` is ``corrupt``, ``truncated``,
    ``no_video``, ``missing``, ``not_a_file`` (a FIFO, device...) or ``unreadable``."""

    def __init__(self, path: str | Path, reason: str, detail: str = "") -> None:
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))
        self.path, self.reason, self.detail = str(path), reason, detail


def _isobmff_truncated(path: Path) -> bool:
    """True if an MP4/MOV file's last top-level box runs past the end of the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8 or head[4:8] not in (b"ftyp", b"moov", b"mdat", b"free", b"wide"):
            return False
        offset = 0
        while offset + 8 <= size:
            f.seek(offset)
            header = f.read(16)
            box = int.from_bytes(header[:4], "big")
            if box == 1 and len(header) >= 16:
                box = int.from_bytes(header[8:16], "big")
            elif box == 0:
                return False  # box extends to the end of the file by definition
            if box < 8:
                return False  # not a box structure we understand
            offset += box
        return offset > size


def probe(path: str | Path, label: str = "") -> VideoInfo:
    """Read a video's streams and packets (without decoding more than one frame).

    Parameters
    ----------
    path : str or Path
        Video file.
    label : str
        Label to store in the result.

    Returns
    -------
    VideoInfo

    Raises
    ------
    ProbeError
        With ``reason`` ``"missing"``, ``"corrupt"`` (unreadable, or the first frame does not
        decode), ``"truncated"`` (the file ends before its declared content) or ``"no_video"``.
    """
    path = _absolute(Path(path))
    problem = file_problem(path)
    if problem is not None:
        raise ProbeError(path, *problem)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as err:
        reason = "truncated" if _isobmff_truncated(path) else "corrupt"
        raise ProbeError(path, reason, str(err)) from err
    with container:
        if not container.streams.video:
            raise ProbeError(path, "no_video")
        vstream = container.streams.video[0]
        astream = container.streams.audio[0] if container.streams.audio else None
        ends: dict[int, float] = {}
        starts: dict[int, float] = {}
        n_frames = 0
        try:
            for packet in container.demux(*[s for s in (vstream, astream) if s is not None]):
                if packet.pts is None or packet.size == 0:
                    continue
                tb = packet.time_base
                start = float(packet.pts * tb)
                end = float((packet.pts + (packet.duration or 0)) * tb)
                idx = packet.stream.index
                starts[idx] = min(starts.get(idx, start), start)
                ends[idx] = max(ends.get(idx, end), end)
                if idx == vstream.index:
                    n_frames += 1
        except av.FFmpegError as err:
            raise ProbeError(path, "truncated", f"demuxing stopped: {err}") from err
        if n_frames == 0:
            raise ProbeError(path, "corrupt", "no video packets")
        duration = ends[vstream.index] - starts[vstream.index]
        declared = float(vstream.duration * vstream.time_base) if vstream.duration else None
        if declared and duration < declared - max(0.5, 0.1 * declared):
            raise ProbeError(path, "truncated", f"{duration:.2f} s of {declared:.2f} s declared")
        try:
            container.seek(0)
            next(container.decode(vstream))
        except (av.FFmpegError, StopIteration) as err:
            raise ProbeError(path, "corrupt", f"first frame does not decode: {err!r}") from err
        rate = vstream.average_rate or vstream.guessed_rate
        fps = float(rate) if rate else n_frames / max(duration, 1e-9)
        audio_duration = 0.0
        if astream is not None and astream.index in ends:
            audio_duration = ends[astream.index] - starts[astream.index]
        return VideoInfo(
            path=str(path),
            label=label,
            duration=round(duration, 6),
            fps=round(fps, 6),
            n_frames=n_frames,
            width=vstream.codec_context.width,
            height=vstream.codec_context.height,
            has_audio=astream is not None and audio_duration > 0,
            sample_rate=astream.codec_context.sample_rate if astream is not None else 0,
            audio_duration=round(audio_duration, 6),
        )


@dataclass
class PrepareReport:
    """Result of :func:`prepare`.

    Attributes
    ----------
    manifest : Path
        The manifest written (usable videos).
    skipped_report : Path
        CSV of skipped files with columns ``path, label, reason, detail``.
    videos : list of VideoInfo
        Usable videos, in index order.
    skipped : list of SkippedFile
        Skipped files.
    n_probed : int
        Files probed in this call (the others came from the probe cache).
    """

    manifest: Path
    skipped_report: Path
    videos: list[VideoInfo]
    skipped: list[SkippedFile]
    n_probed: int

    @property
    def counts(self) -> Counter[str]:
        """Number of skipped files per reason."""
        return Counter(s.reason for s in self.skipped)

    def summary(self) -> str:
        """One line: usable videos and skipped files per reason."""
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items())) or "none"
        return f"{len(self.videos)} usable videos; skipped {len(self.skipped)} ({reasons})"


_INFO_FIELDS = [f.name for f in dataclasses.fields(VideoInfo)]


def _cache_path(manifest: Path) -> Path:
    return manifest.with_name(manifest.stem + ".probe-cache.jsonl")


def _load_cache(path: Path) -> dict[str, dict]:
    cache: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                cache[entry["path"]] = entry
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a half-written line from an interrupted run
    return cache


def _write_manifest(path: Path, videos: list[VideoInfo]) -> None:
    if path.suffix.lower() == ".jsonl":
        text = "".join(json.dumps(dataclasses.asdict(v)) + "\n" for v in videos)
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=_INFO_FIELDS, lineterminator="\n")
        writer.writeheader()
        # paths and labels are the user's names: never let a spreadsheet run one as a formula
        writer.writerows({k: csv_cell(x) if k in ("path", "label") else x
                          for k, x in dataclasses.asdict(v).items()} for v in videos)
        text = buffer.getvalue()
    atomic_write_text(path, text)


def load_manifest(path: str | Path) -> list[VideoInfo]:
    """Read a manifest written by :func:`prepare` (CSV, or JSON lines for ``.jsonl``).

    Relative paths in it are relative to the manifest's folder (not the working directory).

    Returns
    -------
    list of VideoInfo
        In file order; the position in this list is the sample index; paths are absolute.
    """
    path = Path(path)
    base = _absolute(path).parent
    if path.suffix.lower() == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        for row in rows:  # the writer escaped the user's names against spreadsheet formulas
            for key in ("path", "label"):
                if row.get(key):
                    row[key] = csv_value(row[key])
    videos = []
    for i, row in enumerate(rows):
        missing = set(_INFO_FIELDS) - set(row)
        if missing:
            raise ValueError(f"{path}: row {i} lacks fields {sorted(missing)}")
        videos.append(
            VideoInfo(
                path=os.path.normpath(base / str(row["path"])),
                label=str(row["label"] or ""),
                duration=float(row["duration"]),
                fps=float(row["fps"]),
                n_frames=int(row["n_frames"]),
                width=int(row["width"]),
                height=int(row["height"]),
                has_audio=str(row["has_audio"]).lower() in ("true", "1"),
                sample_rate=int(row["sample_rate"]),
                audio_duration=float(row["audio_duration"]),
            )
        )
    return videos


def prepare(
    source: str | Path,
    out_manifest: str | Path,
    *,
    min_duration: float = 1.1,
    require_audio: bool = True,
    progress: bool = True,
) -> PrepareReport:
    """Probe every video once, write the manifest of usable ones and a skipped-files report.

    Probe results are cached in ``<manifest stem>.probe-cache.jsonl`` beside the manifest,
    keyed by path, size and modification time, so a second call probes only new or changed
    files. One bad file never stops the run: it is skipped with a reason.

    Parameters
    ----------
    source : str or Path
        Folder tree or CSV, as in :func:`index_videos`.
    out_manifest : str or Path
        Manifest to write: CSV, or JSON lines if the name ends in ``.jsonl``. The report goes
        to ``<manifest stem>.skipped.csv`` beside it.
    min_duration : float
        Videos (and audio streams) shorter than this many seconds are skipped as ``too_short``
        (the public code uses 1.1 s).
    require_audio : bool
        Skip videos without an audio stream (``no_audio``).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    PrepareReport
    """
    out_manifest = Path(out_manifest)
    out_manifest.parent.mkdir(parents=True, exist_ok=True)
    entries = index_videos(source)
    cache_file = _cache_path(out_manifest)
    cache = _load_cache(cache_file)
    videos: list[VideoInfo] = []
    skipped: list[SkippedFile] = []
    n_probed = 0
    with cache_file.open("a") as cache_out:
        for path, label in tqdm(entries, desc="probing videos", unit="file", disable=not progress):
            key = str(path)
            problem = file_problem(path)  # FIFOs, devices, link loops: never opened
            if problem is not None:
                skipped.append(SkippedFile(key, label, *problem))
                continue
            st = path.stat()
            entry = cache.get(key)
            if entry is None or (entry["size"], entry["mtime_ns"]) != (st.st_size, st.st_mtime_ns):
                entry = {"path": key, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
                try:
                    entry["info"] = dataclasses.asdict(probe(path))
                except ProbeError as err:
                    entry["reason"], entry["detail"] = err.reason, err.detail
                except Exception as err:  # noqa: BLE001 - one bad file must not stop the run
                    entry["reason"], entry["detail"] = "corrupt", f"{type(err).__name__}: {err}"
                cache[key] = entry
                cache_out.write(json.dumps(entry) + "\n")
                n_probed += 1
            if "info" not in entry:
                skipped.append(SkippedFile(key, label, entry["reason"], entry.get("detail", "")))
                continue
            info = VideoInfo(**{**entry["info"], "label": label})
            reason = _usable(info, min_duration, require_audio)
            if reason:
                skipped.append(SkippedFile(key, label, reason[0], reason[1]))
            else:
                videos.append(info)
    atomic_write_text(cache_file, "".join(json.dumps(e) + "\n" for e in cache.values()))
    _write_manifest(out_manifest, videos)
    report_path = out_manifest.with_name(out_manifest.stem + ".skipped.csv")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "reason", "detail"])
    # file and folder names are the user's: never let a spreadsheet run one as a formula
    writer.writerows([csv_cell(str(s.path)), csv_cell(s.label), s.reason, csv_cell(s.detail)]
                     for s in skipped)
    atomic_write_text(report_path, buffer.getvalue())
    report = PrepareReport(out_manifest, report_path, videos, skipped, n_probed)
    (logger.warning if skipped else logger.info)("prepare %s: %s", source, report.summary())
    return report


def _usable(info: VideoInfo, min_duration: float, require_audio: bool) -> tuple[str, str] | None:
    if require_audio and not info.has_audio:
        return ("no_audio", "no audio stream")
    if info.duration < min_duration:
        return ("too_short", f"video {info.duration:.2f} s < {min_duration} s")
    if require_audio and info.audio_duration < min_duration:
        return ("too_short", f"audio {info.audio_duration:.2f} s < {min_duration} s")
    return None
