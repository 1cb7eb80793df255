"""StreamingPipeline: chunked input gives exactly the offline frames, with the stated latency."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import synctalk_audio as sa
from synctalk_audio import stream as stream_mod
from synctalk_audio.stream import StreamingPipeline, latency_for

from .conftest import golden_array

#: Streams against offline on the same machine: bit for bit (README: "streaming equals offline bit
#: for bit on CPU"); against the golden files written on another machine: the golden promise.
TOL = 0.0
GOLDEN_TOL = 1e-5
CHUNK_20MS = 320


def _maxdiff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def _stream(sp: StreamingPipeline, wav: np.ndarray, sizes) -> np.ndarray:
    """Push ``wav`` in chunks of the given sizes (cycled), then flush; concatenate everything."""
    parts, pos, k = [], 0, 0
    sizes = list(sizes)
    while pos < wav.shape[0]:
        n = sizes[k % len(sizes)]
        k += 1
        out = sp.push(wav[pos:pos + n])
        assert out.dtype == np.float32 and out.shape[1:] == (32, 16, 16)
        parts.append(out)
        pos += n
    parts.append(sp.flush())
    return np.concatenate(parts)


def _offline(wav, enc, **kwargs) -> np.ndarray:
    return sa.pipeline(wav, checkpoint=enc, device="cpu", **kwargs).frames


@pytest.fixture(scope="module")
def sp(seeded_encoder):
    return StreamingPipeline(checkpoint=seeded_encoder, device="cpu")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# With one torch thread, PyTorch runs a final batch of fewer than 16 windows through other
# kernels (offline too), so only lengths whose N >= 16 are comparable there (see README).
_MIN_LEN = 3000 if _threads() > 1 else 16000


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("clip", ["speech_16k_mono", "speech_44k_stereo_24bit", "silence_2s_16k", "short_0p3s_16k"])
def test_golden_clips_20ms_chunks(clip, sp):
    if clip == "short_0p3s_16k" and _threads() == 1:
        pytest.skip("with 1 torch thread the offline recipe itself runs a batch of 4 through other kernels")
    sp.reset()
    wav = golden_array(clip, "samples.npy")
    ref = golden_array(clip, "frames_ave.npy")
    out = _stream(sp, wav, [CHUNK_20MS])
    assert out.shape == ref.shape
    assert _maxdiff(out, ref) <= GOLDEN_TOL




@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(length=st.integers(_MIN_LEN, 32000), offset=st.integers(0, 30000), noise=st.booleans(),
       sizes=st.lists(st.integers(0, 6000), min_size=1, max_size=8).filter(any),
       context=st.sampled_from(["zeros", "edge"]), preset=st.sampled_from(["synctalk_2d", "wav2lip"]),
       fps=st.sampled_from([25, 20]))
def test_random_partitions_equal_offline(seeded_encoder, demo_wav, length, offset, noise, sizes, context,
                                         preset, fps):
    wav = demo_wav[offset:offset + length]
    if noise:
        wav = (wav + np.random.default_rng(length).normal(0, 0.05, wav.shape)).astype(np.float32)
    config = sa.PRESETS[preset]
    sp = StreamingPipeline(checkpoint=seeded_encoder, device="cpu", context=context, config=config, fps=fps)
    out = _stream(sp, wav, sizes)
    ref = _offline(wav, seeded_encoder, context=context, config=config, fps=fps)
    assert out.shape == ref.shape  # N + 2 frames
    assert _maxdiff(out, ref) <= TOL
    assert sp.frames_out == ref.shape[0] and sp.samples_in == wav.shape[0] and sp.finished


def test_one_sample_chunks(seeded_encoder, demo_wav):
    wav = demo_wav[10000:10000 + max(_MIN_LEN, 9000)]
    sp = StreamingPipeline(checkpoint=seeded_encoder, device="cpu")
    out = _stream(sp, wav, [1])
    ref = _offline(wav, seeded_encoder)
    assert out.shape == ref.shape and _maxdiff(out, ref) <= TOL


def test_offline_last_batch_of_one(seeded_encoder, demo_wav):
    # batch_size=4 and N = 21 ≡ 1 (mod 4): offline runs the last window alone; the exact
    # encoder is batch-invariant, so the stream's other grouping gives the same rows.
    wav = demo_wav[:15400]
    assert sa.frame_count(1 + wav.shape[0] // 200, 25) % 4 == 1
    ref = sa.pipeline(wav, checkpoint=seeded_encoder, device="cpu", batch_size=4).frames
    sp = StreamingPipeline(checkpoint=seeded_encoder, device="cpu", batch_size=4)
    out = _stream(sp, wav, [CHUNK_20MS])
    assert out.shape == ref.shape and _maxdiff(out, ref) <= TOL


def test_fast_precision_within_its_bound(seeded_encoder, demo_wav):
    from synctalk_audio.pipeline import PRECISIONS

    wav = demo_wav[:24000]
    exact = sa.pipeline(wav, checkpoint=seeded_encoder, device="cpu").frames
    fast = _stream(StreamingPipeline(checkpoint=seeded_encoder, device="cpu", precision="fast"), wav, [CHUNK_20MS])
    offline_fast = sa.pipeline(wav, checkpoint=seeded_encoder, device="cpu", precision="fast").frames
    assert fast.shape == exact.shape
    assert _maxdiff(fast, offline_fast) <= TOL
    assert _maxdiff(fast, exact) <= PRECISIONS["fast"].max_rel * float(np.abs(exact).max())


def test_large_pushes_are_split(seeded_encoder, demo_wav, monkeypatch):
    monkeypatch.setattr(stream_mod, "_PIECE", 777)
    wav = demo_wav[:20000]
    sp = StreamingPipeline(checkpoint=seeded_encoder, device="cpu")
    out = _stream(sp, wav, [20000])
    assert _maxdiff(out, _offline(wav, seeded_encoder)) <= TOL


def test_reset_and_reuse(sp, demo_wav, seeded_encoder):
    wav = demo_wav[:12000]
    sp.reset()
    first = _stream(sp, wav, [CHUNK_20MS])
    sp.reset()
    assert sp.push(demo_wav[30000:40000]).shape[0] > 0  # a half-fed stream, then reset
    sp.reset()
    assert sp.samples_in == 0 and sp.frames_out == 0 and not sp.finished
    second = _stream(sp, wav, [641])
    assert np.array_equal(first, second)
    assert _maxdiff(first, _offline(wav, seeded_encoder)) <= TOL


def test_state_stays_bounded(sp, demo_wav):
    """No history is kept: buffers stay a few windows long whatever the stream length."""
    sp.reset()
    wav = np.tile(demo_wav, 2)[:100000]
    worst = [0, 0, 0, 0]
    for i in range(0, wav.shape[0], CHUNK_20MS):
        sp.push(wav[i:i + CHUNK_20MS])
        st_ = sp._state
        worst = [max(worst[0], st_.carry.buf.shape[0]), max(worst[1], st_.mel_hi - st_.mel_lo),
                 max(worst[2], 0 if st_.ctx is None else st_.ctx_hi - st_.ctx_lo),
                 max(worst[3], st_.mel.shape[0], 0 if st_.ctx is None else st_.ctx.shape[0])]
    assert worst[0] < 800 + CHUNK_20MS      # STFT overlap + one chunk
    assert worst[1] <= 16 + 16 + 4           # one window plus the clamp reserve
    assert worst[2] <= 2 * stream_mod.RADIUS + 2
    assert worst[3] <= stream_mod._MIN_ROWS  # the buffers never grew
    assert sp.frames_out > 100


# --------------------------------------------------------------------------- latency


def test_latency_from_geometry(sp):
    lat = latency_for(25)
    assert (lat.samples, lat.ms) == (7240, 452.5)
    assert lat.context_samples == 6 * 640 and lat.window_samples == 15 * 200 and lat.stft_samples == 400
    assert latency_for(20).samples == 6 * 800 + 3400
    assert sp.latency == lat and abs(lat.frames - 7240 / 640) < 1e-12


def test_frames_emitted_exactly_when_their_input_is_complete(seeded_encoder, demo_wav):
    """Sample by sample: frame j appears after exactly needed_samples(j) samples, never earlier,
    and needed_samples(j) - j·640 never exceeds the stated latency (and reaches it)."""
    wav = demo_wav[5000:15000]
    sp = StreamingPipeline(checkpoint=seeded_encoder, device="cpu")
    emitted_at = []
    for i in range(wav.shape[0]):
        k = sp.push(wav[i:i + 1]).shape[0]
        emitted_at += [i + 1] * k
    tail = sp.flush().shape[0]
    assert tail >= stream_mod.RADIUS - 1 and len(emitted_at) > 0
    lags = []
    for j, m in enumerate(emitted_at):
        assert m == sp.needed_samples(j)
        lags.append(m - j * 640)
    assert max(lags) == sp.latency.samples


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(7000, 16000), seed=st.integers(0, 2**16))
def test_emitted_frames_depend_only_on_past_samples(seeded_encoder, demo_wav, cut, seed):
    prefix = demo_wav[:cut]
    other = np.random.default_rng(seed).uniform(-1, 1, 4000).astype(np.float32)
    a = StreamingPipeline(checkpoint=seeded_encoder, device="cpu")
    b = StreamingPipeline(checkpoint=seeded_encoder, device="cpu")
    early_a = np.concatenate([a.push(prefix[i:i + 500]) for i in range(0, cut, 500)])
    early_b = b.push(prefix)
    assert np.array_equal(early_a, early_b)
    full_a = np.concatenate([early_a, a.push(demo_wav[cut:cut + 4000]), a.flush()])
    full_b = np.concatenate([early_b, b.push(other), b.flush()])
    k = early_a.shape[0]
    assert np.array_equal(full_a[:k], full_b[:k])  # a different future does not change them
    assert not np.array_equal(full_a[k:], full_b[k:])


# --------------------------------------------------------------------------- bad input


def test_rejected_chunks_do_not_corrupt_the_stream(seeded_encoder, demo_wav):
    wav = demo_wav[:14000]
    sp = StreamingPipeline(checkpoint=seeded_encoder, device="cpu")
    parts = [sp.push(wav[:5000])]
    bad_nan = wav[5000:5320].copy()
    bad_nan[7] = np.nan
    bad = [
        (bad_nan, "non-finite"),
        (np.array([np.inf], np.float32), "non-finite"),
        ((wav[5000:5320] * 32768).astype(np.int16), "floating point"),
        (np.stack([wav[5000:5320]] * 2, axis=1), "to_mono"),
        (np.zeros((2, 3, 4), np.float32), "1-D"),
        (np.float32(0.5), "1-D"),
        ("wav", "1-D float array"),
        (np.array([1 + 1j]), "floating point"),
        ([[0.1], [0.1, 0.2]], "numpy cannot make an array"),   # ragged: once a raw ValueError
        (torch.zeros(320, requires_grad=True), "requires grad"),  # once a raw RuntimeError
        (np.ma.masked_array(wav[5000:5320], mask=np.ones(320, bool)), "masked array"),
        (np.full(320, 1e39), "beyond float32 range"),            # offline refuses it too
    ]
    for chunk, match in bad:
        with pytest.raises(sa.AudioError, match=match):
            sp.push(chunk)
        assert sp.samples_in == 5000
    for i in range(5000, wav.shape[0], CHUNK_20MS):
        parts.append(sp.push(wav[i:i + CHUNK_20MS]))
    parts.append(sp.flush())
    out = np.concatenate(parts)
    assert _maxdiff(out, _offline(wav, seeded_encoder)) <= TOL


def test_push_and_flush_after_flush(sp, demo_wav):
    sp.reset()
    sp.push(demo_wav[:4000])
    sp.flush()
    with pytest.raises(sa.StreamError, match="after flush"):
        sp.push(demo_wav[:320])
    with pytest.raises(sa.StreamError, match="already ended"):
        sp.flush()
    sp.reset()
    assert sp.push(demo_wav[:320]).shape == (0, 32, 16, 16)


def test_too_short_at_flush_keeps_the_stream_open(sp, demo_wav, seeded_encoder):
    sp.reset()
    sp.push(demo_wav[:2999])
    with pytest.raises(sa.AudioError, match="too short"):
        sp.flush()
    assert not sp.finished
    n = max(_MIN_LEN, 6000)
    rest = np.concatenate([sp.push(demo_wav[2999:n]), sp.flush()])
    assert _maxdiff(rest, _offline(demo_wav[:n], seeded_encoder)) <= TOL
    sp.reset()
    with pytest.raises(sa.AudioError, match="too short"):
        sp.flush()  # nothing pushed at all


def test_empty_and_odd_but_valid_chunks(sp, demo_wav, seeded_encoder):
    sp.reset()
    empty = sp.push(np.empty(0, np.float32))
    assert empty.shape == (0, 32, 16, 16) and empty.dtype == np.float32
    wav = demo_wav[:max(_MIN_LEN, 9000)]
    # float64, a list and a strided view are accepted and treated like float32 offline input
    parts = [sp.push(wav[:3000].astype(np.float64)), sp.push(wav[3000:3100].tolist()),
             sp.push(np.repeat(wav[3100:], 2)[::2]), sp.flush()]
    assert _maxdiff(np.concatenate(parts), _offline(wav, seeded_encoder)) <= TOL


@pytest.mark.parametrize("kwargs,match", [
    ({"mode": "hubert"}, "does not stream: HuBERT normalises the whole file"),
    ({"mode": "wenet"}, "not 'wenet'|needs the wenet encoder.onnx"),   # wenet streams need the wenet encoder
    ({"mode": "nope"}, "unknown mode"),
    ({"precision": "half"}, "precision"),
    ({"context": "mirror"}, "unknown context"),
    ({"fps": 0}, "fps"),
    ({"batch_size": 0}, "batch_size"),
    ({"threads": 0}, "threads"),
    ({"config": "wav2lip"}, "MelConfig"),
])
def test_bad_configuration(seeded_encoder, kwargs, match):
    with pytest.raises(sa.ConfigError, match=match):
        StreamingPipeline(checkpoint=seeded_encoder, device="cpu", **kwargs)


def test_missing_checkpoint():
    with pytest.raises(sa.ConfigError, match="checkpoint is required"):
        StreamingPipeline(device="cpu")
    with pytest.raises(sa.CheckpointError):
        StreamingPipeline(checkpoint="/nonexistent/ckpt.pth", device="cpu")


@pytest.mark.parametrize("threads", [None, 2])
def test_thread_setting_does_not_change_frames(seeded_encoder, demo_wav, threads):
    import torch

    before = torch.get_num_threads()
    wav = demo_wav[:12000]
    sp = StreamingPipeline(checkpoint=seeded_encoder, device="cpu", threads=threads)
    out = _stream(sp, wav, [CHUNK_20MS])
    assert torch.get_num_threads() == before  # restored after every call
    assert _maxdiff(out, _offline(wav, seeded_encoder)) <= TOL


# --------------------------------------------------------------------------- CLI


def test_cli_stream_json_and_output(tmp_path, capsys):
    import json

    from synctalk_audio.cli import main

    from .conftest import golden_input

    out = tmp_path / "frames.npy"
    rc = main(["stream", str(golden_input("speech_16k_mono")), "--checkpoint", "seeded", "--chunk-ms", "20",
               "--json", "-o", str(out)])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    ref = golden_array("speech_16k_mono", "frames_ave.npy")
    assert report["n_frames"] == ref.shape[0] and report["chunk_samples"] == 320
    assert report["algorithmic_latency"]["samples"] == 7240
    for key in ("chunk_wall_ms", "frame_compute_ms", "frame_ready_ms"):
        assert set(report[key]) >= {"median", "p95", "max"}
    assert _maxdiff(np.load(out), ref) <= GOLDEN_TOL


def test_cli_stream_text_and_errors(tmp_path, capsys):
    from synctalk_audio.cli import main

    from .conftest import golden_input

    wav = str(golden_input("short_0p3s_16k"))
    assert main(["stream", wav, "--checkpoint", "seeded", "--chunk-ms", "40"]) == 0
    text = capsys.readouterr().out
    assert "algorithmic latency: 7240 samples = 452.5 ms" in text and "p95" in text
    missing = tmp_path / "nope" / "f.npy"
    for argv in (["--chunk-ms", "0"], ["-o", str(missing)], ["--mode", "hubert"]):
        assert main(["stream", wav, "--checkpoint", "seeded", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("synctalk-audio: error: ") and "Traceback" not in "\n".join(err)
    assert not missing.parent.exists()


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["exact", "fast"])
def test_cuda_stream_close_to_offline(seeded_encoder, demo_wav, precision):
    """On CUDA the encoder is cuDNN (not batch-invariant): streamed rows may differ from offline
    by float32 round-off (exact) and stay within the precision's bound of the CPU's exact rows."""
    from synctalk_audio.pipeline import PRECISIONS

    wav = demo_wav[:40000]
    cpu = sa.pipeline(wav, checkpoint=seeded_encoder, device="cpu").frames
    scale = float(np.abs(cpu).max())
    sp = StreamingPipeline(checkpoint=seeded_encoder, device="cuda", precision=precision)
    streamed = _stream(sp, wav, [CHUNK_20MS, 1000, 7])
    offline = sa.pipeline(wav, checkpoint=seeded_encoder, device="cuda", precision=precision).frames
    assert streamed.shape == offline.shape == cpu.shape
    bound = 1e-5 * scale if precision == "exact" else PRECISIONS["fast"].max_rel * scale
    assert _maxdiff(streamed, cpu) <= bound and _maxdiff(offline, cpu) <= bound


@pytest.mark.parametrize("frame", [-1, 1.5, True, "a", None])
def test_needed_samples_takes_frame_indices_only(sp, frame):
    with pytest.raises(sa.ConfigError, match="frame must be a non-negative integer"):
        sp.needed_samples(frame)
    assert sp.needed_samples(np.int64(3)) == sp.needed_samples(3) > 0
