"""Tests of checkpoint files and of resuming training (in process and after a SIGKILL)."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from selflabel_data import Blobs, encoders, single_threaded

from otcluster import HeadConfig, SelfLabelTrainer, TrainerConfig
from otcluster._checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from otcluster._schedule import ChainedOptimizer

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    undo = single_threaded()
    yield
    undo()


# -- files -------------------------------------------------------------------------------------

def test_roundtrip_with_weights_only(tmp_path):
    state = {"t": torch.arange(5), "nested": {"a": [1, 2.5, None, "x", (3, 4)], 7: True},
             "f": torch.randn(2, 3, dtype=torch.float64)}
    path = save_checkpoint(state, tmp_path / "sub" / "c.pt")
    back = torch.load(path, weights_only=True)
    assert torch.equal(back["t"], state["t"]) and torch.equal(back["f"], state["f"])
    assert back["nested"] == {"a": [1, 2.5, None, "x", (3, 4)], 7: True}
    assert load_checkpoint(path).keys() == state.keys()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_refuses_objects_a_weights_only_load_would_refuse(tmp_path):
    with pytest.raises(TypeError, match=r"state\['cfg'\]\['fn'\] is a builtin_function"):
        save_checkpoint({"cfg": {"fn": len}}, tmp_path / "c.pt")
    with pytest.raises(TypeError, match="ndarray"):
        save_checkpoint({"a": np.zeros(2)}, tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"v": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"v": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"v": 1}  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def test_rng_states_roundtrip_through_a_file(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)  # noqa: NPY002 - the global generator is what is saved
    random.seed(3)
    np.random.randn()  # noqa: NPY002 - a cached Gaussian is part of numpy's state
    save_checkpoint({"rng": get_rng_state()}, tmp_path / "rng.pt")

    def draw():
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]  # noqa: NPY002

    first = draw()
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert draw() == first


# -- unreadable files: one line naming the file, the previous checkpoint as fallback -----------

def _unreadable(kind, path):
    good = save_checkpoint({"t": torch.arange(1000)}, path.with_name("good.pt")).read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "corrupt bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "pickled object":
        torch.save({"f": Path("x")}, path)  # torch.save of a non-weights object
    elif kind == "plain pickle":
        import pickle

        path.write_bytes(pickle.dumps({"f": Path("x")}))
    elif kind == "not a dict":
        torch.save([torch.zeros(2)], path)
    return path


KINDS = ["empty", "truncated", "corrupt bytes", "pickled object", "plain pickle", "not a dict"]


@pytest.mark.parametrize("kind", KINDS)
def test_unreadable_checkpoint_gives_one_line_naming_the_file(kind, tmp_path):
    path = _unreadable(kind, tmp_path / "last.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)  # the CLI prints ValueErrors as one line
    assert "\n" not in msg and str(path) in msg and "delete it" in msg
    for raw in ("PytorchStreamReader", "weights_only=False", "EOFError", "miniz"):
        assert raw not in msg
    err = info.value  # no chained torch traceback behind the line
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


@pytest.mark.parametrize("kind", ["truncated", "pickled object"])
def test_unreadable_checkpoint_falls_back_to_the_previous_one(kind, tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"v": 1}, path)
    save_checkpoint({"v": 2}, path, previous=tmp_path / "previous.pt")
    assert load_checkpoint(tmp_path / "previous.pt") == {"v": 1}
    _unreadable(kind, path)
    with pytest.warns(UserWarning, match=r"last\.pt.*loaded the previous checkpoint .*previous\.pt"):
        assert load_checkpoint(path, fallback=tmp_path / "previous.pt") == {"v": 1}
    path.unlink()
    with pytest.warns(UserWarning, match="no checkpoint at"):
        assert load_checkpoint(path, fallback=tmp_path / "previous.pt") == {"v": 1}
    _unreadable("empty", tmp_path / "previous.pt")  # both bad: the error names the fallback
    with pytest.raises(CheckpointError, match="previous.pt is empty"):
        load_checkpoint(path, fallback=tmp_path / "previous.pt")


def test_a_damaged_checkpoint_never_replaces_the_previous_one(tmp_path):
    path, previous = tmp_path / "last.pt", tmp_path / "previous.pt"
    save_checkpoint({"v": 1}, path)
    save_checkpoint({"v": 2}, path, previous=previous)
    _unreadable("truncated", path)
    save_checkpoint({"v": 3}, path, previous=previous)
    assert load_checkpoint(previous) == {"v": 1} and load_checkpoint(path) == {"v": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.pt", "last.pt", "previous.pt"]


def test_checkpoint_name_is_spelled_once():
    import otcluster

    root = Path(otcluster.__file__).parent
    spelled = [p.relative_to(root).as_posix() for p in root.rglob("*.py")
               if '"last.pt"' in p.read_text()]
    assert spelled == ["_checkpoint.py"] and CHECKPOINT_NAME == "last.pt"


# -- resuming training -------------------------------------------------------------------------

def _config(ckpt_dir, epochs=4):
    return TrainerConfig(
        heads=HeadConfig(n_heads=2, n_clusters=4, hidden_dim=8, dropout=0.3), epochs=epochs,
        batch_size=32, lr=0.05, warmup_epochs=1, n_clusterings=6, prior="gaussian",
        show_progress=False, checkpoint_dir=None if ckpt_dir is None else str(ckpt_dir))


class _Crash(Exception):
    pass


class CrashAfterEpoch(SelfLabelTrainer):
    crash_epoch = 2

    def save_checkpoint(self, path):
        super().save_checkpoint(path)
        if self.epoch_ == self.crash_epoch:
            raise _Crash


def test_resume_in_process_gives_the_uninterrupted_labels(tmp_path):
    data = Blobs(n=150, k=4)
    full = SelfLabelTrainer(encoders(seed=5), data, _config(tmp_path / "full"))
    full.fit()

    crashing = CrashAfterEpoch(encoders(seed=5), data, _config(tmp_path / "resumed"))
    with pytest.raises(_Crash):
        crashing.fit()
    state = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["labels"].shape == (2, 150)

    resumed = SelfLabelTrainer(encoders(seed=99), data, _config(tmp_path / "resumed"))
    resumed.fit()
    assert torch.equal(resumed.labels_, full.labels_)
    for name, p in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], p, rtol=0, atol=0)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in full.history_]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history_] == strip

    again = SelfLabelTrainer(encoders(seed=7), data, _config(tmp_path / "resumed"))
    assert len(again.fit()) == len(full.history_)  # a finished run only reloads
    with pytest.raises(ValueError, match="N=150 samples, the dataset has 100"):
        SelfLabelTrainer(encoders(), Blobs(n=100), _config(tmp_path / "resumed")).fit()


def test_training_resumes_from_the_previous_checkpoint_when_the_last_is_damaged(tmp_path):
    data = Blobs(n=150, k=4)
    cfg = _config(tmp_path, epochs=3)
    full = SelfLabelTrainer(encoders(seed=5), data, cfg)
    records = []
    full.fit(on_record=records.append)
    assert records == full.history_  # every record handed over as it was appended
    previous = load_checkpoint(tmp_path / "previous.pt")
    assert previous["epoch"] == 2
    done = len(previous["history"])
    _unreadable("truncated", tmp_path / "last.pt")
    resumed = SelfLabelTrainer(encoders(seed=99), data, cfg)
    seen = []
    with pytest.warns(UserWarning, match="last.pt is damaged.*loaded the previous checkpoint"):
        resumed.fit(on_record=seen.append)
    assert torch.equal(resumed.labels_, full.labels_)
    # only what the third epoch added is handed over again
    assert [r["event"] for r in seen] == [r["event"] for r in full.history_[done:]]
    assert seen and seen[-2]["event"] == "epoch" and seen[-2]["epoch"] == 3
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3

    (tmp_path / "previous.pt").unlink()
    _unreadable("corrupt bytes", tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=r"last\.pt is not a checkpoint.*delete it"):
        SelfLabelTrainer(encoders(seed=5), data, cfg).fit()


SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import torch
    from selflabel_data import Blobs, encoders, single_threaded
    single_threaded()
    from test_checkpoint import _config
    from otcluster import SelfLabelTrainer

    ckpt_dir, out, slow = sys.argv[1], sys.argv[2], float(sys.argv[3])
    trainer = SelfLabelTrainer(encoders(seed=5), Blobs(n=150, k=4, slow=slow),
                               _config(ckpt_dir, epochs=5))
    trainer.fit()
    torch.save({{"labels": trainer.labels_, "epochs": trainer.epoch_}}, out)
""")


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_uninterrupted_labels(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}

    def run(ckpt, out, slow="0"):
        return subprocess.Popen([sys.executable, str(script), str(ckpt), str(out), slow], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    killed = run(tmp_path / "b", tmp_path / "never.pt", slow="0.003")  # ~0.5 s per pass over data
    ckpt = tmp_path / "b" / "last.pt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and killed.poll() is None:
        if ckpt.exists() and load_checkpoint(ckpt)["epoch"] >= 1:
            break
        time.sleep(0.05)
    assert killed.poll() is None, killed.stdout.read().decode()
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    stopped_at = load_checkpoint(ckpt)["epoch"]
    assert 1 <= stopped_at < 5 and not (tmp_path / "never.pt").exists()

    uninterrupted = run(tmp_path / "a", tmp_path / "a.pt")
    resumed = run(tmp_path / "b", tmp_path / "b.pt")
    for proc in (uninterrupted, resumed):
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out.decode()
    a, b = torch.load(tmp_path / "a.pt"), torch.load(tmp_path / "b.pt")
    assert a["epochs"] == b["epochs"] == 5
    assert torch.equal(a["labels"], b["labels"])


def _resume_after_crash(data, cfg, folder, edit=None):
    """Train with ``cfg(folder)`` until a crash after the first epoch, then (after
    ``edit(checkpoint path)``, if given) resume to the end from other initial weights (the
    checkpoint must replace them)."""
    with pytest.raises(_Crash):
        CrashAfterEpoch(encoders(seed=5), data, cfg(folder)).fit()
    if edit is not None:
        edit(folder / CHECKPOINT_NAME)
    resumed = SelfLabelTrainer(encoders(seed=99), data, cfg(folder))
    resumed.fit()
    return resumed


def _assert_same_training(resumed, full):
    """The same labels and, to the last bit, the same weights."""
    assert torch.equal(resumed.labels_, full.labels_)
    for name, p in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], p, rtol=0, atol=0)


