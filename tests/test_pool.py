"""StreamPool: many streams, one encoder run per push, each stream exactly its offline frames."""

from __future__ import annotations

import numpy as np
import pytest

import synctalk_audio as sa
from synctalk_audio.stream import PoolError, StreamPool, latency_for

from .conftest import golden_array

TICK = 320  # 20 ms at 16 kHz


@pytest.fixture(scope="module")
def speech(demo_wav) -> list[np.ndarray]:
    """Real speech of different lengths (1.0 … 3.4 s) from the golden clips and the demo file."""
    return [demo_wav[:54000], golden_array("speech_16k_mono", "samples.npy"),
            golden_array("speech_44k_stereo_24bit", "samples.npy"), demo_wav[30000:],
            golden_array("speech_22k_mono", "samples.npy")]


def _offline(wav: np.ndarray, checkpoint, **kwargs) -> np.ndarray:
    return sa.pipeline(wav, checkpoint=checkpoint, device="cpu", **kwargs).frames


def _chunks(wav: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Random chunk sizes: mostly around 20 ms, some empty, some long."""
    out, pos = [], 0
    while pos < wav.shape[0]:
        n = int(rng.choice([0, 1, 160, 320, 320, 320, 555, 2000, 7000]))
        out.append(wav[pos:pos + n])
        pos += n
    return out


def _simulate(pool: StreamPool, plan: dict, rng: np.random.Generator) -> dict:
    """Run streams ``{key: (start_tick, chunks, flush_delay)}`` through ``pool``: at every tick
    each active stream pushes its next chunk (all in one push); a stream is flushed
    ``flush_delay`` ticks after its last chunk. Returns ``{key: all frames}``."""
    got = {key: [] for key in plan}
    pending = {key: list(chunks) for key, (_, chunks, _) in plan.items()}
    done_at: dict = {}
    tick = 0
    while pending or done_at:
        batch = {key: pending[key].pop(0) for key in list(pending) if plan[key][0] <= tick}
        for key, frames in pool.push(batch).items():
            assert frames.dtype == np.float32 and frames.shape[1:] == pool.frame_shape
            got[key].append(frames)
        for key in list(pending):
            if not pending[key]:
                del pending[key]
                done_at[key] = tick + plan[key][2]
        for key in [k for k, t in done_at.items() if t <= tick]:
            got[key].append(pool.flush(key))
            del done_at[key]
            assert key not in pool.keys()
        tick += 1
    return {key: np.concatenate(parts) for key, parts in got.items()}


@pytest.mark.parametrize("radius,context,seed", [(8, "zeros", 0), (4, "edge", 1)])
def test_streams_equal_offline_bit_for_bit(seeded_encoder, speech, radius, context, seed):
    rng = np.random.default_rng(seed)
    pool = StreamPool(checkpoint=seeded_encoder, device="cpu", radius=radius, context=context)
    plan = {f"user{i}": (int(rng.integers(0, 40)), _chunks(wav, rng), int(rng.integers(0, 3)))
            for i, wav in enumerate(speech)}
    got = _simulate(pool, plan, rng)
    assert pool.keys() == []
    for i, wav in enumerate(speech):
        ref = _offline(wav, seeded_encoder, radius=radius, context=context)
        assert got[f"user{i}"].shape == ref.shape
        assert np.array_equal(got[f"user{i}"], ref), f"user{i}"


def test_keys_reused_after_flush_and_reset(seeded_encoder, speech):
    pool = StreamPool(checkpoint=seeded_encoder, device="cpu", radius=4, context="edge")
    a, b = speech[1], speech[3]

    def feed(key, wav, other=None):
        parts = []
        for lo in range(0, wav.shape[0], TICK):
            chunks = {key: wav[lo:lo + TICK]}
            if other is not None:
                chunks["other"] = other[lo % other.shape[0]:][:TICK]
            parts.append(pool.push(chunks)[key])
        return parts

    first = np.concatenate(feed("k", a) + [pool.flush("k")])
    again = np.concatenate(feed("k", b, other=a) + [pool.flush("k")])  # same key, new stream
    feed("k", b[:12000])
    pool.reset("k")                                                    # half a stream, forgotten
    assert "k" not in pool.keys() and "other" in pool.keys()
    third = np.concatenate(feed("k", a) + [pool.flush("k")])
    ref_a, ref_b = (_offline(w, seeded_encoder, radius=4, context="edge") for w in (a, b))
    assert np.array_equal(first, ref_a) and np.array_equal(third, ref_a) and np.array_equal(again, ref_b)
    pool.reset("never-opened")  # no error


#: b's bad chunks: at its first push (a new stream), then twice mid-stream.
BAD = {0: ("nan", "non-finite"), 25: ("int16", "floating point"), 26: ("2d", "1-D mono")}


def test_one_failing_stream_leaves_the_others_and_itself_intact(seeded_encoder, speech):
    pool = StreamPool(checkpoint=seeded_encoder, device="cpu", radius=4, context="edge")
    wavs = {"a": speech[0], "b": speech[1], "c": speech[2]}
    got = {k: [] for k in wavs}
    n_ticks = max(w.shape[0] for w in wavs.values()) // TICK + 1
    failed = 0
    for t in range(n_ticks):
        chunks = {k: w[t * TICK:(t + 1) * TICK] for k, w in wavs.items() if t * TICK < w.shape[0]}
        if t in BAD:
            good = chunks["b"]
            bad, match = BAD[t]
            chunks["b"] = {"nan": np.where(np.arange(good.shape[0]) == 5, np.nan, good).astype(np.float32),
                           "int16": (good * 32767).astype(np.int16),
                           "2d": np.stack([good, good], axis=1)}[bad]
            with pytest.raises(PoolError, match=match) as info:
                pool.push(chunks)
            failed += 1
            err = info.value
            assert set(err.errors) == {"b"} and isinstance(err.errors["b"], sa.AudioError)
            assert isinstance(err, sa.StreamError) and set(err.frames) == set(chunks) - {"b"}
            for k, frames in err.frames.items():
                got[k].append(frames)
            if t == 0:
                assert "b" not in pool.keys()  # a stream whose first chunk failed is not opened
            out = pool.push({"b": good})      # the same chunk, valid: b continues exactly
        else:
            out = pool.push(chunks)
        for k, frames in out.items():
            got[k].append(frames)
    assert failed == 3
    for k, w in wavs.items():
        got[k].append(pool.flush(k))
        assert np.array_equal(np.concatenate(got[k]), _offline(w, seeded_encoder, radius=4, context="edge")), k


def test_onnx_engine_streams_exactly(tmp_path, speech):
    from synctalk_audio.export import export_onnx

    path = tmp_path / "encoder.onnx"
    export_onnx(sa.seeded_state_dict(0), path)
    pool = StreamPool(checkpoint=str(path), device="cpu", radius=4, context="edge")
    assert pool.precision == "onnx"
    rng = np.random.default_rng(7)
    plan = {i: (int(rng.integers(0, 30)), _chunks(wav, rng), 0) for i, wav in enumerate(speech[:3])}
    got = _simulate(pool, plan, rng)
    for i, wav in enumerate(speech[:3]):
        assert np.array_equal(got[i], _offline(wav, str(path), radius=4, context="edge")), i


def test_fast_precision_equals_offline_fast(seeded_encoder, speech):
    from synctalk_audio.engines import PRECISIONS

    pool = StreamPool(checkpoint=seeded_encoder, device="cpu", precision="fast")
    rng = np.random.default_rng(3)
    plan = {i: (int(rng.integers(0, 10)), [w[lo:lo + TICK] for lo in range(0, w.shape[0], TICK)], 0)
            for i, w in enumerate(speech[1:3])}
    got = _simulate(pool, plan, rng)
    for i, wav in enumerate(speech[1:3]):
        fast = _offline(wav, seeded_encoder, precision="fast")
        exact = _offline(wav, seeded_encoder)
        assert got[i].shape == exact.shape
        assert float(np.abs(got[i] - fast).max()) <= 1e-5
        assert float(np.abs(got[i] - exact).max()) <= PRECISIONS["fast"].max_rel * float(np.abs(exact).max())


def test_pool_api(seeded_encoder, speech):
    pool = StreamPool(checkpoint=seeded_encoder, device="cpu")
    assert pool.latency == latency_for(25) and pool.latency.samples == 7240
    assert pool.frame_shape == (32, 16, 16) and pool.keys() == [] and pool.push({}) == {}
    out = pool.push({"x": speech[0][:2999], "y": np.empty(0, np.float32)})
    assert set(out) == {"x", "y"} and all(v.shape == (0, 32, 16, 16) for v in out.values())
    assert pool.keys() == ["x", "y"]
    with pytest.raises(sa.AudioError, match="too short"):
        pool.flush("x")                   # too short: the stream stays open
    assert "x" in pool.keys()
    rest = pool.push({"x": speech[0][2999:9000]})["x"]
    tail = pool.flush("x")
    assert np.array_equal(np.concatenate([rest, tail]), _offline(speech[0][:9000], seeded_encoder))
    with pytest.raises(sa.StreamError, match="no open stream"):
        pool.flush("x")
    with pytest.raises(sa.ConfigError, match="mapping"):
        pool.push([speech[0][:320]])
    assert "StreamPool(" in repr(pool) and "streams=1" in repr(pool)


@pytest.mark.parametrize("kwargs,match", [
    ({"mode": "hubert"}, "normalis"),
    ({"mode": "wenet"}, "wenet"),
    ({"radius": 3}, "radius"),
    ({"threads": 0}, "threads"),
])
def test_pool_configuration_errors(seeded_encoder, kwargs, match):
    with pytest.raises(sa.ConfigError, match=match):
        StreamPool(checkpoint=seeded_encoder, device="cpu", **kwargs)


def test_serving_doc_example_runs(capsys):
    """docs/serving.md's asyncio server runs as written: every user gets all its frames."""
    import re
    import warnings
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "serving.md").read_text()
    code = next(block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "asyncio.run" in block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the seeded weights' warning
        exec(compile(code, "docs/serving.md", "exec"), {"__name__": "docs_example"})
    assert capsys.readouterr().out.strip() == str({k: 36 for k in range(6)})
