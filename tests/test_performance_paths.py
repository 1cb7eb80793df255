"""Performance paths keep their promises: exact is invariant to batch size and threads (and
equal to the oracle), fast stays within its documented bound, memory-saving views are views,
torch's thread setting is restored, start-up imports stay lazy. No timings are asserted."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import synctalk_audio as sa
import synctalk_audio.engines as engines_mod
import synctalk_audio.torch_engines as enc_mod
from synctalk_audio.context import frames_for_mode, pad_context
from synctalk_audio.encoder import AudioEncoder, fold_batchnorm
from synctalk_audio.engines import PRECISIONS, encode_batch, resolve_encoder, run_engine
from synctalk_audio.flops import encoder_flops, layer_shapes
from synctalk_audio.torch_engines import PreparedEncoder, prepare_encoder


def encode_windows(n, get, encoder, **kw):
    """The seam's batching loop on a checkpoint-like encoder (CPU)."""
    return run_engine(resolve_encoder(encoder, device="cpu"), n, get, **kw)

from .conftest import FULL_CLIPS, ROOT, golden_array, golden_input

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def all_windows() -> np.ndarray:
    """Every golden clip's 25 fps windows, concatenated (about 250 real speech windows)."""
    return np.concatenate([golden_array(c, "windows_fps25.npy") for c in FULL_CLIPS])


@pytest.fixture(scope="module")
def all_features() -> np.ndarray:
    return np.concatenate([golden_array(c, "features.npy") for c in FULL_CLIPS])


@pytest.fixture()
def restore_threads():
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


# --------------------------------------------------------------------------- exact


@pytest.mark.parametrize("batch_size", [1, 7, 64, 512])
def test_exact_equals_oracle_for_every_batch_size(batch_size, all_windows, all_features, seeded_encoder):
    out = encode_batch(all_windows, seeded_encoder, batch_size=batch_size, device="cpu")
    assert np.abs(out - all_features).max() <= 1e-6


def test_exact_batch_sizes_agree_bit_for_bit(all_windows, seeded_encoder):
    ref = encode_batch(all_windows, seeded_encoder, batch_size=64, device="cpu")
    for bs in (1, 7, 512):
        assert np.abs(encode_batch(all_windows, seeded_encoder, batch_size=bs, device="cpu") - ref).max() <= 1e-6


def test_exact_one_vs_two_threads(all_windows, seeded_encoder, restore_threads):
    results = {}
    for n in (1, 2):
        torch.set_num_threads(n)
        results[n] = encode_batch(all_windows, seeded_encoder, batch_size=16, device="cpu")
        assert torch.get_num_threads() == n  # our worker threads did not leak their setting
    assert np.abs(results[1] - results[2]).max() <= 1e-6
    explicit = [encode_batch(all_windows, seeded_encoder, device="cpu", threads=t) for t in (1, 2, 3)]
    for out in explicit:
        assert np.abs(out - results[1]).max() <= 1e-6


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch_size=st.integers(1, 80), threads=st.integers(1, 3), n=st.integers(1, 120))
def test_exact_invariance_property(batch_size, threads, n, all_windows, all_features, seeded_encoder):
    out = encode_batch(all_windows[:n], seeded_encoder, batch_size=batch_size, device="cpu", threads=threads)
    assert np.abs(out - all_features[:n]).max() <= 1e-6


def test_module_fallback_without_onednn(monkeypatch, all_windows, seeded_encoder):
    # Builds without oneDNN (and CUDA) run the module itself: same numbers as calling it.
    monkeypatch.setattr(enc_mod, "_onednn_conv", lambda: None)
    prepared = prepare_encoder(seeded_encoder, device="cpu")
    assert type(prepared).__name__ == "_ModuleExact"
    with torch.inference_mode():
        direct = seeded_encoder(torch.from_numpy(all_windows[:64]).unsqueeze(1)).numpy()
    assert np.array_equal(encode_batch(all_windows[:64], prepared, batch_size=64), direct)


def test_folding_is_not_exact_enough(all_windows, all_features, seeded_encoder):
    # Why exact never folds BatchNorm: on these magnitudes it moves features past 1e-5.
    with torch.inference_mode():
        folded = fold_batchnorm(seeded_encoder)(torch.from_numpy(all_windows).unsqueeze(1)).numpy()
    assert np.abs(folded - all_features).max() > 1e-5


