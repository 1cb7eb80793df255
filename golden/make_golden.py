"""Independent oracle for the golden files under golden/out/ and golden/manifest.json.

Run ONLY with the oracle venv (see golden/README.md):

    /tmp/oracle/bin/python golden/make_golden.py

It re-creates SyncTalk_2D's audio front end (utils.py / inference_328.py) directly on top
of librosa 0.10.1, scipy and torch, exactly the way upstream calls them. It must never import
the package under test (synctalk_audio): its whole point is to be an independent reference.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import librosa
import numpy as np
import scipy
import scipy.signal
import soundfile as sf
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

if "synctalk_audio" in sys.modules:  # pragma: no cover - defensive
    raise RuntimeError("the oracle must not import synctalk_audio")

ROOT = Path(__file__).resolve().parent
INPUTS = ROOT / "inputs"
OUT = ROOT / "out"
MANIFEST = ROOT / "manifest.json"

# --- upstream hparams (SyncTalk_2D utils.py) ------------------------------------------
SAMPLE_RATE = 16000
N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
FMIN = 55
FMAX = 7600
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20
MIN_LEVEL_DB = -100
MAX_ABS_VALUE = 4.0
WEIGHT_SEED = 0
PRECOMPUTED_SEED = 1
BATCH_SIZE = 64

# Clips processed in full, and the one that only gets samples.npy (it is below the
# 3000-sample minimum, so it has no mel window at all).
FULL_CLIPS = [
    "speech_16k_mono.wav",
    "speech_22k_mono.wav",
    "speech_44k_stereo_24bit.wav",
    "speech_48k_float.wav",
    "speech_flac_32k.flac",
    "speech_ogg.ogg",
    "speech_mp3.mp3",
    "silence_2s_16k.wav",
    "short_0p3s_16k.wav",
]
SAMPLES_ONLY_CLIPS = ["too_short_0p15s_16k.wav"]
# Clip whose N (fps 25 for hubert, fps 20 for wenet) sets the number of rows of the
# seeded "precomputed" hubert/wenet feature arrays. A short clip keeps the files small.
PRECOMPUTED_CLIP = "short_0p3s_16k.wav"

# (cin, cout, kernel, stride, padding, residual) -- UPSTREAM.md section 4
ENCODER_BLOCKS = [
    (1, 32, 3, 1, 1, False),
    (32, 32, 3, 1, 1, True),
    (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False),
    (64, 64, 3, 1, 1, True),
    (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False),
    (128, 128, 3, 1, 1, True),
    (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False),
    (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False),
    (512, 512, 1, 1, 0, False),
]


# --- audio: the upstream recipe --------------------------------------------------------
def load_wav(path: Path) -> np.ndarray:
    wav, _ = librosa.load(str(path), sr=SAMPLE_RATE)
    return wav


def preemphasis(wav: np.ndarray, k: float = PREEMPHASIS) -> np.ndarray:
    return scipy.signal.lfilter([1, -k], [1], wav)


def stft(y: np.ndarray, pad_mode: str = "constant") -> np.ndarray:
    return librosa.stft(y=y, n_fft=N_FFT, hop_length=HOP, win_length=WIN, pad_mode=pad_mode)


def build_mel_basis() -> np.ndarray:
    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX)


def amp_to_db(x: np.ndarray) -> np.ndarray:
    min_level = np.exp(MIN_LEVEL_DB / 20 * np.log(10))
    return 20 * np.log10(np.maximum(min_level, x))


def normalize(S: np.ndarray) -> np.ndarray:
    return np.clip(
        (2 * MAX_ABS_VALUE) * ((S - MIN_LEVEL_DB) / (-MIN_LEVEL_DB)) - MAX_ABS_VALUE,
        -MAX_ABS_VALUE,
        MAX_ABS_VALUE,
    )


def melspectrogram(wav: np.ndarray, mel_basis: np.ndarray, pad_mode: str = "constant"):
    """Return (mel, intermediates) where mel is the upstream float64 (80, T) array."""
    emph = preemphasis(wav)
    D = stft(emph, pad_mode=pad_mode)
    mag = np.abs(D)
    S = amp_to_db(np.dot(mel_basis, mag)) - REF_LEVEL_DB
    return normalize(S), {"preemph": emph, "stft_mag": mag}


# --- windows: upstream AudDataset ------------------------------------------------------
def n_video_frames(T: int, fps: float) -> int:
    return int((T - 16) / 80.0 * float(fps)) + 2


def crop_audio_window(spec: np.ndarray, start_frame: int, fps: float) -> np.ndarray:
    start_idx = int(80.0 * (start_frame / float(fps)))
    end_idx = start_idx + 16
    if end_idx > spec.shape[0]:
        end_idx = spec.shape[0]
        start_idx = end_idx - 16
    return spec[start_idx:end_idx, :]


class AudDataset(Dataset):
    def __init__(self, mel: np.ndarray, fps: float = 25):
        self.orig_mel = mel.T  # (T, 80)
        self.fps = fps
        self.data_len = n_video_frames(self.orig_mel.shape[0], fps)

    def __len__(self):
        return self.data_len

    def __getitem__(self, idx):
        win = crop_audio_window(self.orig_mel.copy(), idx, self.fps)
        if win.shape[0] != 16:
            raise RuntimeError(f"window {idx} has {win.shape[0]} rows, expected 16")
        return torch.FloatTensor(win.T).unsqueeze(0)


def mel_windows(mel: np.ndarray, fps: float) -> np.ndarray:
    ds = AudDataset(mel, fps)
    return np.stack([ds[i].squeeze(0).numpy() for i in range(len(ds))]).astype(np.float32)


# --- encoder: upstream AudioEncoder ----------------------------------------------------
class Conv2d(nn.Module):
    def __init__(self, cin, cout, kernel_size, stride, padding, residual=False):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x):
        out = self.conv_block(x)
        if self.residual:
            out += x
        return self.act(out)


class AudioEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.audio_encoder = nn.Sequential(
            *[Conv2d(ci, co, k, s, p, residual=r) for ci, co, k, s, p, r in ENCODER_BLOCKS]
        )

    def forward(self, x):
        out = self.audio_encoder(x)
        return out.squeeze(2).squeeze(2)


def make_seeded_state_dict(seed: int = WEIGHT_SEED) -> list[tuple[str, np.ndarray]]:
    """The shared deterministic weight recipe (see golden/README.md), as ordered items."""
    rng = np.random.default_rng(seed)
    items: list[tuple[str, np.ndarray]] = []
    for i, (cin, cout, k, _s, _p, _r) in enumerate(ENCODER_BLOCKS):
        fan_in = cin * k * k
        weight = rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / fan_in)
        bias = rng.standard_normal(cout) * 0.01
        gamma = 1.0 + 0.1 * rng.standard_normal(cout)
        beta = 0.1 * rng.standard_normal(cout)
        mean = 0.1 * rng.standard_normal(cout)
        var = 1.0 + 0.5 * rng.random(cout)
        items += [
            (f"{i}.conv_block.0.weight", weight.astype(np.float32)),
            (f"{i}.conv_block.0.bias", bias.astype(np.float32)),
            (f"{i}.conv_block.1.weight", gamma.astype(np.float32)),
            (f"{i}.conv_block.1.bias", beta.astype(np.float32)),
            (f"{i}.conv_block.1.running_mean", mean.astype(np.float32)),
            (f"{i}.conv_block.1.running_var", var.astype(np.float32)),
            (f"{i}.conv_block.1.num_batches_tracked", np.array(0, dtype=np.int64)),
        ]
    return items


def state_dict_sha256(items: list[tuple[str, np.ndarray]]) -> str:
    return hashlib.sha256(
        b"".join(k.encode() + np.ascontiguousarray(v).tobytes() for k, v in items)
    ).hexdigest()


def build_encoder(items: list[tuple[str, np.ndarray]]) -> AudioEncoder:
    model = AudioEncoder()
    ckpt = {k: torch.from_numpy(np.array(v)) for k, v in items}
    # upstream: model.load_state_dict({f"audio_encoder.{k}": v for k, v in ckpt.items()})
    model.load_state_dict({f"audio_encoder.{k}": v for k, v in ckpt.items()})
    model.eval()
    return model


def encode(model: AudioEncoder, mel: np.ndarray) -> np.ndarray:
    loader = DataLoader(AudDataset(mel, 25), batch_size=BATCH_SIZE, shuffle=False)
    outputs = []
    for batch in loader:
        with torch.no_grad():
            outputs.append(model(batch))
    return torch.cat(outputs, dim=0).cpu().numpy()


# --- temporal context: upstream get_audio_features (intended short-audio semantics) ----
def get_audio_features(features: np.ndarray, index: int) -> np.ndarray:
    left = index - 8
    right = index + 8
    pad_left = 0
    pad_right = 0
    if left < 0:
        pad_left = -left
        left = 0
    if right > features.shape[0]:
        pad_right = right - features.shape[0]
        right = features.shape[0]
    auds = torch.from_numpy(features[left:right])
    # Upstream uses torch.zeros_like(auds[:pad]), which silently truncates when fewer than
    # `pad` rows exist; we build exactly `pad` zero rows (the intended behaviour).
    if pad_left > 0:
        zeros = torch.zeros((pad_left, *auds.shape[1:]), dtype=auds.dtype)
        auds = torch.cat([zeros, auds], dim=0)
    if pad_right > 0:
        zeros = torch.zeros((pad_right, *auds.shape[1:]), dtype=auds.dtype)
        auds = torch.cat([auds, zeros], dim=0)
    assert auds.shape[0] == 16, auds.shape
    return auds.numpy()


def all_frames(features: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.stack(
        [get_audio_features(features, i).reshape(shape) for i in range(features.shape[0])]
    ).astype(np.float32)


# --- driver ----------------------------------------------------------------------------
def save(dirpath: Path, name: str, arr: np.ndarray) -> dict:
    np.save(dirpath / name, arr)
    return {"shape": list(arr.shape), "dtype": str(arr.dtype)}


def source_info(path: Path) -> dict:
    info = sf.info(str(path))
    return {
        "file": f"inputs/{path.name}",
        "source_rate": info.samplerate,
        "source_channels": info.channels,
        "source_format": info.format,
        "source_subtype": info.subtype,
        # sf.info's frame count comes from the header; for mp3 it is an estimate that can
        # differ from what decoding yields, so record the decoded length as well.
        "source_frames": info.frames,
        "decoded_frames": int(sf.read(str(path), dtype="float32", always_2d=True)[0].shape[0]),
        "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def main() -> int:
    torch.manual_seed(0)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    mel_basis = build_mel_basis()
    assert mel_basis.dtype == np.float32 and mel_basis.shape == (N_MELS, N_FFT // 2 + 1)
    np.save(OUT / "mel_basis.npy", mel_basis)

    items = make_seeded_state_dict(WEIGHT_SEED)
    weight_sha = state_dict_sha256(items)
    model = build_encoder(items)
    n_params = sum(p.numel() for p in model.parameters())

    clips: dict[str, dict] = {}
    for name in FULL_CLIPS + SAMPLES_ONLY_CLIPS:
        path = INPUTS / name
        stem = path.stem
        d = OUT / stem
        d.mkdir()
        entry = source_info(path)
        wav = load_wav(path)
        files = {"samples.npy": save(d, "samples.npy", wav)}
        entry["n_samples_16k"] = int(wav.shape[0])
        if name in SAMPLES_ONLY_CLIPS:
            entry["samples_only"] = True
            entry["files"] = files
            clips[stem] = entry
            print(f"{stem}: {wav.shape[0]} samples (samples only)")
            continue

        mel, inter = melspectrogram(wav, mel_basis, pad_mode="constant")
        mel_reflect, _ = melspectrogram(wav, mel_basis, pad_mode="reflect")
        T = mel.shape[1]
        assert T == 1 + wav.shape[0] // HOP
        files["preemph.npy"] = save(d, "preemph.npy", inter["preemph"])
        files["stft_mag.npy"] = save(d, "stft_mag.npy", inter["stft_mag"])
        files["mel.npy"] = save(d, "mel.npy", mel)
        files["mel_reflect.npy"] = save(d, "mel_reflect.npy", mel_reflect)

        win25 = mel_windows(mel, 25)
        win20 = mel_windows(mel, 20)
        files["windows_fps25.npy"] = save(d, "windows_fps25.npy", win25)
        files["windows_fps20.npy"] = save(d, "windows_fps20.npy", win20)

        feats = encode(model, mel)
        assert feats.shape == (win25.shape[0], 512) and feats.dtype == np.float32
        padded = np.concatenate([feats[:1], feats, feats[-1:]], axis=0)
        frames = all_frames(padded, (32, 16, 16))
        files["features.npy"] = save(d, "features.npy", feats)
        files["padded.npy"] = save(d, "padded.npy", padded)
        files["frames_ave.npy"] = save(d, "frames_ave.npy", frames)

        entry.update(
            T=int(T),
            N_fps25=int(win25.shape[0]),
            N_fps20=int(win20.shape[0]),
            n_video_frames=int(padded.shape[0]),
            features_stats={
                "max_abs": float(np.abs(feats).max()),
                "std": float(feats.std()),
                "mean": float(feats.mean()),
                "frac_zero": float((feats == 0).mean()),
            },
        )

        if name == PRECOMPUTED_CLIP:
            rng = np.random.default_rng(PRECOMPUTED_SEED)
            t_h = int(win25.shape[0])
            t_w = int(win20.shape[0])
            aud_hu = rng.standard_normal((t_h, 2, 1024)).astype(np.float32)
            aud_wenet = rng.standard_normal((t_w, 8192)).astype(np.float32)
            files["aud_hu.npy"] = save(d, "aud_hu.npy", aud_hu)
            files["aud_wenet.npy"] = save(d, "aud_wenet.npy", aud_wenet)
            files["frames_hubert.npy"] = save(
                d, "frames_hubert.npy", all_frames(aud_hu, (32, 32, 32))
            )
            files["frames_wenet.npy"] = save(
                d, "frames_wenet.npy", all_frames(aud_wenet, (256, 16, 32))
            )
            entry["precomputed"] = {
                "seed": PRECOMPUTED_SEED,
                "recipe": "rng=np.random.default_rng(1); "
                "aud_hu=rng.standard_normal((N_fps25,2,1024)).astype(float32); "
                "aud_wenet=rng.standard_normal((N_fps20,8192)).astype(float32)",
                "note": "frames_* use the raw array (no first/last repeat), context +-8 rows, "
                "zeros outside, row-major reshape",
            }

        entry["files"] = files
        clips[stem] = entry
        st = entry["features_stats"]
        print(
            f"{stem}: n={wav.shape[0]} T={T} N25={win25.shape[0]} N20={win20.shape[0]} "
            f"feat max|x|={st['max_abs']:.4g} std={st['std']:.4g}"
        )

    manifest = {
        "generator": "golden/make_golden.py (independent oracle: librosa 0.10.1 + scipy + "
        "torch; never the synctalk_audio package)",
        "versions": {
            "python": sys.version.split()[0],
            "librosa": librosa.__version__,
            "scipy": scipy.__version__,
            "numpy": np.__version__,
            "torch": torch.__version__,
            "soundfile": sf.__version__,
            "libsndfile": sf.__libsndfile_version__,
            "soxr": _version("soxr"),
        },
        "params": {
            "sample_rate": SAMPLE_RATE,
            "n_fft": N_FFT,
            "hop_length": HOP,
            "win_length": WIN,
            "n_mels": N_MELS,
            "fmin": FMIN,
            "fmax": FMAX,
            "preemphasis": PREEMPHASIS,
            "ref_level_db": REF_LEVEL_DB,
            "min_level_db": MIN_LEVEL_DB,
            "max_abs_value": MAX_ABS_VALUE,
            "pad_mode": {"mel.npy": "constant", "mel_reflect.npy": "reflect"},
            "encoder_batch_size": BATCH_SIZE,
            "features_fps": 25,
        },
        "weights": {
            "recipe": "see golden/README.md (rng = np.random.default_rng(seed); per block: "
            "weight, bias, gamma, beta, mean, var; float64 draws cast to float32)",
            "seed": WEIGHT_SEED,
            "sha256": weight_sha,
            "hash_definition": "sha256(b''.join(key.encode() + "
            "np.ascontiguousarray(value).tobytes() for key, value in ordered_items))",
            "n_keys": len(items),
            "n_parameters": int(n_params),
        },
        "mel_basis": {"file": "out/mel_basis.npy", "shape": list(mel_basis.shape),
                      "dtype": str(mel_basis.dtype)},
        "clips": clips,
    }
    MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    print(f"weights sha256 {weight_sha} ({n_params} parameters)")
    return 0


def _version(mod: str) -> str:
    try:
        return __import__(mod).__version__
    except Exception:  # pragma: no cover
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
