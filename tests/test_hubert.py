"""hubert front end: golden equality with the independent oracle, properties, precision, bad input."""

from __future__ import annotations

import re
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers", reason="hubert needs the [hubert] extra (transformers)")
pytest.importorskip("einops", reason="hubert needs einops")

import synctalk_audio as sa  # noqa: E402
from synctalk_audio import hubert as H  # noqa: E402
from synctalk_audio.errors import AudioError, CheckpointError, ConfigError, ShapeError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "golden"
HU = GOLDEN / "hubert"
MANIFEST = json.loads((HU / "manifest.json").read_text())
#: Golden tolerance: max|ours − oracle| <= REL * max|oracle|.
REL = 1e-5


@pytest.fixture(scope="module")
def standin_dir(tmp_path_factory) -> Path:
    return H.write_standin_hubert(tmp_path_factory.mktemp("hubert") / "standin", seed=MANIFEST["model"]["seed"],
                                  num_layers=MANIFEST["model"]["num_layers"], conv_dim=MANIFEST["model"]["conv_dim"])


@pytest.fixture(scope="module")
def exact(standin_dir) -> H.HubertEngine:
    return H.load_hubert_engine(standin_dir, device="cpu")


@pytest.fixture(scope="module")
def fast(exact) -> H.HubertEngine:
    return H.load_hubert_engine(exact.model, precision="fast", device="cpu")


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text, text
    return text


def _rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    assert ours.shape == ref.shape
    return float(np.abs(ours.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


# --------------------------------------------------------------------------- golden


def test_standin_weights_match_the_oracle(exact):
    assert exact.provenance["weights_sha256"] == MANIFEST["model"]["sha256"]
    assert exact.provenance["untrained"] is True
    config = exact.model.config.to_dict()
    for key, value in MANIFEST["model"]["config"].items():
        assert config[key] == value, key


@pytest.mark.parametrize("clip", sorted(MANIFEST["clips"]))
def test_golden_clips(exact, clip):
    meta = MANIFEST["clips"][clip]
    wav = H.load_hubert_audio(GOLDEN / meta["file"])
    assert wav.dtype == np.float64 and wav.shape == (meta["n_samples_16k"],)
    got = H.hubert_features(wav, exact)
    ref = np.load(HU / clip / "aud_hu.npy")
    assert got.dtype == np.float32 and got.shape == ref.shape == tuple(meta["aud_hu"])
    assert _rel_err(got, ref) <= REL


def test_golden_odd_pad(exact):
    clip = next(c for c, m in MANIFEST["clips"].items() if m["expected_T"] % 2 and m["n_samples_16k"] < 40000)
    meta = MANIFEST["clips"][clip]
    got = H.hubert_features(H.load_hubert_audio(GOLDEN / meta["file"]), exact, odd="pad")
    ref = np.concatenate([np.load(HU / clip / "aud_hu.npy"), np.load(HU / clip / "aud_hu_oddpad_tail.npy")])
    assert got.shape == ref.shape == tuple(meta["aud_hu_oddpad"])
    assert _rel_err(got, ref) <= REL
    assert not got[-1, 1].any()  # the padded row is zero


def _long_signal(meta: dict) -> np.ndarray:
    cycle = np.concatenate([H.load_hubert_audio(GOLDEN / f) for f in meta["sources"]])
    n = meta["n_samples_16k"]
    return np.tile(cycle, n // cycle.shape[0] + 1)[:n]


@pytest.mark.parametrize("name", sorted(MANIFEST["long"]))
def test_golden_long(exact, name):
    meta = MANIFEST["long"][name]
    got = H.hubert_features(_long_signal(meta), exact)
    assert got.shape == tuple(meta["aud_hu"])
    index = np.load(HU / name / "pair_index.npy")
    assert _rel_err(got[index], np.load(HU / name / "aud_hu_rows.npy")) <= REL
    flat = got.reshape(got.shape[0], -1).astype(np.float64)
    stats = np.stack([flat.mean(1), np.sqrt((flat ** 2).sum(1)), np.abs(flat).max(1)], axis=1)
    ref = np.load(HU / name / "stats.npy")
    assert np.allclose(stats, ref, rtol=1e-5, atol=REL * meta["max_abs"])


# --------------------------------------------------------------------------- normalisation


def _extractor():
    # hubert-large-ls960-ft's preprocessor_config.json
    return transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                                 do_normalize=True, return_attention_mask=True)


@pytest.mark.parametrize("clip", ["speech_16k_mono", "speech_44k_stereo_24bit", "silence_2s_16k"])
def test_normalize_is_the_feature_extractor(clip):
    wav = H.load_hubert_audio(GOLDEN / MANIFEST["clips"][clip]["file"])
    ref = _extractor()(wav, return_tensors="np", sampling_rate=16000).input_values[0]
    got = H.hubert_normalize(wav)
    assert got.dtype == np.float32 and np.array_equal(got, ref)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5000), scale=st.floats(1e-4, 10.0), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from([np.float64, np.float32]))
