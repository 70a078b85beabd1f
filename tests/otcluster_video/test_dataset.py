from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.data import DataLoader

from otcluster_video import AVDataset, VideoInfo


def test_item_contract(prepared, cpu_config):
    ds = AVDataset(prepared.manifest, cpu_config, train=True)
    item = ds[2]
    assert set(item) == {"video", "audio", "index"}
    assert item["video"].shape == (3, 8, 32, 32) and item["video"].dtype == torch.float32
    assert item["audio"].shape == (1, 64, 99) and item["audio"].dtype == torch.float32
    assert item["index"] == 2
    assert torch.isfinite(item["video"]).all() and torch.isfinite(item["audio"]).all()


def test_labels_for_evaluation(prepared, cpu_config):
    ds = AVDataset(prepared.videos, cpu_config, train=False, return_label=True)
    assert ds.class_names == sorted({v.label for v in prepared.videos})
    assert [ds[i]["label"] for i in range(len(ds))] == [
        ds.class_names.index(v.label) for v in prepared.videos
    ]


def test_batches_through_a_dataloader(prepared, cpu_config):
    ds = AVDataset(prepared.videos, cpu_config, train=True)
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert batch["video"].shape == (4, 3, 8, 32, 32)
    assert batch["audio"].shape == (4, 1, 64, 99)
    assert batch["index"].tolist() == [0, 1, 2, 3]


def test_eval_is_deterministic_and_train_is_random(prepared, cpu_config):
    ev = AVDataset(prepared.videos, cpu_config, train=False)
    a, b = ev[1], ev[1]
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["audio"], b["audio"])
    tr = AVDataset(prepared.videos, cpu_config, train=True)
    torch.manual_seed(0)
    draws = [tr[1] for _ in range(4)]
    assert any(not torch.equal(draws[0]["video"], d["video"]) for d in draws[1:])
    assert any(not torch.equal(draws[0]["audio"], d["audio"]) for d in draws[1:])


def test_spec_augment_masks_training_items_only(prepared, cpu_config):
    masked = dataclasses.replace(
        cpu_config, audio=dataclasses.replace(cpu_config.audio, freq_mask=20, time_mask=30))
    ev, ev_masked = (AVDataset(prepared.videos, c, train=False) for c in (cpu_config, masked))
    assert torch.equal(ev[1]["audio"], ev_masked[1]["audio"])
    tr = AVDataset(prepared.videos, masked, train=True)
    torch.manual_seed(0)
    specs = [tr[1]["audio"][0] for _ in range(4)]
    # a masked mel bin is one value over all frames (and a masked frame over all bins)
    flat_bins = [int((s == s[:, :1]).all(1).sum()) for s in specs]
    flat_frames = [int((s == s[:1, :]).all(0).sum()) for s in specs]
    assert max(flat_bins) > 0 and max(flat_frames) > 0
    unmasked = ev[1]["audio"][0]
    assert int((unmasked == unmasked[:, :1]).all(1).sum()) == 0


def test_pitch_shift_changes_training_items_only(prepared, cpu_config):
    shifted = dataclasses.replace(
        cpu_config, audio=dataclasses.replace(cpu_config.audio, volume_jitter=(1.0, 1.0),
                                              pitch_shift=4.0))
    plain = dataclasses.replace(shifted, audio=dataclasses.replace(shifted.audio, pitch_shift=0.0))
    assert torch.equal(AVDataset(prepared.videos, plain, train=False)[1]["audio"],
                       AVDataset(prepared.videos, shifted, train=False)[1]["audio"])
    plain_tr, tr = (AVDataset(prepared.videos, c, train=True) for c in (plain, shifted))
    draws = []
    for seed in range(3):  # the same window and crop: only the pitch differs
        torch.manual_seed(seed)
        base = plain_tr[1]["audio"]
        torch.manual_seed(seed)
        assert torch.equal(base, plain_tr[1]["audio"])
        torch.manual_seed(seed)
        draws.append(tr[1]["audio"])
        assert draws[-1].shape == base.shape and torch.isfinite(draws[-1]).all()
        assert not torch.allclose(draws[-1], base, atol=1e-3)
    assert not torch.allclose(draws[0], draws[1], atol=1e-3)


