"""Independent oracle for the hubert golden files under golden/hubert/.

Run ONLY with the hubert oracle venv (see golden/README.md, section "hubert"):

    /tmp/oracle-hubert/bin/python golden/make_golden_hubert.py

It replays the statements of upstream's ``data_utils/hubert.py`` (SyncTalk /
Ultralight-Digital-Human) on top of soundfile, librosa, transformers 4.x and torch. It never
imports synctalk_audio. No pretrained weights exist here, so it builds the untrained stand-in
HubertModel itself (hubert-large's flags, 1024-d, 2 layers) from a seeded numpy recipe that is
written out in golden/README.md; the package builds the same weights on its own, and the
weight hash in golden/hubert/manifest.json ties the two together.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import soxr
import torch
import transformers
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

if "synctalk_audio" in sys.modules:  # pragma: no cover - defensive
    raise RuntimeError("the oracle must not import synctalk_audio")

ROOT = Path(__file__).resolve().parent
INPUTS = ROOT / "inputs"
OUT = ROOT / "hubert"

SEED = 0
NUM_LAYERS = 2
CONV_DIM = 32

# Clips whose whole aud_hu.npy is stored.
CLIPS = [
    "speech_16k_mono.wav",
    "speech_44k_stereo_24bit.wav",  # resampled; channel 0
    "speech_mp3.mp3",  # resampled (44.1 kHz mp3)
    "silence_2s_16k.wav",
    "short_0p3s_16k.wav",
    "too_short_0p15s_16k.wav",  # 2400 samples: too short for a mel window, fine for hubert
]
# Long signals built from the committed clips (kept small in git): their 16 kHz channel-0
# samples, loaded as upstream loads them, concatenated in this order, cycled, cut to n.
LONG_SOURCES = [
    "speech_16k_mono.wav",
    "speech_22k_mono.wav",
    "speech_44k_stereo_24bit.wav",
    "speech_flac_32k.flac",
    "speech_48k_float.wav",
    "silence_2s_16k.wav",
]
LONG = {
    "long_41s": 2 * 320000 + 20000,  # two full 20 s chunks and a 1.25 s remainder
    "long_40s_plus50": 2 * 320000 + 50,  # last full chunk clamped to n, 50-sample remainder skipped
}
# Pair rows stored for the long signals (around both chunk joins and the ends); every row is
# also summarised in stats.npy.
LONG_PAIRS = [range(0, 8), range(492, 508), range(992, 1008)]


CONFIG_KEYS = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "conv_dim",
               "conv_kernel", "conv_stride", "conv_bias", "feat_extract_norm", "feat_extract_activation",
               "do_stable_layer_norm", "hidden_act", "layer_norm_eps", "num_conv_pos_embeddings",
               "num_conv_pos_embedding_groups", "feat_proj_layer_norm"]


# --- the stand-in model ---------------------------------------------------------------------


def standin_config() -> HubertConfig:
    return HubertConfig(
        hidden_size=1024,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=16,
        intermediate_size=64,
        conv_dim=[CONV_DIM] * 7,
        conv_kernel=[10, 3, 3, 3, 3, 2, 2],
        conv_stride=[5, 2, 2, 2, 2, 2, 2],
        conv_bias=True,
        feat_extract_norm="layer",
        feat_extract_activation="gelu",
        do_stable_layer_norm=True,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=16,
        vocab_size=32,
    )


def standin_model() -> HubertModel:
    model = HubertModel(standin_config())
    state = model.state_dict()
    rng = np.random.default_rng(SEED)
    new = {}
    for name in sorted(state):
        shape = tuple(state[name].shape)
        z = rng.standard_normal(shape)
        if name.endswith("layer_norm.weight") or name.endswith("original0"):
            z = 1.0 + 0.1 * z
        elif name.endswith(".bias"):
            z = 0.02 * z
        elif name != "masked_spec_embed":
            fan_in = 1
            for d in shape[1:]:
                fan_in *= d
            z = z * np.sqrt(1.0 / fan_in)
        new[name] = torch.from_numpy(z.astype(np.float32))
    model.load_state_dict(new)
    return model.eval()


def weights_sha256(model: HubertModel) -> str:
    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        h.update(name.encode())
        h.update(np.ascontiguousarray(state[name].numpy()).tobytes())
    return h.hexdigest()


# --- upstream's statements ---------------------------------------------------------------------


def upstream_load(path: Path) -> np.ndarray:
    """``sf.read`` → ``librosa.resample(.., target_sr=16000)`` → channel 0 (upstream's order).

    Upstream resamples the whole (n, 2) array, which librosa reads as 2 frames of n "channels"
    and fails on; so for a stereo file at another rate the oracle takes channel 0 first — the
    intended result. For mono files and 16 kHz files this is literally upstream.
    """
    speech, sr = sf.read(str(path))
    if speech.ndim == 2 and sr != 16000:
        speech = speech[:, 0]
    speech_16k = librosa.resample(speech, orig_sr=sr, target_sr=16000)
    if speech_16k.ndim == 2:
        speech_16k = speech_16k[:, 0]
    return speech_16k


def get_hubert_from_16k_speech(speech: np.ndarray, processor, hubert_model) -> torch.Tensor:
    with torch.no_grad():
        input_values_all = processor(speech, return_tensors="pt", sampling_rate=16000).input_values
        kernel = 400
        stride = 320
        clip_length = stride * 1000
        num_iter = input_values_all.shape[1] // clip_length
        expected_T = (input_values_all.shape[1] - (kernel - stride)) // stride
        res_lst = []
        for i in range(num_iter):
            if i == 0:
                start_idx = 0
                end_idx = clip_length - stride + kernel
            else:
                start_idx = clip_length * i
                end_idx = start_idx + (clip_length - stride + kernel)
            input_values = input_values_all[:, start_idx:end_idx]
            hidden_states = hubert_model.forward(input_values).last_hidden_state
            res_lst.append(hidden_states[0])
        if num_iter > 0:
            input_values = input_values_all[:, clip_length * num_iter:]
        else:
            input_values = input_values_all
        if input_values.shape[1] >= kernel:
            hidden_states = hubert_model(input_values).last_hidden_state
            res_lst.append(hidden_states[0])
        ret = torch.cat(res_lst, dim=0).cpu()
        assert abs(ret.shape[0] - expected_T) <= 1
        if ret.shape[0] < expected_T:
            ret = torch.nn.functional.pad(ret, (0, 0, 0, expected_T - ret.shape[0]))
        else:
            ret = ret[:expected_T]
        return ret


def make_even_first_dim(tensor: torch.Tensor) -> torch.Tensor:
    size = list(tensor.size())
    if size[0] % 2 == 1:
        size[0] -= 1
        return tensor[: size[0]]
    return tensor


def pad_even_first_dim(tensor: torch.Tensor) -> torch.Tensor:
    """Ultralight-Digital-Human since 2026: one zero row after an odd last row."""
    if tensor.shape[0] % 2 == 1:
        return torch.cat([tensor, torch.zeros_like(tensor[:1])])
    return tensor


def aud_hu(speech: np.ndarray, processor, model) -> tuple[np.ndarray, np.ndarray]:
    hidden = get_hubert_from_16k_speech(speech, processor, model)
    drop = make_even_first_dim(hidden).reshape(-1, 2, 1024).detach().numpy()
    pad = pad_even_first_dim(hidden).reshape(-1, 2, 1024).detach().numpy()
    return drop, pad


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    torch.set_num_threads(2)
    # hubert-large-ls960-ft's preprocessor_config.json
    processor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    )
    model = standin_model()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    manifest = {
        "generator": "golden/make_golden_hubert.py (independent oracle: upstream data_utils/hubert.py statements "
        "on soundfile + librosa + transformers 4.x + torch; never the synctalk_audio package)",
        "versions": {
            "python": platform.python_version(),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "librosa": librosa.__version__,
            "soundfile": sf.__version__,
            "libsndfile": sf.__libsndfile_version__,
            "soxr": soxr.__version__,
            "attn_implementation": model.config._attn_implementation,
        },
        "model": {
            "recipe": "see golden/README.md, section hubert (seeded numpy draws over sorted state-dict keys)",
            "seed": SEED,
            "num_layers": NUM_LAYERS,
            "conv_dim": CONV_DIM,
            "config": {k: standin_config().to_dict()[k] for k in CONFIG_KEYS},
            "n_parameters": int(sum(p.numel() for p in model.parameters())),
            "sha256": weights_sha256(model),
            "hash_definition": "sha256(b''.join(key.encode() + float32 bytes) over sorted(state_dict))",
        },
        "clips": {},
        "long": {},
    }
    for name in CLIPS:
        path = INPUTS / name
        speech = upstream_load(path)
        drop, pad = aud_hu(speech, processor, model)
        stem = path.stem
        (OUT / stem).mkdir()
        np.save(OUT / stem / "aud_hu.npy", drop)
        np.save(OUT / stem / "aud_hu_oddpad_tail.npy", pad[drop.shape[0]:])  # what "pad" adds to "drop"
        manifest["clips"][stem] = {
            "file": f"inputs/{name}",
            "source_sha256": sha256_file(path),
            "n_samples_16k": int(speech.shape[0]),
            "expected_T": int((speech.shape[0] - 80) // 320),
            "aud_hu": list(drop.shape),
            "aud_hu_oddpad": list(pad.shape),
            "aud_hu_oddpad_tail": list(pad[drop.shape[0]:].shape),
            "max_abs": float(np.abs(drop).max()) if drop.size else 0.0,
        }
        print(stem, speech.shape, drop.shape, pad.shape, flush=True)
    sources = [upstream_load(INPUTS / name) for name in LONG_SOURCES]
    cycle = np.concatenate(sources)
    for stem, n in LONG.items():
        speech = np.tile(cycle, n // cycle.shape[0] + 1)[:n]
        drop, _ = aud_hu(speech, processor, model)
        wanted = [i for r in LONG_PAIRS for i in r] + list(range(drop.shape[0] - 8, drop.shape[0]))
        pairs = np.array(sorted({i for i in wanted if 0 <= i < drop.shape[0]}))
        (OUT / stem).mkdir()
        np.save(OUT / stem / "pair_index.npy", pairs.astype(np.int64))
        np.save(OUT / stem / "aud_hu_rows.npy", drop[pairs])
        flat = drop.reshape(drop.shape[0], -1).astype(np.float64)
        stats = np.stack([flat.mean(1), np.sqrt((flat ** 2).sum(1)), np.abs(flat).max(1)], axis=1)
        np.save(OUT / stem / "stats.npy", stats)
        manifest["long"][stem] = {
            "sources": [f"inputs/{name}" for name in LONG_SOURCES],
            "n_samples_16k": n,
            "expected_T": int((n - 80) // 320),
            "aud_hu": list(drop.shape),
            "stored_pairs": "pair_index.npy (rows of aud_hu_rows.npy); stats.npy: per pair row mean, l2 norm, max|x| (float64)",
            "max_abs": float(np.abs(drop).max()),
        }
        print(stem, speech.shape, drop.shape, flush=True)
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
