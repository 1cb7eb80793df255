"""Hostile inputs against the compute half (issue 16): memory amplification from audio headers,
integer PCM arrays, malformed checkpoints, an encoder returning the wrong rows, and the CLI's
numeric options. Each case must end in the library's own one-line error (exit 2 in the CLI),
never a crash, an abort, or a blow-up; memory cases run under an address-space limit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import synctalk_audio as sa
from synctalk_audio import cli
from synctalk_audio.audio import MAX_SECONDS_ENV, check_waveform, max_audio_seconds
from synctalk_audio.batches import MAX_BATCH_SIZE, check_positive_int, encode_in_batches, max_threads

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20


def run_cli(*args: str, cwd: Path, env: "dict | None" = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synctalk_audio", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def assert_one_line_error(proc: subprocess.CompletedProcess, match: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.strip().splitlines() if "warning:" not in ln]
    assert len(lines) == 1 and lines[0].startswith("synctalk-audio: error:") and match in lines[0], proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text
    return text


@pytest.fixture(scope="module")
def tiny_wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "tiny.wav"
    t = np.arange(8000) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def silent_2h(tmp_path_factory) -> Path:
    """Two hours of digital silence: a 0.4 MB FLAC that decodes to 460 MB of float32."""
    path = tmp_path_factory.mktemp("long") / "silent_2h.flac"
    with sf.SoundFile(path, "w", 16000, 1, subtype="PCM_16") as f:
        minute = np.zeros(16000 * 60, np.int16)
        for _ in range(120):
            f.write(minute)
    return path


# --------------------------------------------------------------------------- 1. memory amplification


def _limited(code: str, limit_mib: int, *, env: "dict | None" = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter whose address space may grow by ``limit_mib`` after imports."""
    script = textwrap.dedent("""
        import resource, sys
        import numpy as np, soundfile, soxr
        import synctalk_audio as sa
        vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        limit = vm + {limit} * (1 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    """).format(limit=limit_mib) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=env)


def test_one_hertz_header_is_refused_before_decoding(tmp_path):
    path = tmp_path / "rate1.wav"
    sf.write(path, np.zeros(20000, np.int16), 1, subtype="PCM_16")  # 40 KB that would be 5.5 h at 16 kHz
    proc = _limited(f"""
        try:
            sa.load_audio({str(path)!r})
        except sa.AudioError as exc:
            print("ERR", exc)
    """, 64)
    assert proc.returncode == 0, proc.stderr
    assert "ERR" in proc.stdout and "sample rate of 1 Hz" in proc.stdout and "1000-768000" in proc.stdout
    for fn in (sa.load_audio, sa.load_channel):
        with pytest.raises(sa.AudioError, match="sample rate of 1 Hz"):
            fn(path)


def test_rates_outside_the_range_are_refused(tmp_path):
    path = tmp_path / "rate500.wav"
    sf.write(path, np.zeros(4000, np.float32), 500)
    with pytest.raises(sa.AudioError, match="500 Hz") as info:
        sa.load_audio(path)
    one_line(info.value)


