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


@pytest.mark.parametrize("radius,context,seed,overlap", [(8, "zeros", 0, False), (4, "edge", 1, False),
                                                         (8, "zeros", 2, True), (4, "edge", 3, True),
                                                         (8, "edge", 4, 2), (4, "zeros", 5, 3)])
def test_streams_equal_offline_bit_for_bit(seeded_encoder, speech, radius, context, seed, overlap):
    rng = np.random.default_rng(seed)
    pool = StreamPool(checkpoint=seeded_encoder, device="cpu", radius=radius, context=context, overlap=overlap,
                      threads=2)
    plan = {f"user{i}": (int(rng.integers(0, 40)), _chunks(wav, rng), int(rng.integers(0, 3)))
            for i, wav in enumerate(speech)}
    got = _simulate(pool, plan, rng)
    assert pool.keys() == []
    for i, wav in enumerate(speech):
        ref = _offline(wav, seeded_encoder, radius=radius, context=context)
        assert got[f"user{i}"].shape == ref.shape
        assert np.array_equal(got[f"user{i}"], ref), f"user{i}"


@pytest.mark.parametrize("overlap", [False, True, 2])
def test_keys_reused_after_flush_and_reset(seeded_encoder, speech, overlap):
    pool = StreamPool(checkpoint=seeded_encoder, device="cpu", radius=4, context="edge", overlap=overlap)
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


@pytest.mark.parametrize("overlap", [False, True, 2])
def test_one_failing_stream_leaves_the_others_and_itself_intact(seeded_encoder, speech, overlap):
    pool = StreamPool(checkpoint=seeded_encoder, device="cpu", radius=4, context="edge", overlap=overlap)
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
            assert isinstance(err, sa.StreamError)
            if overlap:  # the previous push's frames, b's included, come with this push even if its chunk fails
                assert set(err.frames) >= set(chunks) - {"b"}
            else:
                assert set(err.frames) == set(chunks) - {"b"}
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


@pytest.mark.parametrize("overlap", [False, True])
def test_onnx_engine_streams_exactly(tmp_path, speech, overlap):
    from synctalk_audio.export import export_onnx

    path = tmp_path / "encoder.onnx"
    export_onnx(sa.seeded_state_dict(0), path)
    pool = StreamPool(checkpoint=str(path), device="cpu", radius=4, context="edge", overlap=overlap)
    assert pool.precision == "onnx"
    rng = np.random.default_rng(7)
    plan = {i: (int(rng.integers(0, 30)), _chunks(wav, rng), 0) for i, wav in enumerate(speech[:3])}
    got = _simulate(pool, plan, rng)
    for i, wav in enumerate(speech[:3]):
        assert np.array_equal(got[i], _offline(wav, str(path), radius=4, context="edge")), i


@pytest.mark.parametrize("overlap", [False, True])
def test_fast_precision_equals_offline_fast(seeded_encoder, speech, overlap):
    from synctalk_audio.engines import PRECISIONS

    pool = StreamPool(checkpoint=seeded_encoder, device="cpu", precision="fast", overlap=overlap, threads=2)
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


@pytest.mark.parametrize("overlap", [True, 2, 3])
def test_overlap_delivers_n_pushes_later_and_flush_returns_the_rest(seeded_encoder, speech, overlap):
    """overlap=N: a push returns the frames the synchronous pool gave N pushes earlier, in the
    same order; flush returns the key's pending frames with its tail, and the other keys'
    pending frames come with the next push."""
    wavs = {"a": speech[1], "b": speech[2]}
    sync = StreamPool(checkpoint=seeded_encoder, device="cpu")
    over = StreamPool(checkpoint=seeded_encoder, device="cpu", overlap=overlap, threads=2)
    assert over.overlap == overlap and f"overlap={overlap}" in repr(over)
    earlier: list[dict] = []               # the synchronous pool's results, newest last
    got = {"a": [], "b": []}
    for lo in range(0, 24000, TICK):
        chunks = {k: w[lo:lo + TICK] for k, w in wavs.items()}
        now, late = sync.push(chunks), over.push(chunks)
        due = earlier[-int(overlap)] if len(earlier) >= overlap else {}
        assert set(late) == set(chunks) | set(due)
        for k in due:                      # exactly what the synchronous pool gave N pushes earlier
            assert np.array_equal(late[k], due[k]), (lo, k)
        for k, v in late.items():
            got[k].append(v)
        earlier.append(now)
    pending = {k: np.concatenate([e[k] for e in earlier[-int(overlap):]]) for k in wavs}
    tail_a = over.flush("a")               # a's pending frames, then its tail
    assert np.array_equal(tail_a, np.concatenate([pending["a"], sync.flush("a")]))
    nxt = over.push({"b": wavs["b"][24000:24320]})  # b's pending frames arrive with the next push
    assert np.array_equal(nxt["b"], pending["b"])
    over.reset("b")
    assert over.keys() == [] and over.push({}) == {}
    over.close()
    assert np.array_equal(np.concatenate(got["a"] + [tail_a]), _offline(wavs["a"][:24000], seeded_encoder))