# --------------------------------------------------------------------------- fast


@pytest.mark.parametrize("clip", FULL_CLIPS)
def test_fast_within_documented_bound(clip, seeded_encoder):
    bound = PRECISIONS["fast"].max_rel
    out = sa.pipeline(golden_input(clip), checkpoint=seeded_encoder, device="cpu", precision="fast")
    scale = float(np.abs(golden_array(clip, "features.npy")).max())
    assert np.abs(out.features - golden_array(clip, "features.npy")).max() <= bound * scale
    assert np.abs(out.padded - golden_array(clip, "padded.npy")).max() <= bound * scale
    assert np.abs(out.frames - golden_array(clip, "frames_ave.npy")).max() <= bound * scale
    assert out.metadata["precision"] == "fast"


def test_fast_without_bf16_is_float32_folded(monkeypatch, all_windows, all_features, seeded_encoder):
    monkeypatch.setattr(enc_mod, "cpu_has_bf16", lambda: False)
    prepared = prepare_encoder(seeded_encoder, precision="fast", device="cpu")
    assert prepared.compute.startswith("float32")
    out = encode_batch(all_windows, prepared)
    assert np.abs(out - all_features).max() <= 1e-5 * np.abs(all_features).max()


def test_fast_fused_and_plain_module_agree(monkeypatch, all_windows, all_features, seeded_encoder):
    bound = PRECISIONS["fast"].max_rel * np.abs(all_features).max()
    fused = prepare_encoder(seeded_encoder, precision="fast", device="cpu")
    monkeypatch.setattr(enc_mod._Fast, "_fuse", lambda self, folded: None)
    plain = prepare_encoder(seeded_encoder, precision="fast", device="cpu")
    assert "fused" not in plain.compute
    a, b = encode_batch(all_windows, fused), encode_batch(all_windows, plain)
    assert np.abs(a - all_features).max() <= bound and np.abs(b - all_features).max() <= bound
    for bs in (1, 7, 64):  # fast is not bit-invariant by promise, but stays within its bound
        assert np.abs(encode_batch(all_windows, fused, batch_size=bs) - all_features).max() <= bound


def test_fast_is_not_exact(all_windows, all_features, seeded_encoder):
    if not enc_mod.cpu_has_bf16():
        pytest.skip("no native bfloat16 on this CPU: fast runs float32")
    out = encode_batch(all_windows, seeded_encoder, precision="fast", device="cpu")
    assert 0 < np.abs(out - all_features).max() <= PRECISIONS["fast"].max_rel * np.abs(all_features).max()


# --------------------------------------------------------------------------- API and plumbing


def test_precisions_table():
    assert list(PRECISIONS) == ["exact", "fast", "onnx"]
    assert PRECISIONS["exact"].max_abs == 1e-5
    assert 0 < PRECISIONS["fast"].max_rel < 0.05
    assert PRECISIONS["onnx"].max_rel == 5e-6
    with pytest.raises(sa.ConfigError, match="precision"):
        sa.pipeline(np.zeros(8000, np.float32), checkpoint=sa.seeded_state_dict(), precision="int4")


def test_prepare_encoder_checks(seeded_encoder):
    prepared = prepare_encoder(seeded_encoder, device="cpu")
    assert isinstance(prepared, PreparedEncoder) and prepared.precision == "exact"
    assert prepare_encoder(prepared, device="cpu") is prepared
    with pytest.raises(sa.ConfigError, match="prepared for 'exact'"):
        prepare_encoder(prepared, precision="fast", device="cpu")
    with pytest.raises(sa.ConfigError, match="precision"):
        prepare_encoder(seeded_encoder, precision="half", device="cpu")
    with pytest.raises(sa.ConfigError, match="AudioEncoder"):
        prepare_encoder("not a module", device="cpu")
    with pytest.raises(sa.ConfigError, match="AudioEncoder"):
        prepare_encoder(fold_batchnorm(seeded_encoder), precision="fast", device="cpu")
    with pytest.raises(sa.ConfigError, match="threads"):
        encode_batch(np.zeros((2, 80, 16), np.float32), prepared, threads=0)