def test_two_hours_of_flac_decode_into_one_float32_copy(silent_2h):
    # 115.2 M samples: the float32 result is 440 MiB. Decoding whole (n, 1), then mixing, needed twice that.
    proc = _limited(f"""
        wav = sa.load_audio({str(silent_2h)!r})
        print(wav.shape, wav.dtype, float(wav.max()) - float(wav.min()))
    """, 600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(115200000,) float32 0.0" in proc.stdout


def test_duration_ceiling_checked_from_the_header(silent_2h, monkeypatch):
    env = {**__import__("os").environ, MAX_SECONDS_ENV: "3600"}
    proc = _limited(f"""
        try:
            sa.load_audio({str(silent_2h)!r})
        except sa.AudioError as exc:
            print("ERR", exc)
    """, 64, env=env)  # refused before a single sample is decoded
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ERR" in proc.stdout and "7200 s" in proc.stdout and "3600 s ceiling" in proc.stdout
    with pytest.raises(sa.AudioError, match="ceiling"):
        sa.load_channel(silent_2h, max_seconds=60)
    monkeypatch.setenv(MAX_SECONDS_ENV, "60")
    with pytest.raises(sa.AudioError, match=MAX_SECONDS_ENV):
        sa.load_audio(silent_2h)


def test_duration_ceiling_settings():
    assert max_audio_seconds() == sa.audio.MAX_AUDIO_SECONDS == 3 * 3600
    assert max_audio_seconds(float("inf")) == float("inf")
    for bad in (0, -1, float("nan"), "10", True):
        with pytest.raises(sa.ConfigError, match="max_seconds"):
            max_audio_seconds(bad)


def test_bad_ceiling_environment_variable(monkeypatch, tiny_wav):
    monkeypatch.setenv(MAX_SECONDS_ENV, "a lot")
    with pytest.raises(sa.ConfigError, match=MAX_SECONDS_ENV):
        sa.load_audio(tiny_wav)
    monkeypatch.setenv(MAX_SECONDS_ENV, "inf")
    assert sa.load_audio(tiny_wav).shape == (8000,)


def test_cli_refuses_the_one_hertz_wav(tmp_path):
    path = tmp_path / "rate1.wav"
    sf.write(path, np.zeros(20000, np.int16), 1, subtype="PCM_16")
    assert_one_line_error(run_cli("features", str(path), "-c", "seeded", "-o", "out", "--device", "cpu",
                                  cwd=tmp_path), "sample rate of 1 Hz")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- 2. integer PCM


@pytest.mark.parametrize("dtype,fix", [(np.int16, "/ 32768"), (np.int32, "/ 2**31"), (np.uint8, "- 128) / 128"),
                                       (np.int8, "/ 128"), (np.int64, "full scale")])
def test_integer_pcm_is_refused_with_the_fix(dtype, fix):
    pcm = np.zeros(8000, dtype)
    with pytest.raises(sa.AudioError, match="integer samples") as info:
        check_waveform(pcm)
    assert fix in one_line(info.value) and str(np.dtype(dtype)) in str(info.value)
    with pytest.raises(sa.AudioError, match="integer samples"):
        sa.pipeline(pcm, checkpoint="seeded", device="cpu")
    with pytest.raises(sa.AudioError, match="integer samples"):
        sa.melspectrogram(pcm)


def test_scaled_pcm_equals_the_decoded_file(tmp_path):
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(8000) * 3000).astype(np.int16)
    sf.write(tmp_path / "p.wav", pcm, 16000, subtype="PCM_16")
    assert np.array_equal(pcm.astype(np.float32) / 32768, sa.load_audio(tmp_path / "p.wav"))
    assert check_waveform(pcm, integers=True) is pcm  # scale-free stages (fbank, HuBERT's normalisation)


def test_stream_refuses_integer_chunks_too():
    stream = sa.StreamingPipeline(checkpoint="seeded", device="cpu")
    with pytest.raises(sa.AudioError, match="32768"):
        stream.push(np.zeros(320, np.int16))


# --------------------------------------------------------------------------- 3. checkpoints


def _broken(kind: str):
    import torch

    sd = dict(sa.seeded_state_dict(0))
    key = "0.conv_block.0.weight" if "0.conv_block.0.weight" in sd else next(iter(sd))
    t = sd[key]
    sd[key] = {"int64": lambda: t.to(torch.int64), "bool": lambda: t > 0, "complex": lambda: t.to(torch.complex64),
               "sparse": lambda: t.to_sparse(), "meta": lambda: t.to("meta")}[kind]()
    return sd


@pytest.mark.parametrize("kind,match", [("int64", "dtype int64, expected a floating-point"),
                                        ("bool", "dtype bool, expected a floating-point"),
                                        ("complex", "dtype complex64"),
                                        ("sparse", "sparse_coo tensor, expected a dense"),
                                        ("meta", "meta tensor")])
