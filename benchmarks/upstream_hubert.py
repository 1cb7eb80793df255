"""The upstream hubert recipe, a baseline of ``bench.py``: SyncTalk's ``data_utils/hubert.py``
(the same code runs in Ultralight-Digital-Human), statement by statement.

``soundfile.read`` (float64) → ``librosa.resample(..., target_sr=16000)`` (a no-op at 16 kHz)
→ channel 0 → ``Wav2Vec2FeatureExtractor`` over the whole file (``do_normalize``) → one
``HubertModel.forward(...).last_hidden_state`` per 20 s chunk (320,080 samples, the next one
starting 320,000 later), the remainder too when it has >= 400 samples → concatenated, padded
or trimmed to ``expected_T`` rows → a last odd row dropped, reshaped to (-1, 2, 1024): the
``aud_hu.npy`` the training code reads.

Upstream calls ``Wav2Vec2Processor.from_pretrained("facebook/hubert-large-ls960-ft")``; for
audio that is its feature extractor, built here with that model's ``preprocessor_config.json``
values (no download). The model is given in-process (``bench.py`` passes the same weights to
both sides). It never imports ``synctalk_audio``.
"""

from __future__ import annotations

import warnings

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from transformers import Wav2Vec2FeatureExtractor  # noqa: E402


def make_processor() -> Wav2Vec2FeatureExtractor:
    """facebook/hubert-large-ls960-ft's preprocessor_config.json, without the hub."""
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                    return_attention_mask=True)


def read_16k(wav_name):
    """``sf.read`` then ``librosa.resample`` to 16 kHz, channel 0 (upstream's main block).

    Upstream resamples the 2-D array of a stereo file, which fails unless the file is already
    at 16 kHz; channel 0 is taken first here in that case (what upstream means).
    """
    speech, sr = sf.read(wav_name)
    if speech.ndim == 2 and sr != 16000:
        speech = speech[:, 0]
    return librosa.resample(speech, orig_sr=sr, target_sr=16000)


@torch.no_grad()
def get_hubert_from_16k_speech(speech, processor, hubert_model, device="cpu"):
    """Upstream's function (its ``device="cuda:0"`` default is the caller's choice here)."""
    hubert_model = hubert_model.to(device)
    if speech.ndim == 2:
        speech = speech[:, 0]
    input_values_all = processor(speech, return_tensors="pt", sampling_rate=16000).input_values
    input_values_all = input_values_all.to(device)
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


def make_even_first_dim(tensor):
    size = list(tensor.size())
    if size[0] % 2 == 1:
        size[0] -= 1
        return tensor[:size[0]]
    return tensor


def aud_hu(wav_name, processor, hubert_model, device="cpu"):
    """Audio file → ``aud_hu.npy`` contents, float32 (T', 2, 1024)."""
    speech_16k = read_16k(wav_name)
    hubert_hidden = get_hubert_from_16k_speech(speech_16k, processor, hubert_model, device)
    hubert_hidden = make_even_first_dim(hubert_hidden).reshape(-1, 2, 1024)
    return hubert_hidden.detach().numpy().astype(np.float32, copy=False)
