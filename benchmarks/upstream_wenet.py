"""The upstream wenet recipe, a baseline of ``bench.py``: Ultralight-Digital-Human's
``data_utils/wenet_infer.py`` + ``FeaturePipeline.py``, statement by statement.

``soundfile.read`` → ``(x.astype(float32) * 32767).astype(int16)`` → 32·160 zeros before and
35·160 after → ``torch.from_numpy(...).float()`` → ``torchaudio.compliance.kaldi.fbank``
(80 bins, 25/10 ms, dither 0, energy floor 0) → windows of 67 frames every 5 frames
(``while end < F``, the last one zero-padded) → one ``session.run`` per window with
``offset = [100]`` and zero caches → ``aud_wenet.npy`` (K, 16, 512).

torchaudio's compiled extension does not load against torch 2.13, but ``fbank`` lives in the
pure-Python ``torchaudio/compliance/kaldi.py``: :func:`load_kaldi` loads that one file from a
torchaudio wheel installed with ``--no-deps`` into a folder that is *not* on ``sys.path``
(``make bench`` puts it in ``.venv/bench-upstream/torchaudio``). It never imports
``synctalk_audio``.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

FBANK_ARGS = dict(num_mel_bins=80, frame_length=25, frame_shift=10, dither=0.0, energy_floor=0.0,
                  sample_frequency=16000)


def load_kaldi(site: "str | Path") -> types.ModuleType:
    """``torchaudio/compliance/kaldi.py`` from ``site`` (a --target folder) as a module.

    kaldi.py does ``import torchaudio`` only for mfcc's DCT; an empty module stands in while it
    loads, so torchaudio's compiled part is never touched.
    """
    path = Path(site) / "torchaudio" / "compliance" / "kaldi.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing (make bench installs torchaudio --no-deps there)")
    saved = sys.modules.get("torchaudio")
    sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    try:
        spec = importlib.util.spec_from_file_location("bench_torchaudio_kaldi", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            sys.modules.pop("torchaudio", None)
        else:
            sys.modules["torchaudio"] = saved
    return module


def read_pcm(wav_path):
    """wenet_infer.py up to the float tensor (1, n + 10720) of int16 values."""
    stream, sample_rate = sf.read(wav_path)
    if stream.ndim == 2:
        stream = stream[:, 0]
    stream = stream.astype(np.float32) * 32767
    stream = stream.astype(np.int16)
    empty_audio_30 = np.zeros([32 * 160])
    empty_audio_31 = np.zeros([35 * 160])
    stream = np.concatenate([empty_audio_30, stream, empty_audio_31], axis=0)
    return torch.from_numpy(stream).float().unsqueeze(0)


def fbank(waveform, kaldi):
    """FeaturePipeline._extract_feature: kaldi.fbank with the decode config's arguments → (1, F, 80)."""
    return kaldi.fbank(waveform, **FBANK_ARGS).unsqueeze(0)


def encode(waveform_feat, session):
    """The while loop of wenet_infer.py: (1, F, 80) numpy → (K, 16, 512) float32."""
    feat_length = waveform_feat.shape[1]
    offset = np.ones((1,), dtype=np.int64) * 100
    att_cache = np.zeros([3, 8, 16, 128], dtype=np.float32)
    cnn_cache = np.zeros([3, 1, 512, 14], dtype=np.float32)
    aud_npy = []
    start = 0
    end = 0
    while end < feat_length:
        end = start + 67
        feat = waveform_feat[:, start:end, :]
        feat_len = feat.shape[1]
        if feat_len < 67:
            zero_pad = np.zeros([1, 67 - feat_len, 80])
            feat = np.concatenate((feat, zero_pad), axis=1)
        chunk_feat = np.expand_dims(feat, axis=0)
        start += 5
        ort_inputs = {"chunk": chunk_feat.astype(np.float32), "offset": offset,
                      "att_cache": att_cache.astype(np.float32), "cnn_cache": cnn_cache.astype(np.float32)}
        y = session.run(None, ort_inputs)[0][0]
        aud_npy.append(y)
    return np.array(aud_npy, dtype=np.float32)


def aud_wenet(wav_path, session, kaldi):
    """Audio file (16 kHz: upstream never resamples) → ``aud_wenet.npy`` contents."""
    waveform_feat = fbank(read_pcm(wav_path), kaldi).numpy()
    return encode(waveform_feat, session)
