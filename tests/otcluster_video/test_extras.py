"""Without the video extras, otcluster_video says what to install instead of a bare
``ModuleNotFoundError`` (each extra is hidden in a fresh interpreter by a finder that answers
like a missing distribution: ``No module named 'torchaudio'`` for it and its submodules)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

INSTALL = "pip install 'otcluster[video]'"
# import name -> a public name that needs it (at attribute access or, for matplotlib, at the call)
EXTRAS = {
    "torchaudio": "LogMelSpectrogram",
    "av": "read_clip",
    "torchvision": "VideoTransform",
    "jinja2": "write_explorer",
}


def _run(hidden: list[str], body: str) -> dict:
    code = textwrap.dedent(
        f"""
        import json, sys

        class Missing:  # as if not installed: the top-level name is reported missing
            hidden = {hidden!r}

            @classmethod
            def find_spec(cls, fullname, path=None, target=None):
                top = fullname.partition(".")[0]
                if top in cls.hidden:
                    raise ModuleNotFoundError(f"No module named {{top!r}}", name=top)
                return None

        sys.meta_path.insert(0, Missing)
        out = {{}}
        def attempt(key, fn):
            try:
                fn()
                out[key] = "ok"
            except BaseException as err:  # noqa: BLE001 - reported to the test
                out[key] = [type(err).__name__, str(err)]
        """
    ) + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_install_hint(result, what: str) -> None:
    assert result != "ok", f"{what} worked without its extra"
    kind, message = result
    assert kind == "ImportError", f"{what}: {kind}: {message}"  # not a bare ModuleNotFoundError
    assert INSTALL in message, f"{what}: {message}"


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_missing_extra_names_the_install_line(extra):
    name = EXTRAS[extra]
    out = _run([extra], f"""
        attempt("import", lambda: __import__("otcluster_video"))
        import otcluster_video
        attempt("name", lambda: getattr(otcluster_video, {name!r}))
        for public in otcluster_video.__all__:
            attempt("all:" + public, lambda: getattr(otcluster_video, public))
    """)
    assert out["import"] == "ok"  # the package itself imports without any extra
    _assert_install_hint(out["name"], f"otcluster_video.{name} without {extra}")
    for key, result in out.items():  # every public name: works, or names the install line
        if key.startswith("all:") and result != "ok":
            _assert_install_hint(result, key)


def test_write_explorer_without_matplotlib_names_the_install_line(tmp_path):
    out = _run(["matplotlib"], f"""
        from otcluster_video import write_explorer
        attempt("call", lambda: write_explorer({str(tmp_path / "p.html")!r}, [("v.mp4", 0)],
                                               progress=False))
    """)
    _assert_install_hint(out["call"], "write_explorer without matplotlib")


def test_help_works_without_any_extra():
    hidden = sorted({*EXTRAS, "matplotlib", "faiss", "sklearn"})
    out = _run(hidden, """
        from otcluster_video.cli import main
        sys.argv = ["otcluster-video", "--help"]
        attempt("help", main)
    """)
    assert out["help"] in ("ok", ["SystemExit", "0"]), out["help"]