def test_adamw_resumes_exactly_and_a_checkpoint_keeps_its_optimizer(tmp_path):
    data = Blobs(n=150, k=4)

    def cfg(d, kind="adamw"):
        return dataclasses.replace(_config(d, epochs=3), optimizer=kind, lr=1e-3)

    full = SelfLabelTrainer(encoders(seed=5), data, cfg(tmp_path / "full"))
    assert isinstance(full.optimizer, torch.optim.AdamW)
    full.fit()
    _assert_same_training(_resume_after_crash(data, cfg, tmp_path / "resumed"), full)
    # AdamW's moments are in the checkpoint: another optimiser cannot resume it, and says so
    with pytest.raises(ValueError, match="trained with optimizer 'adamw', the config has 'sgd'"):
        SelfLabelTrainer(encoders(seed=5), data, cfg(tmp_path / "full", "sgd")).fit()
    # a checkpoint from before the optimizer field was SGD's: it resumes with "sgd", exactly
    def sgd(d):
        return cfg(d, "sgd")

    def drop_kind(path):
        state = torch.load(path, weights_only=True)
        del state["optimizer_kind"]
        torch.save(state, path)

    full_sgd = SelfLabelTrainer(encoders(seed=5), data, sgd(tmp_path / "sgd_full"))
    assert isinstance(full_sgd.optimizer, torch.optim.SGD)
    full_sgd.fit()
    _assert_same_training(_resume_after_crash(data, sgd, tmp_path / "sgd", drop_kind), full_sgd)
    with pytest.raises(ValueError, match="TrainerConfig.optimizer must be one of"):
        dataclasses.replace(_config(None), optimizer="lars").validate()


