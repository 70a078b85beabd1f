"""The ``otcluster-video`` command line: help of every command, overrides, clear errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from otcluster_video import cli

COMMANDS = ["synth", "prepare", "train", "select", "label", "evaluate", "explore", "degrade", "retrieval"]


def _run(argv, capsys):
    status = cli.main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for command in COMMANDS:
        assert command in text


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: otcluster-video {command}")


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("otcluster-video")
    if not exe.exists():
        exe = shutil.which("otcluster-video")
    if exe is None:
        pytest.skip("otcluster-video is not installed as a console script")
    res = subprocess.run([str(exe), "train", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--preset" in res.stdout and "torchrun" in res.stdout


def test_parse_set_reads_toml_values():
    over = cli._parse_set(
        [
            "training.lr=0.5",
            "encoder.video.widths=[4, 8, 8, 8]",
            "training.prior=uniform",
            "training.align_init=false",
            'data.cache_dir=""',
        ]
    )
    assert over == {
        "training.lr": 0.5,
        "encoder.video.widths": [4, 8, 8, 8],
        "training.prior": "uniform",
        "training.align_init": False,
        "data.cache_dir": "",
    }
    with pytest.raises(cli.CliError, match="KEY=VALUE"):
        cli._parse_set(["training.lr"])


def test_train_without_data_is_a_clear_error(tmp_path, capsys):
    status, _, err = _run(["train", "--out", str(tmp_path / "run"), "--device", "cpu", "--quiet"], capsys)
    assert status == 2
    assert "--data is required" in err
    # the failed start left no config.toml: the folder can still be prepared
    assert not (tmp_path / "run" / "config.toml").exists()
    (tmp_path / "videos").mkdir()
    assert _run(["prepare", str(tmp_path / "videos"), "--out", str(tmp_path / "run"), "--quiet"],
                capsys)[0] == 0


def test_train_with_missing_data_folder(tmp_path, capsys):
    status, _, err = _run(
        [
            "train",
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "run"),
            "--device",
            "cpu",
            "--quiet",
        ],
        capsys,
    )
    assert status == 2
    assert "no such folder" in err


def test_unknown_preset_key_is_named(tmp_path, capsys):
    (tmp_path / "videos").mkdir()
    status, _, err = _run(
        [
            "train",
            "--data",
            str(tmp_path / "videos"),
            "--out",
            str(tmp_path / "run"),
            "--set",
            "training.speed=3",
            "--quiet",
        ],
        capsys,
    )
    assert status == 2
    assert "speed" in err


def test_commands_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    for command in ("label", "evaluate", "degrade"):
        status, _, err = _run([command, "--run", str(tmp_path), "--device", "cpu", "--quiet"], capsys)
        assert status == 2, command
        assert "not a run folder" in err


def test_retrieval_needs_splits(tmp_path, capsys):
    status, _, err = _run(["retrieval", "--run", str(tmp_path), "--device", "cpu"], capsys)
    assert status == 2
    assert "--train-split" in err


def test_prepare_empty_folder_reports_zero(tmp_path, capsys):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "notes.txt").write_text("not a video")
    status, out, _ = _run(
        ["prepare", str(tmp_path / "videos"), "--out", str(tmp_path / "run"), "--quiet"], capsys
    )
    assert status == 0
    assert "0 usable videos; skipped 0" in out
    assert (tmp_path / "run" / "manifest.csv").is_file()


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("otcluster-video ")


def test_help_imports_no_torch():
    code = (
        "import sys\n"
        "from otcluster_video import cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "try:\n"
        "    cli.main(['train', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('torch', 'av', 'torchaudio', 'numpy') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout


def test_debug_shows_the_traceback_the_one_line_error_hides(tmp_path, capsys):
    argv = ["label", "--run", str(tmp_path), "--device", "cpu"]
    status, _, err = _run(argv, capsys)
    assert status == 2 and "Traceback" not in err and "--debug" in err
    for debug_first in (True, False):
        args = ["--debug", *argv] if debug_first else [*argv, "--debug"]
        status, _, err = _run(args, capsys)
        assert status == 2
        assert "Traceback (most recent call last)" in err and "not a run folder" in err


def test_verbose_and_quiet_before_or_after_the_command():
    parser = cli.build_parser()
    for argv in (["-v", "label", "--run", "R"], ["label", "--run", "R", "--verbose"]):
        args = parser.parse_args(argv)
        assert args.verbose and not args.quiet and not args.debug
    for argv in (["--quiet", "label", "--run", "R"], ["label", "--run", "R", "-q"]):
        assert parser.parse_args(argv).quiet


def test_no_parser_function_is_long():
    import inspect

    for name, fn in inspect.getmembers(cli, inspect.isfunction):
        if fn.__module__ == cli.__name__:
            assert len(inspect.getsource(fn).splitlines()) <= 60, name


def test_train_log_names_the_stream_weights():
    from otcluster_video.commands.train import _describe

    line = _describe({"event": "clustering", "clustering": 3, "step": 40, "n_iter": 12,
                      "modality_weights": {"video": 0.1667, "audio": 0.8333}})
    assert "stream weights video 0.17, audio 0.83" in line
    assert "stream weights" not in _describe({"event": "clustering", "clustering": 0, "step": 0})
    vetoed = _describe({"event": "clustering", "vetoed": {"video": 0.125, "audio": 0.0}})
    assert "clips labelled without video 12.5%, audio 0.0%" in vetoed


def test_train_log_names_each_streams_learning_rate():
    from otcluster_video.commands.train import _describe

    epoch = {"event": "epoch", "epoch": 2, "loss": 1.5, "lr": 0.001}
    assert _describe(epoch).endswith("lr 0.001")
    per_stream = _describe({**epoch, "lr_per_modality": {"video": 0.001, "audio": 0.05}})
    assert per_stream.endswith("lr video 0.001, audio 0.05")


def test_train_warns_when_clusterings_stopped_short_of_the_tolerance():
    from otcluster_video._preset import load_preset
    from otcluster_video.commands.train import _unconverged_summary

    cfg = load_preset("cpu", {"clustering.sinkhorn_max_iter": 300})
    history = [{"event": "epoch", "epoch": 1, "loss": 1.0},
               *({"event": "clustering", "clustering": i, "converged": i not in (4, 6)}
                 for i in range(8))]
    line = _unconverged_summary(history, cfg)
    assert line is not None and line.startswith("2 of 8 clusterings (4, 6) stopped at ")
    assert "clustering.sinkhorn_max_iter = 300 passes" in line
    assert "clustering.sinkhorn_tol = 0.01" in line
    many = [{"event": "clustering", "clustering": i, "converged": False} for i in range(13)]
    assert "(0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 3 more)" in _unconverged_summary(many, cfg)
    converged = [{**h, "converged": True} for h in history if h["event"] == "clustering"]
    assert _unconverged_summary(converged, cfg) is None
    assert _unconverged_summary([], cfg) is None