def test_pool_as_a_context_manager_stops_its_threads(seeded_encoder, speech):
    """``with StreamPool(...)``: the threads stop at the end; frames still in flight were
    collected by close() and come with the next push, the streams stay open and exact."""
    wav = speech[1]
    with StreamPool(checkpoint=seeded_encoder, device="cpu", overlap=2, threads=2) as pool:
        got = [pool.push({"a": wav[lo:lo + TICK]}).get("a") for lo in range(0, 16000, TICK)]
        assert pool._executor is not None
    assert pool._executor is None and not pool._pending
    got += [pool.push({"a": wav[16000:16000 + TICK]})["a"]]
    got += [pool.push({"a": wav[lo:lo + TICK]}).get("a") for lo in range(16000 + TICK, wav.shape[0], TICK)]
    got.append(pool.flush("a"))
    pool.close()
    assert np.array_equal(np.concatenate([g for g in got if g is not None]), _offline(wav, seeded_encoder))


def test_concurrent_callers_each_get_their_exact_stream(seeded_encoder, speech):
    """Four threads push (and flush) their own key at the same time: the lock serialises the
    calls, every stream equals its offline frames."""
    import threading

    pool = StreamPool(checkpoint=seeded_encoder, device="cpu", threads=2)
    got: dict = {}
    errors: list = []

    def user(i: int) -> None:
        try:
            wav, key, parts = speech[i], f"t{i}", []
            for lo in range(0, wav.shape[0], TICK):
                parts.append(pool.push({key: wav[lo:lo + TICK]})[key])
            parts.append(pool.flush(key))
            got[key] = np.concatenate(parts)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and pool.keys() == []
    for i in range(4):
        assert np.array_equal(got[f"t{i}"], _offline(speech[i], seeded_encoder)), i


class _Flaky:
    """An engine whose ``fail_call``-th call raises (or each call in a set of them, while
    ``armed``); everything else from the real one."""

    def __init__(self, engine, fail_call):
        self._engine, self.calls, self.raised, self.armed = engine, 0, 0, True
        self.fail_calls = {fail_call} if isinstance(fail_call, int) else set(fail_call)

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def __call__(self, windows):
        self.calls += 1
        if self.armed and self.calls in self.fail_calls:
            self.raised += 1
            raise RuntimeError("encoder unavailable")
        return self._engine(windows)


@pytest.mark.parametrize("overlap", [False, True, 2, 3])
def test_encoder_failure_leaves_every_stream_as_before_the_failing_push(seeded_encoder, speech, overlap):
    """The encoder fails once: the failing push's streams are rolled back (with overlap=N the
    error surfaces N calls later, which consume nothing); pushing the same chunks again
    continues every stream exactly."""
    from synctalk_audio.engines import resolve_encoder

    flaky = _Flaky(resolve_encoder(seeded_encoder, device="cpu"), fail_call=20)
    pool = StreamPool(checkpoint=flaky, device="cpu", overlap=overlap)
    wavs = {"a": speech[1], "b": speech[2]}
    got = {k: [] for k in wavs}
    n = min(w.shape[0] for w in wavs.values()) // TICK
    t, failures = 0, 0
    while t < n:
        chunks = {k: w[t * TICK:(t + 1) * TICK] for k, w in wavs.items()}
        try:
            out = pool.push(chunks)
        except RuntimeError as exc:
            assert "encoder unavailable" in str(exc)
            failures += 1
            t -= int(overlap)          # the failed push is this one, or the one N pushes before
            continue
        for k, v in out.items():
            got[k].append(v)
        t += 1
    assert failures == 1 and flaky.raised == 1
    for k, w in wavs.items():
        got[k].append(pool.flush(k))
        assert np.array_equal(np.concatenate(got[k]), _offline(w[:n * TICK], seeded_encoder)), k


