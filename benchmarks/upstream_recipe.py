"""The upstream recipe, the baseline of ``bench.py``: SyncTalk_2D's audio front end as its
``utils.py`` and ``inference_328.py`` run it (librosa 0.10.1, ``AudDataset`` through a
``DataLoader`` in batches of 64, the ``AudioEncoder`` forward, then one
``get_audio_features(...).reshape(32, 16, 16)`` per video frame).
The code follows upstream's statement by statement (only the unused branches are left out).

It never imports ``synctalk_audio``: it is the independent thing we measure against.
Importable (``bench.py`` calls :func:`features` and :func:`frames` in-process) and runnable
as a script, which is what the cold-start benchmark times as a fresh process::

    python benchmarks/upstream_recipe.py AUDIO --checkpoint CKPT -o padded.npy

librosa 0.10.1 imports ``pkg_resources``, which setuptools >= 81 no longer ships and torch
2.13 needs setuptools >= 77; ``make bench`` therefore puts the ``pkg_resources`` of
setuptools 69 in ``.venv/bench-site`` and bench.py adds that folder to ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import sys
import warnings

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

import librosa  # noqa: E402
import librosa.filters  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import signal  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

BATCH_SIZE = 64
FPS = 25.0


# --- utils.py: the encoder ----------------------------------------------------------------
class Conv2d(nn.Module):
    def __init__(self, cin, cout, kernel_size, stride, padding, residual=False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
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
            Conv2d(1, 32, kernel_size=3, stride=1, padding=1),
            Conv2d(32, 32, kernel_size=3, stride=1, padding=1, residual=True),
            Conv2d(32, 32, kernel_size=3, stride=1, padding=1, residual=True),
            Conv2d(32, 64, kernel_size=3, stride=(3, 1), padding=1),
            Conv2d(64, 64, kernel_size=3, stride=1, padding=1, residual=True),
            Conv2d(64, 64, kernel_size=3, stride=1, padding=1, residual=True),
            Conv2d(64, 128, kernel_size=3, stride=3, padding=1),
            Conv2d(128, 128, kernel_size=3, stride=1, padding=1, residual=True),
            Conv2d(128, 128, kernel_size=3, stride=1, padding=1, residual=True),
            Conv2d(128, 256, kernel_size=3, stride=(3, 2), padding=1),
            Conv2d(256, 256, kernel_size=3, stride=1, padding=1, residual=True),
            Conv2d(256, 512, kernel_size=3, stride=1, padding=0),
            Conv2d(512, 512, kernel_size=1, stride=1, padding=0),
        )

    def forward(self, x):
        out = self.audio_encoder(x)
        return out.squeeze(2).squeeze(2)


# --- utils.py: the per-frame context ------------------------------------------------------
def get_audio_features(features, index):
    left, right = index - 8, index + 8
    pad_left = pad_right = 0
    if left < 0:
        pad_left, left = -left, 0
    if right > features.shape[0]:
        pad_right, right = right - features.shape[0], features.shape[0]
    auds = torch.from_numpy(features[left:right])
    if pad_left > 0:
        auds = torch.cat([torch.zeros_like(auds[:pad_left]), auds], dim=0)
    if pad_right > 0:
        auds = torch.cat([auds, torch.zeros_like(auds[:pad_right])], dim=0)
    return auds


# --- utils.py: audio and mel (librosa 0.10.1) ---------------------------------------------
def load_wav(path, sr):
    return librosa.core.load(path, sr=sr)[0]


def preemphasis(wav, k):
    return signal.lfilter([1, -k], [1], wav)


def _stft(y):
    return librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800)


def _build_mel_basis():
    return librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)


def _linear_to_mel(spectrogram):
    return np.dot(_build_mel_basis(), spectrogram)


def _amp_to_db(x):
    min_level = np.exp(-5 * np.log(10))
    return 20 * np.log10(np.maximum(min_level, x))


def _normalize(S):
    return np.clip((2 * 4.0) * ((S - -100) / (--100)) - 4.0, -4.0, 4.0)


def melspectrogram(wav):
    D = _stft(preemphasis(wav, 0.97))
    S = _amp_to_db(_linear_to_mel(np.abs(D))) - 20
    return _normalize(S)


class AudDataset:
    """upstream ``AudDataset``: note the full-mel ``.copy()`` for every item, as upstream does."""

    def __init__(self, wavpath):
        wav = load_wav(wavpath, 16000)
        self.orig_mel = melspectrogram(wav).T
        self.data_len = int((self.orig_mel.shape[0] - 16) / 80.0 * float(FPS)) + 2

    def crop_audio_window(self, spec, start_frame):
        start_idx = int(80.0 * (start_frame / float(FPS)))
        end_idx = start_idx + 16
        if end_idx > spec.shape[0]:
            end_idx = spec.shape[0]
            start_idx = end_idx - 16
        return spec[start_idx:end_idx, :]

    def __len__(self):
        return self.data_len

    def __getitem__(self, idx):
        mel = self.crop_audio_window(self.orig_mel.copy(), idx)
        if mel.shape[0] != 16:
            raise Exception("mel.shape[0] != 16")
        return torch.FloatTensor(mel.T).unsqueeze(0)


# --- inference_328.py ---------------------------------------------------------------------
def load_model(state_dict, device="cpu"):
    """``AudioEncoder().eval()`` with ``{"audio_encoder." + k: v}`` loaded, as inference_328.py."""
    model = AudioEncoder().to(device).eval()
    model.load_state_dict({f"audio_encoder.{k}": v for k, v in state_dict.items()})
    return model


def features(audio_path, model, device="cpu"):
    """Audio file → padded features (N + 2, 512) float32, the inference script's ``audio_feats``."""
    dataset = AudDataset(audio_path)
    data_loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=False)
    outputs = []
    for mel in data_loader:
        mel = mel.to(device)
        with torch.no_grad():
            out = model(mel)
        outputs.append(out)
    outputs = torch.cat(outputs, dim=0).cpu()
    first_frame, last_frame = outputs[:1], outputs[-1:]
    return torch.cat([first_frame.repeat(1, 1), outputs, last_frame.repeat(1, 1)], dim=0).numpy()


def frames(audio_feats, device="cpu"):
    """The inference loop's audio side: every frame's (1, 32, 16, 16) tensor, one at a time.

    As upstream: ``get_audio_features`` (a view inside, ``torch.cat`` with zeros at the edges),
    ``reshape``, ``[None]``, ``.to(device)`` (upstream calls ``.cuda()``; on CPU it is free, so
    the baseline pays no copy). Returns the count and a checksum so nothing is optimised away.
    """
    total = 0.0
    for i in range(audio_feats.shape[0]):
        audio_feat = get_audio_features(audio_feats, i).reshape(32, 16, 16)
        audio_feat = audio_feat[None].to(device)
        total += float(audio_feat[0, 0, 0, 0])
    return audio_feats.shape[0], total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="The upstream SyncTalk_2D audio front end, as a script.")
    parser.add_argument("audio")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("-o", "--output", required=True, help="where to np.save the padded features")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ckpt = torch.load(args.checkpoint, map_location=device)
    model = load_model(ckpt, device)
    audio_feats = features(args.audio, model, device)
    frames(audio_feats, device)
    np.save(args.output, audio_feats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