def test_prepared_encoder_copies_weights(seeded_encoder):
    enc = sa.load_encoder(sa.seeded_state_dict(), device="cpu")
    prepared = prepare_encoder(enc, device="cpu")
    x = np.zeros((3, 80, 16), np.float32)
    before = encode_batch(x, prepared)
    with torch.no_grad():
        enc.audio_encoder[0].conv_block[0].weight.zero_()
    assert np.array_equal(encode_batch(x, prepared), before)


def test_encode_windows_streams_into_out_and_reports_progress(all_windows, all_features, seeded_encoder,
                                                              restore_threads):
    calls: list[tuple[int, int]] = []
    seen: list[int] = []

    def cut(lo, hi):
        calls.append((lo, hi))
        return all_windows[lo:hi]

    torch.set_num_threads(2)
    buf = np.full((all_windows.shape[0] + 2, 512), -1.0, np.float32)
    out = encode_windows(all_windows.shape[0], cut, seeded_encoder, batch_size=16, out=buf[1:-1],
                         progress=seen.append)
    assert np.shares_memory(out, buf) and np.abs(buf[1:-1] - all_features).max() <= 1e-6
    assert (buf[0] == -1).all() and (buf[-1] == -1).all()
    assert sorted(calls) == [(lo, min(lo + 16, len(all_windows))) for lo in range(0, len(all_windows), 16)]
    assert sum(seen) == all_windows.shape[0]
    with pytest.raises(sa.ShapeError, match="out must be"):
        encode_windows(4, cut, seeded_encoder, out=np.empty((3, 512), np.float32))


def test_thread_setting_restored_after_error(seeded_encoder, restore_threads):
    torch.set_num_threads(2)

    def boom(lo, hi):
        if lo >= 32:
            raise RuntimeError("bad batch")
        return np.zeros((hi - lo, 80, 16), np.float32)

    with pytest.raises(RuntimeError, match="bad batch"):
        encode_windows(200, boom, seeded_encoder, batch_size=16)
    assert torch.get_num_threads() == 2


def test_ieee_float32_context_restores_flags():
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    with enc_mod.ieee_float32("cuda"):
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == saved
    torch.backends.cudnn.allow_tf32 = True  # the CPU leaves them alone
    try:
        with enc_mod.ieee_float32("cpu"):
            assert torch.backends.cudnn.allow_tf32
        with pytest.raises(ValueError), enc_mod.ieee_float32("cuda"):  # restored on error too
            raise ValueError
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, saved[1])
    finally:
        torch.backends.cudnn.allow_tf32 = saved[0]


def test_flop_count():
    assert layer_shapes()[3] == (64, 27, 16) and layer_shapes()[9] == (256, 3, 3)
    assert encoder_flops() == 186_171_392  # the "≈ 0.19 GFLOP per window", counted exactly
    assert sum(p.numel() for p in AudioEncoder().parameters()) == 2_812_672


def test_silent_windows_run_once_and_give_the_same_rows(demo_wav, seeded_encoder, monkeypatch):
    wav = np.concatenate([np.zeros(16000, np.float32), demo_wav[:20000], np.zeros(9000, np.float32), demo_wav])
    mel = sa.melspectrogram(wav)
    varying, constant, values = sa.window(mel, 25).constant_runs()
    assert constant.size > 10 and np.all(values == -4.0)
    every = encode_batch(np.asarray(sa.window(mel, 25)), seeded_encoder, device="cpu")  # no shortcut
    out = sa.pipeline(wav, checkpoint=seeded_encoder, device="cpu")
    assert np.array_equal(out.features, every)
    # the shortcut encodes only the varying windows plus one silent window
    seen = []
    real = engines_mod.run_engine
    monkeypatch.setattr(engines_mod, "run_engine", lambda e, n, *a, **k: seen.append(n) or real(e, n, *a, **k))
    sa.pipeline(wav, checkpoint=seeded_encoder, device="cpu")
    assert sorted(seen) == [1, varying.size]