def test_random_resets_flushes_and_encoder_failures_keep_every_stream_exact(seeded_encoder, speech):
    """Random traffic with pushes in flight: keys opening, resetting (and reopening) and
    flushing at random, and the encoder failing at random calls. After a failure every stream
    of the pushes in flight is back to before the oldest of them; re-pushing their chunks,
    every stream's frames equal the offline frames of the audio it consumed, bit for bit.
    close() at random times too: frames collected by it come with the next push."""
    from synctalk_audio.engines import resolve_encoder

    engine = resolve_encoder(seeded_encoder, device="cpu")
    for depth, seed in [(2, 10), (3, 11), (1, 12)]:
        rng = np.random.default_rng(seed)
        flaky = _Flaky(engine, fail_call=set(int(c) for c in rng.integers(3, 120, 6)))
        pool = StreamPool(checkpoint=flaky, device="cpu", radius=4, context="edge", overlap=depth)

        class Stream:  # the test's model of one stream: its audio, samples pushed, frames received
            def __init__(self, wav, opened):
                self.wav, self.pos, self.frames, self.opened = wav, 0, [], opened

        live: dict = {}
        inflight: list = []  # the last `depth` successful pushes: (push id, {key: (Stream, n)})
        checked, counts = 0, {"failures": 0}

        def rollback(now):
            """The pool failed: the pushes in flight are undone (streams they opened are closed)."""
            counts["failures"] += 1
            for pid, pushed in inflight:
                for key, (s, n) in pushed.items():
                    s.pos -= n
                    if s.opened == pid and live.get(key) is s:
                        del live[key]
            inflight.clear()
            for key in [k for k, s in live.items() if s.opened == now]:
                del live[key]  # opened by the failing call: not opened
            assert sorted(pool.keys()) == sorted(live)

        def finish(key, now):
            s = live[key]
            flaky.armed = False  # the tail's own encoding does not fail (the in-flight runs may have)
            try:
                tail = pool.flush(key)
            except RuntimeError:
                rollback(now)
                return 0
            finally:
                flaky.armed = True
            del live[key]
            inflight.clear()     # flush collects everything in flight
            s.frames.append(tail)
            assert np.array_equal(np.concatenate(s.frames), _offline(s.wav[:s.pos], seeded_encoder, radius=4,
                                                                     context="edge")), (depth, key)
            return 1

        for push_id in range(160):
            for key in (f"u{i}" for i in range(4)):
                if key not in live and rng.random() < 0.3:
                    live[key] = Stream(speech[int(rng.integers(0, len(speech)))], push_id)
            if live and rng.random() < 0.04:
                key = list(live)[int(rng.integers(0, len(live)))]
                if live[key].opened < push_id:
                    pool.reset(key)
                    del live[key]
            for key in [k for k, s in live.items() if s.pos >= s.wav.shape[0]]:
                if key in live:
                    checked += finish(key, push_id)
            if rng.random() < 0.03:  # stop the threads: the frames in flight come with the next push
                try:
                    pool.close()
                    inflight.clear()
                except RuntimeError:
                    rollback(-1)
            chunks = {k: s.wav[s.pos:s.pos + int(rng.choice([160, 320, 320, 700]))] for k, s in live.items()}
            try:
                out = pool.push(chunks)
            except RuntimeError:
                rollback(push_id)
                continue
            for key, frames in out.items():
                if key in live:
                    live[key].frames.append(frames)
            inflight.append((push_id, {k: (live[k], chunk.shape[0]) for k, chunk in chunks.items()}))
            for k, chunk in chunks.items():
                live[k].pos += chunk.shape[0]
            del inflight[:-depth]
        for key in [k for k, s in live.items() if s.pos >= 3000]:
            if key in live:
                checked += finish(key, -1)
        assert counts["failures"] >= 3 and checked >= 5, (counts, checked)


