"""Packaging metadata: licence, classifiers, sdist contents, install lines (no build, no network)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def test_license_is_an_spdx_string_with_its_file():
    # the table form {text = "MIT"} is deprecated by setuptools (PEP 639)
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "otcluster developers" in text
    assert not any(c.startswith("License ::") for c in PROJECT["classifiers"])  # PEP 639 forbids both
    setuptools_req = next(r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools"))
    assert int(re.search(r">=(\d+)", setuptools_req).group(1)) >= 77  # first with PEP 639


def test_classifiers_and_typed_marker():
    classifiers = PROJECT["classifiers"]
    assert "Typing :: Typed" in classifiers
    assert (ROOT / "otcluster" / "py.typed").is_file()
    assert (ROOT / "otcluster_video" / "py.typed").is_file()
    assert any(c.startswith("Topic :: Scientific/Engineering") for c in classifiers)


def test_sdist_ships_what_the_shipped_tests_read():
    """setuptools puts tests/test*.py into the sdist by default; tests/test_docs.py reads docs/
    and README.md, tests/test_benchmarks.py runs benchmarks/: MANIFEST.in must ship them too."""
    manifest = (ROOT / "MANIFEST.in").read_text().split("\n")
    grafts = {line.split()[1] for line in manifest if line.startswith("graft ")}
    assert {"tests", "docs", "benchmarks"} <= grafts
    included = {w for line in manifest if line.startswith("include ") for w in line.split()[1:]}
    assert {"LICENSE", "README.md"} <= included
    for test in (ROOT / "tests").rglob("test_*.py"):  # every top folder a test reads is grafted
        for folder in re.findall(r'ROOT / "(\w+)"', test.read_text()):
            if (ROOT / folder).is_dir() and not (ROOT / folder / "__init__.py").is_file():
                assert folder in grafts, f"{test.name} reads {folder}/, which the sdist lacks"


def test_readme_shows_the_install_lines_with_the_right_extra():
    readme = (ROOT / "README.md").read_text()
    assert "pip install otcluster" in readme
    assert "pip install 'otcluster[video]'" in readme
    assert "video" in PROJECT["optional-dependencies"]