def test_normalize_matches_extractor_property(n, scale, seed, dtype):
    wav = (np.random.default_rng(seed).standard_normal(n) * scale + 0.1).astype(dtype)
    for extractor in (_extractor(), transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)):
        ref = extractor(wav, sampling_rate=16000).input_values[0]
        assert np.array_equal(H.hubert_normalize(wav), ref)


# --------------------------------------------------------------------------- properties


def _upstream_ranges(n: int) -> list[tuple[int, int]]:
    """Upstream's chunk loop, replayed on an index array (Python slicing clamps)."""
    idx = np.arange(n)
    kernel, stride = 400, 320
    clip_length = stride * 1000
    num_iter = n // clip_length
    out = []
    for i in range(num_iter):
        start = 0 if i == 0 else clip_length * i
        part = idx[start:start + clip_length - stride + kernel]
        out.append((int(part[0]), int(part[-1]) + 1))
    rest = idx[clip_length * num_iter:] if num_iter > 0 else idx
    if rest.shape[0] >= kernel:
        out.append((int(rest[0]), int(rest[-1]) + 1))
    return out


@settings(max_examples=300, deadline=None)
@given(n=st.one_of(st.integers(0, 2000), st.integers(0, 1_300_000),
                   st.sampled_from([320000 * k + d for k in (1, 2, 3) for d in (-1, 0, 1, 79, 80, 81, 399, 400)])))
def test_chunks_are_upstreams_loop(n):
    assert H.hubert_chunks(n) == _upstream_ranges(n)


class _FakeEngine:
    """A seam engine giving rows of ones, as many as a HubertModel gives; it records batch shapes."""

    mode = "hubert"
    batch_size = 3

    def __init__(self):
        self.calls = []

    def __call__(self, batch):
        self.calls.append(batch.shape)
        rows = H.hubert_model_rows(batch.shape[1])
        return np.ones((batch.shape[0], rows, 1024), np.float32)


@settings(max_examples=60, deadline=None)
@given(n=st.one_of(st.integers(400, 40000),
                   st.sampled_from([320000 * k + d for k in (1, 2, 3) for d in (0, 1, 79, 80, 81, 399, 400, 401)])),
       odd=st.sampled_from(["drop", "pad"]))