def test_malformed_checkpoint_tensors(kind, match):
    pytest.importorskip("torch")
    with pytest.raises(sa.CheckpointError, match=match) as info:
        sa.load_encoder(_broken(kind))
    one_line(info.value)


@pytest.mark.parametrize("kind", ["int64", "sparse", "meta"])
def test_cli_malformed_checkpoint_files(tmp_path, tiny_wav, kind):
    torch = pytest.importorskip("torch")
    torch.save(_broken(kind), tmp_path / "ck.pth")
    assert_one_line_error(run_cli("features", str(tiny_wav), "-c", "ck.pth", "-o", "out", "--device", "cpu",
                                  cwd=tmp_path), "ck.pth")


@pytest.mark.parametrize("checkpoint", [123, 1.5, b"x.pth", object()])
def test_checkpoint_of_the_wrong_type(checkpoint):
    with pytest.raises(sa.ConfigError, match="checkpoint must be"):
        sa.pipeline(np.zeros(8000, np.float32), checkpoint=checkpoint)


@pytest.mark.parametrize("mode", [[], {}, None, 1, b"ave"])
def test_mode_of_the_wrong_type(mode):
    with pytest.raises(sa.ConfigError, match="unknown mode"):
        sa.pipeline(np.zeros(8000, np.float32), checkpoint="seeded", mode=mode)


def _not_a_state_dict(path: Path, kind: str) -> Path:
    """Files a user may hand over as ``--checkpoint`` that torch.load cannot turn into a state dict."""
    import datetime
    import fractions
    import zipfile

    torch = pytest.importorskip("torch")
    if kind == "truncated":
        torch.save(sa.seeded_state_dict(0), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "torchscript":
        torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), path)
    elif kind == "wav":
        path.write_bytes((ROOT / "synctalk_audio" / "data" / "demo_speech.wav").read_bytes())
    elif kind == "zip_without_version":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", b"x")
    elif kind == "python_objects":
        torch.save([fractions.Fraction(1, 3), datetime.date(2020, 1, 1)], path)
    elif kind == "text":
        path.write_text("this is not a checkpoint\n" * 4)
    return path


# torch's own wording that must never reach the user (cut mid-sentence, or about torch internals)
_TORCH_TEXT = ("miniz", "If you are seeing", "weights_only", "pop from empty list", "Could this error message",
               "PytorchStreamReader", "hasRecord", "(101)")


@pytest.mark.parametrize("kind,name,needles", [
    ("truncated", "ck.pth", ["not a PyTorch state dict (a truncated or corrupt torch.save zip"]),
    ("torchscript", "encoder.pt", ["is a TorchScript archive; give the state dict (audio_visual_encoder.pth) "
                                   "or an exported .onnx"]),
    ("wav", "ck.pth", ["not a PyTorch state dict", "not a torch.save file", "starts with RIFF: an audio file?"]),
    ("zip_without_version", "ck.pth", ["not a PyTorch state dict", "zip archive", "torch.save"]),
    ("python_objects", "random.pth", ["not a PyTorch state dict", "fractions.Fraction",
                                      "would run code when unpickled (refused"]),
    ("text", "random.pth", ["not a PyTorch state dict", "not a torch.save file", "a text file?"]),
])
def test_checkpoint_files_that_are_not_state_dicts(tmp_path, kind, name, needles):
    path = _not_a_state_dict(tmp_path / name, kind)
    with pytest.raises(sa.CheckpointError) as info:
        sa.load_encoder(path)
    text = one_line(info.value)
    assert str(path) in text and len(text) < 300, text
    for needle in needles:
        assert needle in text, text
    assert not any(t in text for t in _TORCH_TEXT), text