def test_failure_after_a_reset_and_reopen_in_flight(seeded_encoder, speech):
    """overlap=2: key k is reset and reopened while the push that advanced its old stream is
    still encoding, and that encoding fails: the new k (opened in flight) is closed, the old k
    stays forgotten, a goes back to before the failed push and continues exactly."""
    from synctalk_audio.engines import resolve_encoder

    flaky = _Flaky(resolve_encoder(seeded_encoder, device="cpu"), fail_call=set())
    pool = StreamPool(checkpoint=flaky, device="cpu", overlap=2)
    a, k = speech[1], speech[2]
    got = []
    for t in range(10):
        got.append(pool.push({"a": a[t * TICK:(t + 1) * TICK], "k": k[t * TICK:(t + 1) * TICK]}).get("a"))
    flaky.fail_calls = {flaky.calls + 1}                   # the next push's run fails
    pool.push({"a": a[10 * TICK:11 * TICK], "k": k[10 * TICK:11 * TICK]})
    pool.reset("k")
    pool.push({"a": a[11 * TICK:12 * TICK], "k": k[:TICK]})  # a new stream k, in flight
    with pytest.raises(RuntimeError, match="unavailable"):
        pool.push({"a": a[12 * TICK:13 * TICK]})
    assert pool.keys() == ["a"]
    for t in range(10, a.shape[0] // TICK):
        got.append(pool.push({"a": a[t * TICK:(t + 1) * TICK]})["a"])
    got.append(pool.flush("a"))
    n = (a.shape[0] // TICK) * TICK
    assert np.array_equal(np.concatenate([g for g in got if g is not None]), _offline(a[:n], seeded_encoder))


@pytest.mark.parametrize("kwargs,match", [
    ({"overlap": "yes"}, "overlap"),
    ({"overlap": 5}, "overlap"),
    ({"overlap": -1}, "overlap"),
    ({"overlap": 1.5}, "overlap"),
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


def test_serving_benchmark_runs_and_draws_the_same_users_for_every_mode(capsys):
    """benchmarks/bench_serving.py end to end on short trials (its figures are not checked: they
    are the machine's), and its user draw depends on (seed, N) only, so modes see the same users."""
    import json
    import sys as _sys

    from .conftest import ROOT

    _sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_serving
    finally:
        _sys.path.remove(str(ROOT / "benchmarks"))
    a, b = bench_serving.users_rng(3, 24), bench_serving.users_rng(3, 24)
    assert np.array_equal(a.integers(0, 1000, 24), b.integers(0, 1000, 24))
    assert not np.array_equal(bench_serving.users_rng(3, 24).integers(0, 1000, 24),
                              bench_serving.users_rng(3, 26).integers(0, 1000, 24))
    assert bench_serving.main(["--precision", "fast", "--overlap", "2", "--seconds", "0.1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    result = report["results"]["fast overlap=2"]
    assert report["cpus"] >= 1 and report["cpu_model"]
    assert result["overlap"] == 2 and result["floor_ms_per_window"] > 0 and result["runs"]
    assert all(r["frames"] > 0 for r in result["runs"])


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("overlap", [0, 1])
def test_cuda_pool_close_to_offline(seeded_encoder, speech, overlap):
    """On CUDA (cuDNN, not batch-invariant) each stream stays within float32 round-off of its CPU
    offline frames whatever the other streams do."""
    rng = np.random.default_rng(7)
    plan = {f"s{i}": (int(rng.integers(0, 30)), _chunks(wav, rng), int(rng.integers(0, 3)))
            for i, wav in enumerate(speech)}
    with StreamPool(checkpoint=seeded_encoder, device="cuda", overlap=overlap) as pool:
        assert pool.device.startswith("cuda")
        got = _simulate(pool, plan, rng)
    for i, wav in enumerate(speech):
        ref = _offline(wav, seeded_encoder)
        assert got[f"s{i}"].shape == ref.shape
        assert np.abs(got[f"s{i}"] - ref).max() <= 1e-5 * float(np.abs(ref).max())


def test_gpu_benchmark_runs_on_the_cpu_at_toy_sizes(tmp_path):
    """benchmarks/bench_gpu.py's stream, pool and processes sections, run through on the CPU
    (--smoke-cpu) so the script that measures a lent GPU does not rot between GPU sessions; its
    figures are not checked (toy sizes, the CPU). Without CUDA and without --smoke-cpu it says
    so and measures nothing."""
    import json
    import subprocess
    import sys as _sys

    from .conftest import ROOT

    script = str(ROOT / "benchmarks" / "bench_gpu.py")
    out = tmp_path / "gpu.json"
    proc = subprocess.run([_sys.executable, script, "--smoke-cpu", "--only", "stream,pool,processes",
                           "--processes", "1x2,2x1", "--pool-seconds", "0.1", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["stream"]["exact"]["bit_identical"] is True  # CPU: streamed rows are offline's
    assert {"exact overlap=0", "fast overlap=1"} <= set(report["pool"])
    assert report["processes"]["2x1"]["processes"] == 2 and "summary on" in proc.stdout
    import torch

    if not torch.cuda.is_available():
        bare = subprocess.run([_sys.executable, script], capture_output=True, text=True, timeout=300)
        assert bare.returncode == 0 and "no CUDA device here" in bare.stdout


@pytest.mark.parametrize("overlap", [0, 1, 2])
def test_chunks_numpy_cannot_take_or_beyond_float32_are_one_key_errors(seeded_encoder, speech, overlap):
    """A ragged list (numpy raises inside np.asarray) or samples beyond float32's range (offline
    refuses them) for one key: PoolError for that key only, the others advance and stay exact
    (the ragged list once escaped as a raw ValueError and lost the good keys' frames)."""
    import collections.abc

    wav = speech[0]
    off = _offline(wav, seeded_encoder)
    empty = np.empty((0, *off.shape[1:]), np.float32)
    pool = StreamPool(checkpoint=seeded_encoder, device="cpu", overlap=overlap)
    got = [pool.push({"a": wav[:12000]})["a"]]
    import torch

    bads = (([[1.0], [1.0, 2.0]], "numpy cannot make an array"), (np.full(320, 1e300), "beyond float32"),
            (torch.zeros(320, requires_grad=True), "requires grad"),  # once a raw RuntimeError, frames lost
            (torch.zeros(320, dtype=torch.bfloat16), "numpy cannot make an array"),
            (np.ma.masked_array(np.zeros(320), mask=np.arange(320) % 2 == 0), "masked array"))
    at = 12000
    for bad, match in bads:
        with pytest.raises(PoolError) as exc:
            pool.push({"a": wav[at:at + 320], "b": bad})
        at += 320
        assert set(exc.value.errors) == {"b"} and match in str(exc.value.errors["b"])
        assert isinstance(exc.value.errors["b"], sa.AudioError)
        got.append(exc.value.frames.get("a", empty))
    got += [pool.push({"a": wav[at:]})["a"], pool.flush("a")]
    np.testing.assert_array_equal(np.concatenate(got), off)
    assert pool.keys() == []

    class Odd(collections.abc.Mapping):  # a Mapping with an unhashable key
        def __getitem__(self, key):
            return wav[:320]

        def __iter__(self):
            return iter([["list"]])

        def __len__(self):
            return 1

    for call in (lambda: pool.push(Odd()), lambda: pool.flush(["x"]), lambda: pool.reset({"x": 1})):
        with pytest.raises(sa.StreamError, match="must be hashable"):
            call()


@pytest.mark.parametrize("overlap", [1, 2])
def test_an_error_after_collecting_keeps_the_collected_frames(seeded_encoder, speech, overlap):
    """A failure inside a push after it collected earlier pushes' frames (here the mel step, once)
    loses none of them: they come with the next call; the failing push consumed nothing."""
    wav = speech[1]
    pool = StreamPool(checkpoint=seeded_encoder, device="cpu", overlap=overlap)
    got, t, failed = [], 0, False
    real = pool._columns
    while t * TICK < wav.shape[0]:
        if t == 30 and not failed:
            failed = True
            pool._columns = lambda staged: (_ for _ in ()).throw(RuntimeError("mel step failed"))
            with pytest.raises(RuntimeError, match="mel step failed"):
                pool.push({"a": wav[t * TICK:(t + 1) * TICK]})
            pool._columns = real
            continue  # the same chunk again
        got.append(pool.push({"a": wav[t * TICK:(t + 1) * TICK]}).get("a"))
        t += 1
    got.append(pool.flush("a"))
    np.testing.assert_array_equal(np.concatenate([g for g in got if g is not None]), _offline(wav, seeded_encoder))


def test_in_flight_and_the_note_on_an_encoder_failure(seeded_encoder, speech):
    """``in_flight`` counts the pushes a failure rolls back; the raised error says how many."""
    from synctalk_audio.engines import resolve_encoder

    flaky = _Flaky(resolve_encoder(seeded_encoder, device="cpu"), fail_call=6)
    pool = StreamPool(checkpoint=flaky, device="cpu", overlap=3)
    wav, seen = speech[1], []
    with pytest.raises(RuntimeError, match="encoder unavailable") as exc:
        for t in range(40):
            seen.append(pool.in_flight)
            pool.push({"a": wav[t * TICK:(t + 1) * TICK]})
    assert seen[:4] == [0, 1, 2, 3] and max(seen) == 3
    assert any("3 push(es) in flight went back" in note for note in exc.value.__notes__)
    assert pool.in_flight == 0
    pool.flush("a") if pool.keys() else None
    assert StreamPool(checkpoint=seeded_encoder, device="cpu", overlap=np.bool_(True)).overlap is True
    assert StreamPool(checkpoint=seeded_encoder, device="cpu", overlap=np.int64(2)).overlap == 2


def test_pool_error_pickles_with_its_errors_and_frames(seeded_encoder, speech):
    """A pool in a worker process raises PoolError to its parent: it must survive pickling
    (it once raised TypeError on unpickling, breaking a ProcessPoolExecutor for good)."""
    import pickle

    pool = StreamPool(checkpoint=seeded_encoder, device="cpu")
    with pytest.raises(PoolError) as exc:
        pool.push({"a": speech[0][:16000], "b": np.array([np.nan], np.float32)})
    back = pickle.loads(pickle.dumps(exc.value))
    assert type(back) is PoolError and str(back) == str(exc.value)
    assert set(back.errors) == {"b"} and isinstance(back.errors["b"], sa.AudioError)
    np.testing.assert_array_equal(back.frames["a"], exc.value.frames["a"])


def test_latency_names_are_exported():
    assert sa.latency_for(25).ms == 452.5 and isinstance(sa.latency_for(25), sa.Latency)


def test_worker_threads_run_one_torch_thread_and_leave_the_process_setting(seeded_encoder):
    """The pool's workers run one torch thread each, set in those threads only: the calling
    thread keeps its setting, a thread started afterwards starts from the process setting,
    and a later change elsewhere does not reach the workers."""
    import threading

    import torch
    from synctalk_audio.engines import resolve_encoder

    engine = resolve_encoder(seeded_encoder, device="cpu")
    before = torch.get_num_threads()
    workers = engine.worker_threads(2, "test-workers")
    try:
        assert torch.get_num_threads() == before
        seen = [workers.submit(lambda: (threading.get_ident(), torch.get_num_threads())).result() for _ in range(6)]
        assert {n for _, n in seen} == {1}
        fresh: list = []
        t = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
        t.start()
        t.join()
        assert fresh == [before]
        torch.set_num_threads(before + 1)
        try:
            assert workers.submit(torch.get_num_threads).result() == 1
        finally:
            torch.set_num_threads(before)
        windows = np.random.default_rng(0).uniform(-4, 4, (5, 1, 80, 16)).astype(np.float32)
        assert np.array_equal(workers.submit(engine, windows).result(), engine(windows))
    finally:
        workers.shutdown(wait=True)


@pytest.mark.parametrize("overlap,k,pieces", [(0, 32, 2), (0, 6, 1), (0, 80, 3), (1, 32, 2), (2, 32, 1), (2, 40, 2),
                                              (3, 7, 1)])
def test_a_push_is_split_for_the_workers_or_run_whole_with_enough_overlap(seeded_encoder, overlap, k, pieces):
    """overlap below the workers: a push's windows split over them (>= 4 windows a piece); overlap
    >= workers: whole, in batches of at most 32; the rows are the engine's, bit for bit."""
    from synctalk_audio.pool import _joined

    with StreamPool(checkpoint=seeded_encoder, device="cpu", threads=2, overlap=overlap) as pool:
        windows = np.random.default_rng(k).uniform(-4, 4, (k, 80, 16)).astype(np.float32)
        runs = pool._start(windows)
        assert len(runs) == pieces
        assert np.array_equal(_joined(runs), pool._encoder(windows))


def test_workers_started_from_several_threads_leave_the_process_setting(seeded_encoder):
    """Three threads start workers at once, as their first torch op: each start sets torch's
    setting to 1 for a moment, so one creator took 1 as its "own" setting and restored it for
    the process; the creators and every thread started afterwards were left at 1 thread."""
    import threading

    import torch
    from synctalk_audio.engines import resolve_encoder

    engine = resolve_encoder(seeded_encoder, device="cpu")
    before = torch.get_num_threads()
    own: list = []

    def start(barrier: threading.Barrier) -> None:
        barrier.wait()
        workers = engine.worker_threads(2, "test-workers")  # this thread's first torch op
        own.append(torch.get_num_threads())
        workers.shutdown(wait=True)

    def fresh() -> int:
        seen: list = []
        t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        t.start()
        t.join()
        return seen[0]

    for _ in range(40):
        barrier = threading.Barrier(3)
        threads = [threading.Thread(target=start, args=(barrier,)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert fresh() == before
    assert own == [before] * 120


@pytest.mark.parametrize("overlap", [True, 2])
def test_workers_that_cannot_start_leave_every_stream_as_it_was(seeded_encoder, speech, overlap):
    """With overlap, the streams were committed before the workers started: a start that failed
    lost their windows, and pushing the same chunks again gave wrong frames."""
    from synctalk_audio.engines import resolve_encoder

    class NoThreads:
        def __init__(self, engine):
            self._engine, self.fail = engine, False

        def __getattr__(self, name):
            return getattr(self._engine, name)

        def __call__(self, windows):
            return self._engine(windows)

        def worker_threads(self, n, name):
            if self.fail:
                self.fail = False
                raise RuntimeError("can't start new thread")
            return self._engine.worker_threads(n, name)

    engine = NoThreads(resolve_encoder(seeded_encoder, device="cpu"))
    pool = StreamPool(checkpoint=engine, device="cpu", threads=2, overlap=overlap)
    wav, got, t, failed = speech[1], [], 0, 0
    while t * TICK < wav.shape[0]:
        if t == 30 and not failed:
            pool.close()
            engine.fail = True
        try:
            out = pool.push({"a": wav[t * TICK:(t + 1) * TICK]})
        except RuntimeError as exc:
            assert "can't start new thread" in str(exc) and t == 30
            failed += 1
            continue  # the same chunk again
        got.append(out.get("a", np.empty((0, *pool.frame_shape), np.float32)))
        t += 1
    got.append(pool.flush("a"))
    pool.close()
    assert failed == 1 and np.array_equal(np.concatenate(got), _offline(wav, seeded_encoder))


def test_close_stops_the_threads_when_an_encoding_in_flight_failed(seeded_encoder, speech):
    """close() raised the failed encoding's error before stopping the threads: they outlived a
    ``with`` block that raised."""
    from synctalk_audio.engines import resolve_encoder

    from concurrent.futures import wait

    flaky = _Flaky(resolve_encoder(seeded_encoder, device="cpu"), fail_call=5)
    pool = StreamPool(checkpoint=flaky, device="cpu", overlap=4, threads=2)
    wav = speech[1]
    for lo in range(0, wav.shape[0], TICK):
        pool.push({"a": wav[lo:lo + TICK]})
        wait([f for pending in pool._pending for f in pending.rows])
        if flaky.raised:  # the failed run is still in flight: close() collects it
            break
    assert flaky.raised == 1 and pool.in_flight > 0
    with pytest.raises(RuntimeError, match="encoder unavailable"):
        pool.close()
    assert pool._executor is None