def test_per_modality_optimisers_resume_exactly_and_are_checked(tmp_path):
    data = Blobs(n=150, k=4)

    def cfg(d, kind=None):  # AdamW for "a", SGD for "b"; a cosine moves every lr
        return dataclasses.replace(_config(d, epochs=3), lr_schedule="cosine",
                                   optimizer=kind or {"a": "adamw", "b": "sgd"},
                                   lr={"a": 1e-3, "b": 0.05})

    full = SelfLabelTrainer(encoders(seed=5), data, cfg(tmp_path / "full"))
    assert isinstance(full.optimizer, ChainedOptimizer)
    full.fit()
    last = [r for r in full.history_ if r["event"] == "epoch"][-1]  # the cosine's end: 0
    assert last["lr_per_modality"] == {"a": pytest.approx(0.0, abs=1e-12),
                                       "b": pytest.approx(0.0, abs=1e-12)}
    _assert_same_training(_resume_after_crash(data, cfg, tmp_path / "resumed"), full)
    with pytest.raises(ValueError, match=r"trained with optimizer \{'a': 'adamw', 'b': 'sgd'\}, "
                                         r"the config has 'adamw'"):
        SelfLabelTrainer(encoders(seed=5), data, cfg(tmp_path / "full", "adamw")).fit()
    # one lr per modality where the checkpoint had one for all: other parameter groups
    SelfLabelTrainer(encoders(seed=5), data, _config(tmp_path / "plain", epochs=1)).fit()
    per_modality_lr = dataclasses.replace(_config(tmp_path / "plain", epochs=2),
                                          lr={"a": 0.05, "b": 0.05})
    with pytest.raises(ValueError, match="optimizer state does not fit the config's optimizer"):
        SelfLabelTrainer(encoders(seed=5), data, per_modality_lr).fit()