@pytest.mark.parametrize("kind,name,match", [("torchscript", "encoder.pt", "is a TorchScript archive"),
                                             ("wav", "speech.wav", "starts with RIFF: an audio file?")])
def test_cli_checkpoint_that_is_not_a_state_dict(tmp_path, tiny_wav, kind, name, match):
    _not_a_state_dict(tmp_path / name, kind)
    proc = run_cli("features", str(tiny_wav), "-c", name, "-o", "out", "--device", "cpu", cwd=tmp_path)
    assert_one_line_error(proc, match)
    assert name in proc.stderr and not any(t in proc.stderr for t in _TORCH_TEXT)


# --------------------------------------------------------------------------- 4. wrong row counts


def _double_rows_onnx(path: Path) -> Path:
    """A model that passes the input/output signature check but returns 2 rows per window."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.full((1280, 1024), 1e-3, np.float32), "W"),
             numpy_helper.from_array(np.array([-1, 1280], np.int64), "flat"),
             numpy_helper.from_array(np.array([-1, 512], np.int64), "rows")]
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["m"]),
             helper.make_node("Reshape", ["m", "rows"], ["y"])]
    graph = helper.make_graph(nodes, "double_rows",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 1, 80, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B2", 512])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_onnx_model_returning_twice_the_rows(tmp_path, tiny_wav):
    model = _double_rows_onnx(tmp_path / "double.onnx")
    with pytest.raises(sa.CheckpointError, match="one row per window") as info:
        sa.pipeline(tiny_wav, checkpoint=model, device="cpu")
    one_line(info.value)
    assert_one_line_error(run_cli("features", str(tiny_wav), "-c", str(model), "-o", "out", "--device", "cpu",
                                  cwd=tmp_path), "one row per window")
    assert not (tmp_path / "out").exists()


def test_engines_given_no_windows_return_no_rows(tmp_path, seeded_encoder):
    """Every engine of the seam: zero windows in, zero rows out (torch's convolutions and
    onnxruntime graphs reject an empty batch; a caller batching by counts may send one)."""
    import torch

    from synctalk_audio.engines import resolve_encoder
    from synctalk_audio.wenet import write_standin_wenet_onnx

    wenet = resolve_encoder(str(write_standin_wenet_onnx(tmp_path / "encoder.onnx", seed=0)), mode="wenet",
                            device="cpu", threads=2)
    assert wenet(np.zeros((0, 67, 80), np.float32)).shape == (0, 16, 512)
    onnx_ave = resolve_encoder(str(_double_rows_onnx(tmp_path / "ave.onnx")), device="cpu")
    assert onnx_ave(np.zeros((0, 1, 80, 16), np.float32)).shape == (0, 512)
    for precision in ("exact", "fast"):
        engine = resolve_encoder(seeded_encoder, precision=precision, device="cpu")
        out = engine(np.zeros((0, 80, 16), np.float32))
        assert isinstance(out, np.ndarray) and out.shape == (0, 512) and out.dtype == np.float32
        t = engine(torch.zeros((0, 1, 80, 16)))
        assert isinstance(t, torch.Tensor) and tuple(t.shape) == (0, 512)


@pytest.mark.parametrize("rows", [lambda b: np.zeros((2 * b, 512), np.float32),
                                  lambda b: np.zeros((b, 256), np.float32),
                                  lambda b: np.zeros((b,), np.float32),
                                  lambda b: 0.0])
def test_engine_rows_are_checked_per_batch(rows):
    with pytest.raises(sa.ShapeError, match="one row per input"):
        encode_in_batches(10, lambda lo, hi: hi - lo, rows, batch_size=4)


# --------------------------------------------------------------------------- 5. numeric options and devices


def test_count_ceilings():
    assert check_positive_int("threads", max_threads()) == max_threads()
    assert check_positive_int("batch_size", MAX_BATCH_SIZE) == MAX_BATCH_SIZE
    with pytest.raises(sa.ConfigError, match="threads must be at most"):
        check_positive_int("threads", max_threads() + 1)
    with pytest.raises(sa.ConfigError, match="workers must be at most"):
        check_positive_int("workers", 10**6)
    with pytest.raises(sa.ConfigError, match="batch_size must be at most 65536"):
        check_positive_int("batch_size", MAX_BATCH_SIZE + 1)
    with pytest.raises(sa.ConfigError, match="threads"):
        sa.pipeline(np.zeros(8000, np.float32), checkpoint="seeded", threads=10**6)
    with pytest.raises(sa.ConfigError, match="threads"):
        sa.StreamingPipeline(checkpoint="seeded", threads=10**6)


@pytest.mark.parametrize("device", ["meta", "xla", "mps", "cuda:x", "", "gpu"])
def test_unsupported_devices(device):
    with pytest.raises(sa.ConfigError, match="device"):
        sa.pipeline(np.zeros(8000, np.float32), checkpoint="seeded", device=device)


@pytest.mark.parametrize("device", ["tpu", "CPU", "cuda:x"])
def test_unknown_device_is_named_in_our_words(tmp_path, device):
    """The torch (.pth) and onnxruntime (.onnx) paths give the same line, without torch's device list."""
    from synctalk_audio.runtime import load_onnx_encoder

    want = f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
    with pytest.raises(sa.ConfigError) as torch_side:
        sa.pipeline(np.zeros(8000, np.float32), checkpoint="seeded", device=device)
    (tmp_path / "m.onnx").write_bytes(b"not checked before the device")
    pytest.importorskip("onnxruntime")
    with pytest.raises(sa.ConfigError) as onnx_side:
        load_onnx_encoder(tmp_path / "m.onnx", device=device)
    assert str(torch_side.value) == str(onnx_side.value) == want