def test_row_count_any_length(n, odd):
    engine = _FakeEngine()
    wav = np.sin(np.arange(n) * 0.01)
    if odd == "drop" and n < H.HUBERT_MIN_DROP:  # one row, dropped: no frame
        with pytest.raises(AudioError, match="no video frame"):
            H.hubert_features(wav, engine, odd=odd)
        return
    out = H.hubert_features(wav, engine, odd=odd)
    expected_T = (n - 80) // 320
    assert H.hubert_row_count(n) == expected_T
    assert out.shape == (expected_T // 2 if odd == "drop" else (expected_T + 1) // 2, 2, 1024)
    assert out.shape[0] == H.hubert_pair_count(n, odd=odd)
    # what the chunks give is within one row of expected_T (upstream asserts this)
    produced = sum(b * H.hubert_model_rows(L) for b, L in engine.calls)
    assert abs(produced - expected_T) <= 1
    assert sum(b for b, _ in engine.calls) == len(H.hubert_chunks(n))
    assert all(b <= engine.batch_size for b, _ in engine.calls)
    # rows past what the model produced are zero pads
    flat = out.reshape(-1, 1024)
    assert (flat[:min(produced, flat.shape[0])] == 1).all() and not flat[produced:].any()


@given(L=st.integers(0, 700_000))
def test_model_rows_formula(L):
    assert H.hubert_model_rows(L) == (max((L - 400) // 320 + 1, 0) if L >= 400 else 0)


@settings(max_examples=100, deadline=None)
@given(T=st.integers(0, 40), delta=st.sampled_from([-1, 0, 1]), odd=st.sampled_from(["drop", "pad"]))
def test_pairs_pad_trim_and_odd(T, delta, odd):
    expected = max(T + delta, 0)
    rows = np.arange(1, T * 1024 + 1, dtype=np.float32).reshape(T, 1024)
    out = H.hubert_pairs(rows, expected_T=expected, odd=odd)
    target = expected - expected % 2 if odd == "drop" else expected + expected % 2
    assert out.shape == (target // 2, 2, 1024) and out.dtype == np.float32
    flat = out.reshape(-1, 1024)
    keep = min(T, target)
    assert np.array_equal(flat[:keep], rows[:keep]) and not flat[keep:].any()


def test_pairs_is_upstreams_reshape():
    rows = np.random.default_rng(0).standard_normal((7, 1024)).astype(np.float32)
    assert np.array_equal(H.hubert_pairs(rows, expected_T=7), rows[:6].reshape(-1, 2, 1024))


def test_model_gives_hubert_model_rows(exact):
    for L in (400, 719, 720, 4321):
        out = exact(np.random.default_rng(L).standard_normal((1, L)).astype(np.float32))
        assert out.shape == (1, H.hubert_model_rows(L), 1024) and out.dtype == np.float32


# --------------------------------------------------------------------------- the engine


def test_engine_attributes(exact, standin_dir):
    assert (exact.mode, exact.precision, exact.device, exact.row_shape) == ("hubert", "exact", "cpu", (1024,))
    assert exact.batch_invariant is False and exact.batch_size == 1
    assert exact.provenance["source"] == str(standin_dir)
    assert exact.provenance["transformers"] == transformers.__version__
    with pytest.raises(TypeError):
        exact.provenance["untrained"] = False  # read-only


def test_fast_within_bound(exact, fast):
    assert fast.precision == "fast" and "bfloat16" in fast.compute
    worst = 0.0
    for clip in ("speech_16k_mono", "speech_44k_stereo_24bit", "speech_mp3"):
        wav = H.load_hubert_audio(GOLDEN / MANIFEST["clips"][clip]["file"])
        worst = max(worst, _rel_err(H.hubert_features(wav, fast), H.hubert_features(wav, exact)))
    assert worst <= H.FAST_REL_ERROR_BOUND


def test_batched_chunks_close_to_single(exact):
    # batching is allowed but not bit-identical (hence batch_invariant False, batch_size 1)
    x = H.hubert_normalize(np.sin(np.arange(30000) * 0.003) + 0.01 * np.cos(np.arange(30000)))
    batch = np.stack([x[:12000], x[9000:21000]])
    together = exact(batch)
    alone = np.concatenate([exact(batch[:1]), exact(batch[1:])])
    assert _rel_err(together, alone) <= REL


def test_in_memory_model(exact):
    engine = H.load_hubert_engine(exact.model, device="cpu")
    assert engine.provenance["source"] == "<in-memory>"
    assert engine.provenance["weights_sha256"] == exact.provenance["weights_sha256"]


def test_local_dir_never_touches_the_network(standin_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    engine = H.load_hubert_engine(str(standin_dir), device="cpu")
    assert engine.provenance["untrained"] is True


def test_import_is_lazy():
    code = ("import sys; import synctalk_audio; had = 'torch' in sys.modules; import synctalk_audio.hubert; "
            "print('transformers' in sys.modules, ('torch' in sys.modules) == had)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "True"]


# --------------------------------------------------------------------------- bad input


def test_not_a_hubert_dir(tmp_path):
    with pytest.raises(CheckpointError) as exc:
        H.load_hubert_engine(tmp_path, device="cpu")
    assert "config.json" in one_line(exc)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2", "hidden_size": 1024}))
    with pytest.raises(CheckpointError) as exc:
        H.load_hubert_engine(tmp_path, device="cpu")
    assert "'wav2vec2'" in one_line(exc)
    with pytest.raises(CheckpointError) as exc:
        H.load_hubert_engine(tmp_path / "missing", device="cpu")
    assert "not found" in one_line(exc)


def test_hidden_size_not_1024(tmp_path):
    config = transformers.HubertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=16, conv_dim=[8] * 7, num_conv_pos_embeddings=4,
                                       num_conv_pos_embedding_groups=2)
    transformers.HubertModel(config).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError) as exc:
        H.load_hubert_engine(tmp_path, device="cpu")
    assert "hidden_size 32" in one_line(exc)
    with pytest.raises(CheckpointError) as exc:
        H.load_hubert_engine(transformers.HubertModel(config), device="cpu")
    assert "hidden_size 32" in one_line(exc)


def test_missing_weights(tmp_path, standin_dir):
    (tmp_path / "config.json").write_text((standin_dir / "config.json").read_text())
    with pytest.raises(CheckpointError) as exc:
        H.load_hubert_engine(tmp_path, device="cpu")
    one_line(exc)


def test_unknown_precision_and_odd(exact):
    with pytest.raises(ConfigError) as exc:
        H.load_hubert_engine(exact.model, precision="half", device="cpu")
    assert "'half'" in one_line(exc)
    with pytest.raises(ConfigError) as exc:
        H.hubert_features(np.zeros(1000), exact, odd="keep")
    assert "'keep'" in one_line(exc)


def test_too_short_audio(exact):
    with pytest.raises(AudioError) as exc:
        H.hubert_features(np.zeros(399), exact)
    assert "399 samples" in one_line(exc)
    with pytest.raises(AudioError) as exc:
        H.hubert_normalize(np.zeros(0))
    one_line(exc)


def test_bad_engine_input(exact):
    with pytest.raises(ShapeError) as exc:
        exact(np.zeros((1, 100), np.float32))
    one_line(exc)
    with pytest.raises(ShapeError) as exc:
        H.hubert_pairs(np.zeros((4, 512), np.float32), expected_T=4)
    one_line(exc)


def test_failed_hub_download_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache: nothing to find offline
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as exc:
        H.load_hubert_engine("synctalk-audio-test/no-such-model", device="cpu")
    assert "no-such-model" in one_line(exc)


# --------------------------------------------------------------------------- CUDA


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.cuda
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_cuda_exact_matches_the_oracle_and_fast_within_bound(standin_dir):
    import torch

    exact = H.load_hubert_engine(standin_dir, device="cuda")
    fast = H.load_hubert_engine(standin_dir, precision="fast", device="cuda")
    assert exact.device.startswith("cuda") and "TF32 off" in exact.compute and "float16" in fast.compute
    torch.backends.cudnn.allow_tf32 = True  # cuDNN's default: exact must not use it
    for clip in ("speech_16k_mono", "speech_44k_stereo_24bit", "speech_mp3"):
        wav = H.load_hubert_audio(GOLDEN / MANIFEST["clips"][clip]["file"])
        ref = np.load(HU / clip / "aud_hu.npy")
        got = H.hubert_features(wav, exact)
        assert _rel_err(got, ref) <= REL, clip  # cuDNN/cuBLAS sum in their own order, float32
        assert _rel_err(H.hubert_features(wav, fast), ref) <= H.FAST_REL_ERROR_BOUND, clip
    assert torch.backends.cudnn.allow_tf32  # restored


@pytest.mark.parametrize("T,expected", [(35, 69), (137, 69), (0, 2), (5, 3)])
def test_pairs_refuse_a_model_of_another_conv_layout(T, expected):
    """Upstream asserts abs(T − expected_T) <= 1; a model whose rows are not 20 ms apart (another
    conv_stride) was padded with zero rows or cut to fit, silently."""
    with pytest.raises(ShapeError, match=f"gave {T} rows where hubert-large's convolutions give {expected}") as exc:
        H.hubert_pairs(np.zeros((T, 1024), np.float32), expected_T=expected)
    one_line(exc)


@pytest.mark.parametrize("field,value", [("conv_stride", [5, 2, 2, 2, 2, 2, 4]), ("conv_stride", [5, 2, 2, 2, 2, 2, 1]),
                                         ("conv_kernel", [10, 3, 3, 3, 3, 2, 3])])
def test_a_checkpoint_of_another_conv_layout_is_refused(standin_dir, tmp_path, field, value):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(standin_dir, other)
    config = json.loads((other / "config.json").read_text())
    config[field] = value
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(sa.CheckpointError, match=re.escape(f"has {field} {value}")) as exc:
        H.load_hubert_engine(other, device="cpu")
    one_line(exc)


@pytest.mark.parametrize("n,odd,ok", [(399, "pad", False), (400, "pad", True), (400, "drop", False),
                                      (719, "drop", False), (720, "drop", True)])
def test_shortest_clips_give_a_frame_or_one_clear_error(exact, n, odd, ok):
    """With odd='drop' 400–719 samples give one hidden-state row, dropped: once 'padded is empty'."""
    wav = np.random.default_rng(n).standard_normal(n) * 0.1
    if ok:
        assert sa.pipeline(wav, mode="hubert", checkpoint=exact, hubert_odd=odd).frames.shape[0] == 1
        return
    with pytest.raises(sa.AudioError, match=f"hubert audio has {n} samples") as exc:
        sa.pipeline(wav, mode="hubert", checkpoint=exact, hubert_odd=odd)
    assert ("720" in str(exc.value)) == (n >= 400)
    one_line(exc)


def test_mode_specific_messages(exact):
    """hubert's precision list, its fixed fps at construction, channel 0 for a 2-D array."""
    with pytest.raises(sa.ConfigError, match="hubert offers exact, fast"):
        sa.pipeline(np.zeros(16000, np.float32), mode="hubert", checkpoint=exact, precision="bf16")
    with pytest.raises(sa.ConfigError, match="fps for hubert is fixed at 25"):
        sa.AudioPipeline(exact, mode="hubert", fps=30)
    with pytest.raises(sa.AudioError, match=r"take channel 0 first"):
        sa.pipeline(np.zeros((16000, 2), np.float32), mode="hubert", checkpoint=exact)
    with pytest.raises(sa.AudioError, match=r"mix stereo with to_mono"):
        sa.pipeline(np.zeros((16000, 2), np.float32), checkpoint="seeded")


def test_a_missing_relative_directory_says_so(monkeypatch, tmp_path):
    """'bad/nonexist' is shaped like a hub id: when the hub cannot give it either, the message says
    no such local directory exists (it once spoke of a hub download only)."""
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"'bad/nonexist': no such local directory \(in .*\), and as a "
                                              r"HuggingFace hub id: We couldn't connect") as exc:
        H.load_hubert_engine("bad/nonexist", device="cpu")
    one_line(exc)


def test_write_standin_hubert_never_replaces_what_the_user_made(tmp_path):
    """It wrote into any directory, replacing the user's config.json and model.safetensors."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"mine": 1}')
    for overwrite in (False, True):
        with pytest.raises(sa.OutputError):
            H.write_standin_hubert(mine, overwrite=overwrite)
    assert (mine / "config.json").read_text() == '{"mine": 1}' and sorted(p.name for p in mine.iterdir()) == ["config.json"]
    out = H.write_standin_hubert(tmp_path / "standin")
    with pytest.raises(sa.OutputError, match="exists and is not empty"):
        H.write_standin_hubert(out)
    assert H.write_standin_hubert(out, overwrite=True) == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "standin"]  # no temp sibling left


def test_weights_that_do_not_match_the_config_are_one_line(standin_dir, tmp_path, capsys):
    """transformers raised 'For details look at the above report!' after printing a table."""
    import shutil

    other = tmp_path / "other"
    shutil.copytree(standin_dir, other)
    config = json.loads((other / "config.json").read_text())
    config["intermediate_size"] = 2 * config["intermediate_size"]
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"weight\(s\) do not match its config.json \(first: encoder\.layers\.0\."
                                              r"feed_forward\.intermediate_dense\.bias") as exc:
        H.load_hubert_engine(other, device="cpu")
    one_line(exc)
    assert "above report" not in str(exc.value) and "MISMATCH" not in capsys.readouterr().err


def test_a_missing_directory_in_an_existing_folder_never_asks_the_hub(monkeypatch, tmp_path):
    """'models/hubert' with a local folder 'models' is a mistyped directory, not a hub id: one
    line at once (the hub was asked and, offline, retried for ~20 s before the error)."""
    def hub(*args, **kwargs):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", hub)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(CheckpointError, match=r"hubert model directory not found: models/hubert$") as exc:
        H.load_hubert_engine("models/hubert", device="cpu")
    one_line(exc)