def test_encode_windows_rows(all_windows, all_features, seeded_encoder):
    rows = np.arange(all_windows.shape[0])[::-1].copy()
    out = np.zeros((all_windows.shape[0], 512), np.float32)
    encode_windows(all_windows.shape[0], lambda lo, hi: all_windows[lo:hi], seeded_encoder, out=out, rows=rows)
    assert np.abs(out[::-1] - all_features).max() <= 1e-6
    with pytest.raises(sa.ShapeError, match="rows"):
        encode_windows(3, lambda lo, hi: all_windows[lo:hi], seeded_encoder, rows=np.arange(3))


# --------------------------------------------------------------------------- memory: views


@pytest.mark.parametrize("context", ["zeros", "edge"])
def test_pipeline_frames_are_views_of_one_buffer(context, demo_wav, seeded_encoder):
    out = sa.pipeline(demo_wav, checkpoint=seeded_encoder, device="cpu", context=context)
    assert np.array_equal(out.padded, pad_context(out.features))
    assert np.array_equal(out.frames, frames_for_mode(out.padded, "ave", context=context))
    assert np.shares_memory(out.frames, out.padded) and np.shares_memory(out.padded, out.features)
    assert not (out.frames.flags.writeable or out.padded.flags.writeable or out.features.flags.writeable)
    assert out.metadata["encoder_compute"].startswith("float32 oneDNN")


def test_hann_window_equals_scipy():
    from scipy.signal import get_window

    from synctalk_audio.dsp import hann_window

    for n in (1, 2, 3, 400, 800, 1001):
        assert np.array_equal(hann_window(n, n), get_window("hann", n, fftbins=True))


def test_features_command_never_imports_scipy_signal_or_librosa(tmp_path):
    code = (
        "import sys\n"
        "from synctalk_audio.cli import main\n"
        f"assert main(['features', {str(golden_input('speech_16k_mono'))!r}, '-c', 'seeded', '-o', "
        f"{str(tmp_path / 'out')!r}, '-q', '--device', 'cpu']) == 0\n"
        "bad = [m for m in ('scipy.signal', 'librosa', 'numba') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


# --------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@CUDA
def test_cuda_exact_close_to_oracle_and_fast_within_bound(all_windows, all_features):
    enc = sa.load_encoder(sa.seeded_state_dict(), device="cuda")
    scale = float(np.abs(all_features).max())
    exact = encode_batch(all_windows, enc, device="cuda")
    assert np.abs(exact - all_features).max() <= 1e-6 * scale * 10  # cuDNN sums in its own order, TF32 off
    fast = encode_batch(all_windows, enc, device="cuda", precision="fast")
    assert np.abs(fast - all_features).max() <= PRECISIONS["fast"].max_rel * scale


def test_metadata_does_not_depend_on_what_the_process_ran_before(seeded_encoder, demo_wav):
    """The exact engine prepacks its weights on its first small batch (same bits); its compute
    string, which metadata.json records, must not change with it (a resumed dataset run once
    wrote other metadata.json bytes than an uninterrupted one)."""
    engine = prepare_encoder(seeded_encoder, precision="exact", device="cpu")
    fresh = engine.compute
    encode_batch(np.zeros((1, 80, 16), np.float32), engine)  # a stream's one-window batch: prepacks the weights
    assert engine.compute == fresh
    assert sa.pipeline(demo_wav[:40000], checkpoint=engine, device="cpu").metadata["encoder_compute"] == fresh


def test_timing_the_exact_blocks_changes_nothing(seeded_encoder):
    """``layer_cpu_ms`` (bench_stream --layers) runs the engine's own blocks with a clock: one
    positive figure per block, and the clocked forward gives the same rows bit for bit."""
    import torch

    from synctalk_audio.torch_engines import prepare_encoder

    engine = prepare_encoder(seeded_encoder, precision="exact", device="cpu")
    if not hasattr(engine, "_layers"):
        pytest.skip("no oneDNN in this torch build")
    x = torch.from_numpy(np.random.default_rng(0).uniform(-4, 4, (3, 1, 80, 16)).astype(np.float32))
    clock: list = []
    with torch.inference_mode():
        assert torch.equal(engine._forward(x, None, clock), engine._forward(x, None))
    assert len(clock) == 14 and clock == sorted(clock)
    times = engine.layer_cpu_ms(x[:1], repeats=2)
    assert len(times) == 13 and all(t > 0 for t in times)