def test_cli_unknown_device_with_a_pth(tmp_path, tiny_wav):
    pytest.importorskip("torch")
    proc = run_cli("features", str(tiny_wav), "-c", "seeded", "-o", "out", "--device", "tpu", cwd=tmp_path)
    assert_one_line_error(proc, "unknown device 'tpu'; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    assert "ipu" not in proc.stderr


@pytest.mark.parametrize("dpi", [0, -1, 9, 1201, 1e9, 120.5, float("nan")])
def test_plot_dpi_range(dpi, tmp_path):
    from synctalk_audio.plot import check_dpi

    with pytest.raises(sa.ConfigError, match="dpi"):
        check_dpi(dpi)


def test_frames_of_an_empty_array(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 2, 1024), np.float32))
    with pytest.raises(sa.ShapeError):
        sa.frames_for_mode(np.zeros((0, 2, 1024), np.float32), "hubert")
    assert_one_line_error(run_cli("frames", "empty.npy", "--mode", "hubert", "-o", "f.npy", cwd=tmp_path), "empty")
    assert not (tmp_path / "f.npy").exists()


@pytest.mark.parametrize("args,match", [
    (["stream", "{wav}", "-c", "seeded", "--threads", "1000000", "--device", "cpu"], "threads must be at most"),
    (["stream", "{wav}", "-c", "{onnx}", "--threads", "1000000", "--device", "cpu"], "threads must be at most"),
    (["stream", "{wav}", "-c", "seeded", "--chunk-ms", "1e308", "--device", "cpu"], "--chunk-ms"),
    (["features", "{wav}", "-c", "seeded", "-o", "out", "--fps", "1e-300"], "fps must"),
    (["features", "{wav}", "-c", "seeded", "-o", "out", "--batch-size", "100000000", "--device", "cpu"],
     "batch_size must be at most"),
    (["features", "{wav}", "-c", "seeded", "-o", "out", "--device", "meta"], "device 'meta'"),
    (["plot", "{wav}", "-o", "p.png", "--dpi", "0"], "dpi must"),
])
def test_cli_numeric_options_end_in_one_line(tmp_path, tiny_wav, args, match):
    onnx_path = tmp_path / "double.onnx"
    if "{onnx}" in args:
        _double_rows_onnx(onnx_path)
    argv = [a.format(wav=tiny_wav, onnx=onnx_path) for a in args]
    assert_one_line_error(run_cli(*argv, cwd=tmp_path), match)
    assert not (tmp_path / "out").exists() and not (tmp_path / "p.png").exists()