def test_kmeans_first_labels_resume_exactly(tmp_path):
    """The first labels (k-means) travel in the checkpoint; a resumed run does not redo them."""
    data = Blobs(n=150, k=4)

    def cfg(d):
        return dataclasses.replace(_config(d, epochs=3), init_labels="kmeans")

    full = SelfLabelTrainer(encoders(seed=5), data, cfg(tmp_path / "full"))
    full.fit()
    resumed = _resume_after_crash(data, cfg, tmp_path / "resumed")
    _assert_same_training(resumed, full)
    firsts = [r for r in full.history_ if r["event"] == "clustering" and r["n_iter"] == 0]
    assert len(firsts) == 1 and firsts[0]["clustering"] == 0  # k-means, once


def test_a_cosine_schedule_resumes_exactly_and_ends_at_zero(tmp_path):
    data = Blobs(n=150, k=4)

    def cfg(d):
        return dataclasses.replace(_config(d, epochs=4), lr_schedule="cosine")

    full = SelfLabelTrainer(encoders(seed=5), data, cfg(tmp_path / "full"))
    lrs = [r["lr"] for r in full.fit() if r["event"] == "epoch"]
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12) and lrs[0] > lrs[1] > lrs[2] > lrs[3]
    resumed = _resume_after_crash(data, cfg, tmp_path / "resumed")
    _assert_same_training(resumed, full)
    assert [r["lr"] for r in resumed.history_ if r["event"] == "epoch"] == lrs
    constant = SelfLabelTrainer(encoders(seed=5), data, _config(None, epochs=4))
    assert [r["lr"] for r in constant.fit() if r["event"] == "epoch"] == pytest.approx([0.05] * 4)
    with pytest.raises(ValueError, match="lr_schedule"):
        dataclasses.replace(_config(None), lr_schedule="linear").validate()