def test_audio_noise_changes_training_items_only_and_is_off_by_default(prepared, cpu_config):
    quiet = dataclasses.replace(
        cpu_config, audio=dataclasses.replace(cpu_config.audio, volume_jitter=(1.0, 1.0)))
    loud = dataclasses.replace(quiet, audio=dataclasses.replace(quiet.audio, noise=1.0,
                                                                 noise_snr=(-30.0, -30.0)))
    assert quiet.audio.noise == 0.0
    assert torch.equal(AVDataset(prepared.videos, quiet, train=False)[1]["audio"],
                       AVDataset(prepared.videos, loud, train=False)[1]["audio"])
    torch.manual_seed(0)
    clean = AVDataset(prepared.videos, quiet, train=True)[1]
    torch.manual_seed(0)
    noisy = AVDataset(prepared.videos, loud, train=True)[1]
    assert torch.isfinite(noisy["audio"]).all() and noisy["audio"].shape == clean["audio"].shape
    # white noise 30 dB above the signal fills every band: the log-mel image is much louder
    assert float(noisy["audio"].mean()) > float(clean["audio"].mean()) + 3.0


def test_clip_normalisation_removes_the_mean_log_mel_in_training_and_inference(
        prepared, cpu_config):
    centred = dataclasses.replace(
        cpu_config, audio=dataclasses.replace(cpu_config.audio, normalize="clip"))
    a = AVDataset(prepared.videos, cpu_config, train=False)[1]["audio"]
    b = AVDataset(prepared.videos, centred, train=False)[1]["audio"]
    assert abs(float(a.mean())) > 1.0  # a log-mel image is far from centred
    assert torch.allclose(b, a - a.mean(), atol=1e-5)
    b_train = AVDataset(prepared.videos, centred, train=True)[1]["audio"]  # after the gain
    assert abs(float(b_train.mean())) < 1e-4


def test_windows_share_a_centre_inside_the_video(prepared, cpu_config):
    tr = AVDataset(prepared.videos, cpu_config, train=True)
    torch.manual_seed(0)
    for _ in range(20):
        video_start, audio_start = tr.windows(0)
        assert 0 <= video_start <= 1.5 - cpu_config.clip.seconds
        assert video_start + cpu_config.clip.seconds / 2 == pytest.approx(
            audio_start + cpu_config.audio.seconds / 2
        )
    ev = AVDataset(prepared.videos, cpu_config, train=False)
    assert ev.windows(0) == (0.25, 0.25)  # centred in the 1.5 s video
    first = AVDataset(prepared.videos, cpu_config, train=False, position=0.0)
    last = AVDataset(prepared.videos, cpu_config, train=True, position=1.0)
    assert first.windows(0) == (0.0, 0.0) and last.windows(0) == (0.5, 0.5)
    with pytest.raises(ValueError, match="position"):
        AVDataset(prepared.videos, cpu_config, train=False, position=1.5)


def test_cache_gives_the_same_eval_items(prepared, cpu_config, tmp_path):
    plain = AVDataset(prepared.videos, cpu_config, train=False)
    cached = AVDataset(prepared.videos, cpu_config, train=False, cache_dir=tmp_path)
    for i in (0, 4):
        a, b = plain[i], cached[i]
        assert torch.equal(a["video"], b["video"])
        assert torch.allclose(a["audio"], b["audio"], atol=1e-3)
    assert len(list(tmp_path.rglob("*.frames.npy"))) == 2
    assert len(list(tmp_path.rglob("*.audio.npy"))) == 2
    again = AVDataset(prepared.videos, cpu_config, train=False, cache_dir=tmp_path)
    assert torch.equal(again[4]["video"], cached[4]["video"])


def test_decode_failure_is_counted_and_replaced(prepared, synth_dir, cpu_config):
    truncated = str(next(synth_dir.rglob("*truncated.mp4")))
    bad = dataclasses.replace(prepared.videos[0], path=truncated)
    ds = AVDataset([bad, *prepared.videos[1:3]], cpu_config, train=True, return_source=True)
    item = ds[0]
    assert item["index"] == 0  # the item keeps its own index ...
    assert item["source"] == 1  # ... and holds the next sample's clip
    assert ds[1]["index"] == ds[1]["source"] == 1
    assert ds.decode_failures == {truncated: 1}
    ds[0]
    assert ds.decode_failures == {truncated: 1}  # remembered as bad: not decoded again


def test_all_failures_raise_a_clear_error(synth_dir, cpu_config):
    bad = VideoInfo(str(synth_dir / "nope.mp4"), "", 2.0, 16.0, 32, 32, 32, True, 16000, 2.0)
    cfg = dataclasses.replace(cpu_config, data=dataclasses.replace(cpu_config.data, max_retries=2))
    with pytest.raises(RuntimeError, match="failed to decode"):
        AVDataset([bad, bad, bad], cfg, train=False)[0]


def test_empty_manifest_is_rejected(cpu_config):
    with pytest.raises(ValueError, match="empty"):
        AVDataset([], cpu_config, train=True)