def test_double_wav_beyond_float32_is_named(tmp_path):
    path = tmp_path / "double.wav"
    sf.write(path, np.array([0.1, 1e300, 0.0] * 2000), 16000, subtype="DOUBLE")
    for fn in (sa.load_audio, sa.load_channel):
        with pytest.raises(sa.AudioError, match="beyond float32 range") as info:
            fn(path)
        assert "non-finite" not in one_line(info.value) and "1e+300" in str(info.value)
    sf.write(tmp_path / "nan.wav", np.array([0.1, np.nan, 0.0] * 2000), 16000, subtype="DOUBLE")
    with pytest.raises(sa.AudioError, match="non-finite"):
        sa.load_audio(tmp_path / "nan.wav")
    assert_one_line_error(run_cli("features", str(path), "-c", "seeded", "-o", "out", "--device", "cpu",
                                  cwd=tmp_path), "beyond float32 range")


# --------------------------------------------------------------------------- fuzz of the CLI's numeric options


def _outside(lo: float, hi: float) -> st.SearchStrategy:
    return st.one_of(st.floats(max_value=lo, exclude_max=True), st.floats(min_value=hi, exclude_min=True),
                     st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e-300, -0.0, 1e308]))


def _ints_outside(lo: int, hi: int) -> st.SearchStrategy:
    return st.one_of(st.integers(max_value=lo - 1), st.integers(min_value=hi + 1), st.sampled_from([10**30, -10**30]))


def _text(x: float) -> str:
    return repr(x) if isinstance(x, float) else str(x)


BAD_OPTIONS = st.one_of(
    st.tuples(st.just("stream"), st.just("--threads"), _ints_outside(0, max_threads()).map(str)),
    st.tuples(st.just("stream"), st.just("--chunk-ms"), _outside(1, 60000).map(_text)),
    st.tuples(st.sampled_from(["features", "stream", "plot"]), st.just("--fps"), _outside(1, 1000).map(_text)),
    st.tuples(st.sampled_from(["features", "stream"]), st.just("--batch-size"),
              _ints_outside(1, MAX_BATCH_SIZE).map(str)),
    st.tuples(st.just("plot"), st.just("--dpi"), _ints_outside(10, 1200).map(str)),
    st.tuples(st.sampled_from(["features", "stream"]), st.just("--device"),
              st.sampled_from(["meta", "xla", "cuda:-1", "cpu cpu", "1", "hpu", "nan"])),
    st.tuples(st.sampled_from(["features", "stream", "plot"]), st.sampled_from(["--fps", "--batch-size", "--dpi"]),
              st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=BAD_OPTIONS)
def test_fuzz_cli_numeric_options(case, tiny_wav, tmp_path, capsys):
    command, option, value = case
    argv = [command, str(tiny_wav), "-c", "seeded", f"{option}={value}", "--device", "cpu", "-q"]
    if option == "--device":
        argv = [command, str(tiny_wav), "-c", "seeded", f"--device={value}", "-q"]
    if command == "features":
        argv += ["-o", str(tmp_path / "out")]
    elif command == "plot":
        argv += ["-o", str(tmp_path / "p.png")]
    if command == "plot" and option == "--dpi":
        argv.remove("-c")
        argv.remove("seeded")
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse: not a number at all
        code = exc.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if "warning:" not in ln and "note:" not in ln]
    assert code == 2, (argv, err)
    assert len(lines) == 1 and "error:" in lines[0], (argv, err)
    assert "internal error" not in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "out").exists() and not (tmp_path / "p.png").exists()
