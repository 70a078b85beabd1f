"""Tiny generated videos shared by the otcluster_video tests (session-scoped, a few seconds)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see AVDataset's single-thread note

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from otcluster_video import load_preset, make_flash_click_video, make_synthetic_dataset  # noqa: E402

N_VIDEOS, N_CLASSES, N_BROKEN = 9, 3, 4


@pytest.fixture(scope="session")
def synth_spec() -> dict[str, int]:
    """Sizes of ``synth_dir``."""
    return {"n_videos": N_VIDEOS, "n_classes": N_CLASSES, "n_broken": N_BROKEN}


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """9 valid videos (3 classes, 1.5 s, 16 fps, 32 x 32) + 4 broken files of every kind."""
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_dataset(
        root,
        n_videos=N_VIDEOS,
        n_classes=N_CLASSES,
        seconds=1.5,
        fps=16,
        size=32,
        degrade_fraction=0.0,
        seed=3,
        broken=N_BROKEN,
    )
    return root


@pytest.fixture(scope="session")
def flash_25fps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s at 25 fps; white frame + audio click at 0.4 s and 1.2 s."""
    path = tmp_path_factory.mktemp("flash") / "flash25.mp4"
    return make_flash_click_video(path, events=(0.4, 1.2), seconds=2.0, fps=25)


@pytest.fixture(scope="session")
def prepared(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """PrepareReport of ``synth_dir``."""
    from otcluster_video import prepare

    out = tmp_path_factory.mktemp("manifest") / "manifest.csv"
    return prepare(synth_dir, out, progress=False)


@pytest.fixture(scope="session")
def cpu_config():
    """The CPU preset with the cache off (tests choose their own cache folder)."""
    return load_preset("cpu", {"data.cache_dir": ""})
