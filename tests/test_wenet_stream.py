"""wenet streams: StreamingPipeline and StreamPool with mode="wenet" equal pipeline(mode="wenet") bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("onnxruntime")

import synctalk_audio as sa  # noqa: E402
from synctalk_audio.kaldi_fbank import fbank  # noqa: E402
from synctalk_audio.stream import StreamingPipeline, StreamPool, latency_for  # noqa: E402
from synctalk_audio.wenet import WENET_MIN_SAMPLES, wenet_pcm, write_standin_wenet_onnx  # noqa: E402

from .conftest import golden_array  # noqa: E402

TICK = 320


@pytest.fixture(scope="module")
def wenet_onnx(tmp_path_factory) -> str:
    return str(write_standin_wenet_onnx(tmp_path_factory.mktemp("wenet") / "encoder.onnx", seed=0))


@pytest.fixture(scope="module")
def clips(demo_wav) -> list[np.ndarray]:
    """Real speech of several lengths, down to the shortest wenet accepts."""
    return [demo_wav[:54000], golden_array("speech_16k_mono", "samples.npy"), demo_wav[30000:47777],
            demo_wav[1000:1000 + WENET_MIN_SAMPLES], demo_wav[2000:6000], demo_wav[7000:7000 + 4321]]


def _offline(wav, onnx, radius=8, context="zeros"):
    return sa.pipeline(wav, mode="wenet", checkpoint=onnx, radius=radius, context=context).frames


def _stream(sp, wav, sizes):
    out, pos, i = [], 0, 0
    while pos < wav.shape[0]:
        n = sizes[i % len(sizes)]
        out.append(sp.push(wav[pos:pos + n]))
        pos, i = pos + n, i + 1
    out.append(sp.flush())
    return np.concatenate(out)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(400, 5000), seed=st.integers(0, 2**16))
def test_fbank_rows_do_not_depend_on_the_block_they_are_computed_in(n, seed):
    """The property exact streaming rests on: fbank of any run of frames equals those rows of the whole."""
    rng = np.random.default_rng(seed)
    pcm = np.round(rng.normal(0, 3000, n + 10720)).astype(np.float32)
    pcm[rng.integers(0, pcm.shape[0], 5)] = 0
    whole = fbank(pcm)
    f = 0
    while f < whole.shape[0]:
        m = min(int(rng.choice([1, 2, 3, 5, 15, 16, 40])), whole.shape[0] - f)
        assert np.array_equal(fbank(pcm[160 * f:160 * (f + m - 1) + 400]), whole[f:f + m]), (f, m)
        f += m


@pytest.mark.parametrize("radius,context", [(8, "zeros"), (4, "edge")])
def test_wenet_stream_equals_offline_bit_for_bit(wenet_onnx, clips, radius, context):
    rng = np.random.default_rng(radius)
    for i, wav in enumerate(clips):
        sp = StreamingPipeline(checkpoint=wenet_onnx, mode="wenet", radius=radius, context=context)
        assert sp.frame_shape == sa.config.mode_shape("wenet", radius) and sp.fps == 20
        sizes = [int(s) for s in rng.choice([1, 160, 320, 321, 1000, 5000], 7)]
        got = _stream(sp, wav, sizes)
        ref = _offline(wav, wenet_onnx, radius, context)
        assert got.shape == ref.shape and np.array_equal(got, ref), (i, sizes)
        assert sp.frames_out == ref.shape[0] and sp.samples_in == wav.shape[0] and sp.finished
        assert f"samples_in={wav.shape[0]}" in repr(sp) and "mode='wenet'" in repr(sp)


def test_wenet_frames_emitted_exactly_when_their_input_is_complete(wenet_onnx, demo_wav):
    """Sample by sample: frame j appears after exactly needed_samples(j) samples; the lag
    needed_samples(j) − 800·j is the stated latency for every frame (20 fps: 800 samples a frame)."""
    wav = demo_wav[:24000]
    sp = StreamingPipeline(checkpoint=wenet_onnx, mode="wenet", radius=4)
    emitted_at = []
    for lo in range(0, wav.shape[0], 40):
        for i in range(lo, min(lo + 40, wav.shape[0])):
            emitted_at += [i + 1] * sp.push(wav[i:i + 1]).shape[0]
    sp.flush()
    assert len(emitted_at) > 10
    for j, m in enumerate(emitted_at):
        assert m == sp.needed_samples(j) and m - 800 * j == sp.latency.samples, j
    lat = latency_for(20, radius=4, mode="wenet")
    assert sp.latency == lat and lat.samples == 3 * 800 + 5840 and lat.ms == 515.0
    assert latency_for(20, radius=8, mode="wenet").samples == 7 * 800 + 5840


def test_wenet_stream_errors_and_reset(wenet_onnx, clips):
    sp = StreamingPipeline(checkpoint=wenet_onnx, mode="wenet")
    sp.push(clips[0][:WENET_MIN_SAMPLES - 1])
    with pytest.raises(sa.AudioError, match="wenet needs at least 240"):
        sp.flush()                      # too short: the stream stays open
    rest = sp.push(clips[0][WENET_MIN_SAMPLES - 1:8000])
    got = np.concatenate([rest, sp.flush()])
    assert np.array_equal(got, _offline(clips[0][:8000], wenet_onnx))
    with pytest.raises(sa.AudioError, match="floating point"):
        sp.reset() or sp.push((clips[0][:320] * 32767).astype(np.int16))
    assert sp.samples_in == 0
    for kwargs, match in [({"fps": 25}, "20"), ({"precision": "exact"}, "precision|onnx"),
                          ({"config": sa.WAV2LIP}, "config")]:
        with pytest.raises(sa.ConfigError, match=match):
            StreamingPipeline(checkpoint=wenet_onnx, mode="wenet", **kwargs)
    with pytest.raises(sa.ConfigError, match="normalis"):
        StreamingPipeline(checkpoint=wenet_onnx, mode="hubert")
    from synctalk_audio.encoder import AudioEncoder

    for wrong in (AudioEncoder(), {"w": 1}):   # an ave encoder where wenet's encoder.onnx belongs: one clear line
        with pytest.raises(sa.ConfigError, match="needs the wenet encoder.onnx"):
            sa.pipeline(clips[0], mode="wenet", checkpoint=wrong)


@pytest.mark.parametrize("overlap", [False, True, 2])
def test_wenet_pool_streams_equal_offline(wenet_onnx, clips, overlap):
    pool = StreamPool(checkpoint=wenet_onnx, mode="wenet", radius=4, context="edge", overlap=overlap)
    assert pool.frame_shape == (128, 16, 32)
    assert "StreamPool(mode='wenet'" in repr(pool)
    wavs = dict(enumerate(clips[:3]))
    start = {0: 0, 1: 7, 2: 30}
    got = {k: [] for k in wavs}
    pos = {k: 0 for k in wavs}
    tick = 0
    while any(pos[k] < w.shape[0] for k, w in wavs.items()):
        chunks = {k: w[pos[k]:pos[k] + TICK] for k, w in wavs.items() if tick >= start[k] and pos[k] < w.shape[0]}
        for k in chunks:
            pos[k] += TICK
        for k, v in pool.push(chunks).items():
            got[k].append(v)
        for k in [k for k in chunks if pos[k] >= wavs[k].shape[0]]:
            got[k].append(pool.flush(k))
        tick += 1
    for k, w in wavs.items():
        assert np.array_equal(np.concatenate(got[k]), _offline(w, wenet_onnx, 4, "edge")), k


def test_wenet_pcm_of_a_chunk_is_the_chunk_of_wenet_pcm(clips):
    """The stream converts each chunk on its own: int16 truncation is per sample."""
    wav = clips[1]
    whole = wenet_pcm(wav)
    parts = [wenet_pcm(wav[lo:lo + 333])[5120:5120 + wav[lo:lo + 333].shape[0]] for lo in range(0, wav.shape[0], 333)]
    assert np.array_equal(np.concatenate(parts), whole[5120:5120 + wav.shape[0]])


def test_cli_stream_wenet_equals_offline_frames(wenet_onnx, tmp_path, capsys):
    """`synctalk-audio stream --mode wenet --radius 4` reads the file as the wenet recipe does
    (channel 0), streams it and saves exactly pipeline(mode="wenet")'s frames."""
    import json

    from synctalk_audio.cli import main

    from .conftest import golden_input

    wav = golden_input("speech_44k_stereo_24bit")   # stereo, 44.1 kHz: channel 0, resampled
    out = tmp_path / "frames.npy"
    assert main(["stream", str(wav), "--mode", "wenet", "--radius", "4", "--checkpoint", wenet_onnx,
                 "--json", "-o", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    ref = sa.pipeline(str(wav), mode="wenet", checkpoint=wenet_onnx, radius=4).frames
    assert report["algorithmic_latency"]["samples"] == 8240 and report["n_frames"] == ref.shape[0]
    assert np.array_equal(np.load(out), ref)
    assert main(["stream", str(wav), "--mode", "hubert", "--checkpoint", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("synctalk-audio: error: mode 'hubert' does not stream")


def test_cli_stream_ave_takes_radius(tmp_path, capsys):
    """--radius reaches the stream (ave at radius 4: (N + 2, 16, 16, 16) frames, as offline)."""
    from synctalk_audio.cli import main

    from .conftest import golden_input

    wav, out = str(golden_input("speech_16k_mono")), tmp_path / "frames.npy"
    assert main(["stream", wav, "--radius", "4", "--checkpoint", "seeded", "--device", "cpu", "-o", str(out)]) == 0
    ref = sa.pipeline(wav, checkpoint="seeded", device="cpu", radius=4).frames
    assert ref.shape[1:] == (16, 16, 16) and np.array_equal(np.load(out), ref)
