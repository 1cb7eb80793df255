"""Independent oracle for the wenet golden files under golden/wenet/.

Run ONLY with the wenet oracle venv (see golden/README.md, "wenet"):

    /tmp/oracle-wenet/bin/python golden/make_golden_wenet.py

It re-runs Ultralight-Digital-Human's ``data_utils/wenet_infer.py`` statement by statement:
``sf.read``, channel 0, ``(x.astype(np.float32) * 32767).astype(np.int16)``, 32·160 zeros
before and 35·160 after, ``torch.from_numpy(...).float()``, torchaudio's
``compliance.kaldi.fbank`` with upstream's arguments, and the 67-frame window loop
(``while end < F``, start += 5, the last window zero-padded) feeding onnxruntime with
``offset = [100]`` and zero caches. Upstream never resamples; the oracle resamples non-16 kHz
clips first, as the package does: ``soxr.resample(x, sr, 16000, quality="soxr_hq")`` on
channel 0 (float64), length fixed to ``ceil(n · 16000 / sr)``.

torchaudio's compiled extension does not load against current torch, so its pure-Python
``torchaudio/compliance/kaldi.py`` (the file upstream calls) is loaded on its own. The fbank
is also cross-checked against kaldi-native-fbank (an independent C++ Kaldi port); the
differences go into the manifest.

For the long clip (``ROW_STATS``) the oracle also measures upstream's own spread, row by row:
the same recipe with the fbank from kaldi-native-fbank, from torchaudio in float64 arithmetic,
and from torchaudio in fresh processes under other CPU code paths (``ATEN_CPU_CAPABILITY``,
``MKL_CBWR``, ``MKL_ENABLE_INSTRUCTIONS``); each as ``max|y − y_oracle|`` per encoder row over
``max|y_oracle|``, into ``<stem>/row_stats.npz`` (float32 (K,) per variant).

The encoder is ``golden/wenet/standin_encoder.onnx``, an UNTRAINED stand-in with the wenet
encoder's interface (written once by the package, then treated as the user-supplied model).
This script must never import synctalk_audio.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import platform
import os
import shutil
import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import onnxruntime as ort
import soundfile as sf
import soxr
import torch

if "synctalk_audio" in sys.modules:  # pragma: no cover - defensive
    raise RuntimeError("the oracle must not import synctalk_audio")

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
OUT = ROOT / "wenet"
MODEL = OUT / "standin_encoder.onnx"
MANIFEST = OUT / "manifest.json"

# upstream constants (wenet_infer.py, FeaturePipeline.py / decode_engine_V4.yaml)
FRAMES_STRIDE = 67
FBANK_ARGS = dict(num_mel_bins=80, frame_length=25, frame_shift=10, dither=0.0, energy_floor=0.0,
                  sample_frequency=16000)
TARGET_SR = 16000

# (clip path relative to the repository, how many encoder windows to store: "all" or a selection)
CLIPS = [
    ("golden/inputs/speech_16k_mono.wav", "select"),
    ("golden/inputs/speech_44k_stereo_24bit.wav", "select"),
    ("golden/inputs/speech_mp3.mp3", "select"),
    ("golden/inputs/silence_2s_16k.wav", "select"),
    ("golden/inputs/short_0p3s_16k.wav", "all"),
    ("golden/inputs/too_short_0p15s_16k.wav", "all"),
    ("benchmarks/data/speech_45s.flac", "select"),  # > 20 s
]
#: Clips whose every encoder row gets upstream's own spread (row_stats.npz).
ROW_STATS = {"benchmarks/data/speech_45s.flac"}
#: torchaudio in a fresh process under these environment settings (other CPU code paths).
CODE_PATHS = {
    "torchaudio_aten_default": {"ATEN_CPU_CAPABILITY": "default"},  # torch's non-SIMD kernels (window cos/pow)
    "torchaudio_aten_avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "torchaudio_mkl_cbwr_compatible": {"MKL_CBWR": "COMPATIBLE"},  # MKL's conditional reproducibility mode
    "torchaudio_mkl_avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}


def load_torchaudio_kaldi() -> types.ModuleType:
    """torchaudio/compliance/kaldi.py as a module, without torchaudio's compiled extension."""
    spec = importlib.util.find_spec("torchaudio")
    path = Path(list(spec.submodule_search_locations)[0]) / "compliance" / "kaldi.py"
    saved = sys.modules.get("torchaudio")
    sys.modules["torchaudio"] = types.ModuleType("torchaudio")  # kaldi.py only uses it for mfcc's DCT
    try:
        mod_spec = importlib.util.spec_from_file_location("torchaudio_compliance_kaldi", path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["torchaudio"]
        else:
            sys.modules["torchaudio"] = saved
    return module


def read_16k(path: Path) -> tuple[np.ndarray, int, bool]:
    """sf.read (float64), channel 0; soxr_hq to 16 kHz with the length fixed when needed."""
    stream, sample_rate = sf.read(str(path))
    if stream.ndim == 2:
        stream = stream[:, 0]
    if sample_rate == TARGET_SR:
        return stream, sample_rate, False
    n_out = int(math.ceil(stream.shape[0] * TARGET_SR / sample_rate))
    y = soxr.resample(np.ascontiguousarray(stream), sample_rate, TARGET_SR, quality="soxr_hq")
    y = y[:n_out] if y.shape[0] >= n_out else np.pad(y, (0, n_out - y.shape[0]))
    return y, sample_rate, True


def upstream_waveform(stream: np.ndarray) -> np.ndarray:
    """wenet_infer.py's statements up to the torch tensor (returned as its float32 numpy)."""
    scaled = stream.astype(np.float32) * 32767
    if np.abs(scaled).max() >= 32768:  # upstream's int16 cast would be undefined: keep the golden well-defined
        raise RuntimeError("a golden clip exceeds int16 range after scaling")
    waveform = scaled.astype(np.int16)
    empty_audio_30 = np.zeros([32 * 160])
    empty_audio_31 = np.zeros([35 * 160])
    waveform = np.concatenate([empty_audio_30, waveform, empty_audio_31], axis=0)
    return torch.from_numpy(waveform).float().unsqueeze(0)


def knf_fbank(samples: np.ndarray) -> np.ndarray:
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = 16000
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = 80
    opts.energy_floor = 0.0
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(16000, samples.tolist())
    fb.input_finished()
    return np.stack([np.asarray(fb.get_frame(i), dtype=np.float32) for i in range(fb.num_frames_ready)])


def upstream_windows_and_features(waveform_feat: np.ndarray, session: ort.InferenceSession) -> tuple[list, np.ndarray]:
    """The while loop of wenet_infer.py (waveform_feat (1, F, 80) numpy)."""
    feat_length = waveform_feat.shape[1]
    offset = np.ones((1,), dtype=np.int64) * 100
    att_cache = np.zeros([3, 8, 16, 128], dtype=np.float32)
    cnn_cache = np.zeros([3, 1, 512, 14], dtype=np.float32)
    aud_npy = []
    starts = []
    start = 0
    end = 0
    while end < feat_length:
        end = start + FRAMES_STRIDE
        feat = waveform_feat[:, start:end, :]
        feat_len = feat.shape[1]
        if feat_len < FRAMES_STRIDE:
            zero_pad = np.zeros([1, FRAMES_STRIDE - feat_len, 80])
            feat = np.concatenate((feat, zero_pad), axis=1)
        chunk_feat = np.expand_dims(feat, axis=0)
        starts.append(start)
        start += 5
        ort_encoder_inputs = {"chunk": chunk_feat.astype(np.float32), "offset": offset,
                              "att_cache": att_cache.astype(np.float32), "cnn_cache": cnn_cache.astype(np.float32)}
        ort_encoder_outs = session.run(None, ort_encoder_inputs)
        y = ort_encoder_outs[0][0]
        aud_npy.append(y)
    return starts, np.array(aud_npy, dtype=np.float32)


def selection(k: int) -> list[int]:
    """Windows kept for long clips: the first two, the middle one, the last two (the padded one)."""
    return sorted({0, min(1, k - 1), k // 2, max(0, k - 2), k - 1})


def cpu_model() -> str:
    """The CPU the oracle ran on (its code paths depend on it): /proc/cpuinfo's model name, family and model."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines()[:30] if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        return (f"{info['model name']} (vendor {info.get('vendor_id')}, family {info.get('cpu family')}, "
                f"model {info.get('model')})")
    except (OSError, KeyError, ValueError):
        return platform.processor() or platform.machine()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def torchaudio_fbank(kaldi: types.ModuleType, waveform: torch.Tensor, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """FeaturePipeline._extract_feature: kaldi.fbank with the decode config's arguments → float32 (F, 80)."""
    return kaldi.fbank(waveform.to(dtype), **FBANK_ARGS).numpy().astype(np.float32)


def fbank_in_subprocess(rel: str, env: dict, out: Path) -> np.ndarray:
    """torchaudio's fbank of a clip in a fresh interpreter with ``env`` added (CPU code paths are
    chosen at start-up) → float32 (F, 80)."""
    subprocess.run([sys.executable, __file__, "--fbank", rel, str(out)], check=True,
                   env={**os.environ, **env})
    return np.load(out)


def row_distance(y: np.ndarray, oracle: np.ndarray) -> np.ndarray:
    """Per encoder row ``max|y − oracle|`` over ``max|oracle|``: (K, 16, 512) pair → float32 (K,)."""
    return (np.abs(y - oracle).max(axis=(1, 2)) / np.abs(oracle).max()).astype(np.float32)


def upstream_spread(rel: str, waveform: torch.Tensor, cross: np.ndarray, aud: np.ndarray, kaldi: types.ModuleType,
                    session: ort.InferenceSession, scratch: Path) -> dict[str, np.ndarray]:
    """Every row's distance from the oracle of the same recipe with other upstream fbanks → {name: float32 (K,)}."""
    fbanks = {"kaldi_native_fbank": cross, "torchaudio_float64": torchaudio_fbank(kaldi, waveform, torch.float64)}
    for name, env in CODE_PATHS.items():
        fbanks[name] = fbank_in_subprocess(rel, env, scratch / f"{name}.npy")
    return {name: row_distance(upstream_windows_and_features(fb[None], session)[1], aud) for name, fb in fbanks.items()}


def fbank_only(rel: str, out: str) -> None:
    """``--fbank CLIP OUT``: torchaudio's fbank of the padded clip, saved to OUT (used by fbank_in_subprocess)."""
    stream, _, _ = read_16k(REPO / rel)
    np.save(out, torchaudio_fbank(load_torchaudio_kaldi(), upstream_waveform(stream)))


def main() -> None:
    if not MODEL.is_file():
        raise SystemExit(f"{MODEL} is missing: write it first (golden/README.md, wenet)")
    kaldi = load_torchaudio_kaldi()
    session = ort.InferenceSession(str(MODEL))
    for child in OUT.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
    clips = {}
    for rel, keep in CLIPS:
        path = REPO / rel
        stream, sample_rate, resampled = read_16k(path)
        waveform = upstream_waveform(stream)
        fb = torchaudio_fbank(kaldi, waveform)  # (F, 80) float32
        waveform_feat = fb[None]
        starts, aud = upstream_windows_and_features(waveform_feat, session)
        k = aud.shape[0]
        index = list(range(k)) if keep == "all" else selection(k)
        cross = knf_fbank(waveform[0].numpy())
        log_diff = np.abs(cross - fb)
        energy_rel = np.abs(np.exp(cross.astype(np.float64)) - np.exp(fb.astype(np.float64))).max(axis=1) \
            / np.exp(fb.astype(np.float64)).max(axis=1)
        stem = path.stem
        folder = OUT / stem
        folder.mkdir(parents=True)
        np.save(folder / "fbank.npy", fb)
        spread = {}
        if rel in ROW_STATS:
            spread = upstream_spread(rel, waveform, cross, aud, kaldi, session, folder)
            for name in CODE_PATHS:
                (folder / f"{name}.npy").unlink()
            np.savez_compressed(folder / "row_stats.npz", **spread)
        np.save(folder / "features.npy", aud[index])
        np.save(folder / "feature_index.npy", np.asarray(index, dtype=np.int64))
        clips[stem] = {
            "file": rel,
            "sample_rate": int(sample_rate),
            "resampled_to_16k": resampled,
            "n_samples_16k": int(stream.shape[0]),
            "n_padded": int(waveform.shape[1]),
            "n_fbank_frames": int(fb.shape[0]),
            "n_windows": int(k),
            "window_starts_first_last": [int(starts[0]), int(starts[-1])],
            "stored_windows": "all" if keep == "all" else index,
            "max_abs_features": float(np.abs(aud).max()),
            "fbank_range": [float(fb.min()), float(fb.max())],
            "knf_vs_torchaudio": {
                "max_abs_log_diff": float(log_diff.max()),
                "p99_99_abs_log_diff": float(np.quantile(log_diff, 0.9999)),
                "max_energy_diff_rel_to_frame_max": float(energy_rel.max()),
            },
        }
        if spread:
            clips[stem]["upstream_spread"] = {
                "file": f"golden/wenet/{stem}/row_stats.npz",
                "what": "per encoder row, max|y - y_oracle| / max|y_oracle| with another upstream fbank",
                "code_paths": CODE_PATHS,
                **{name: {"max": float(d.max()), "rows_over_1e-4": np.flatnonzero(d > 1e-4).tolist()}
                   for name, d in spread.items()},
            }
        print(f"{stem}: n={stream.shape[0]} F={fb.shape[0]} K={k} stored={len(index)} "
              f"knf max|dlog|={log_diff.max():.3g}")
    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torchaudio (compliance/kaldi.py only)": metadata.version("torchaudio"),
        "kaldi-native-fbank": metadata.version("kaldi-native-fbank"),
        "onnxruntime": ort.__version__,
        "soundfile": sf.__version__,
        "libsndfile": sf.__libsndfile_version__,
        "soxr": metadata.version("soxr"),
        "cpu": cpu_model(),
    }
    manifest = {
        "generator": "golden/make_golden_wenet.py (independent oracle: Ultralight-Digital-Human wenet_infer.py "
                     "statements + torchaudio kaldi.fbank + onnxruntime; never the synctalk_audio package)",
        "versions": versions,
        "params": {"fbank": FBANK_ARGS, "pad_before": 32 * 160, "pad_after": 35 * 160,
                   "frames_stride": FRAMES_STRIDE, "window_step": 5, "offset": 100,
                   "att_cache": [3, 8, 16, 128], "cnn_cache": [3, 1, 512, 14],
                   "resample": "soxr.resample(channel 0 float64, sr, 16000, quality='soxr_hq'), "
                               "length ceil(n*16000/sr)"},
        "model": {"file": "golden/wenet/standin_encoder.onnx", "sha256": sha256(MODEL),
                  "untrained": True, "seed": 0},
        "clips": clips,
    }
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {MANIFEST}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--fbank":
        fbank_only(sys.argv[2], sys.argv[3])
    else:
        main()
