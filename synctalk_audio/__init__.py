"""synctalk-audio: exact, fast audio features for SyncTalk_2D / Ultralight-Digital-Human.

ave:    load_audio → melspectrogram (preemphasis, stft, mel_basis, amp_to_db, normalize)
        → window → encode_batch → pad_context ─┐
hubert: load_channel → hubert_features ─────────┤
wenet:  load_channel → wenet_features ──────────┤→ context_windows(radius) → reshape_for_mode

Every encoder sits behind one seam (:func:`resolve_encoder`). Importing the package does not
import torch; the PyTorch names load it on first use, and ``.onnx`` encoders run in onnxruntime
without it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

from .audio import load_audio, load_channel, resample, to_mono
from .config import CONTEXT_MODES, MODE_FPS, MODES, PRESETS, RADII, SYNCTALK_2D, WAV2LIP, MelConfig, mode_shape
from .context import context_window, context_windows, frames_for_mode, pad_context, reshape_for_mode
from .dsp import amp_to_db, linear_to_mel, mel_basis, mel_init, mel_step, melspectrogram, normalize, preemphasis, stft
from .engines import PRECISIONS, encode_batch, resolve_encoder, run_engine
from .errors import (
    AudioError,
    CheckpointError,
    ConfigError,
    OutputError,
    ShapeError,
    StreamError,
    SyncTalkAudioError,
)
from .frames import MelWindows, frame_count, window, window_starts
from .pipeline import AudioPipeline, Features, pipeline

# Names served lazily (module, attribute): they import torch or optional extras.
_LAZY = {
    "AudioEncoder": "encoder",
    "load_encoder": "encoder",
    "seeded_state_dict": "seeded",
    "fold_batchnorm": "encoder",
    "prepare_encoder": "torch_engines",
    "load_onnx_encoder": "runtime",
    "OnnxEncoder": "runtime",
    "export_onnx": "export",
    "export_torchscript": "export",
    "export_coreml": "export",
    "export_all": "export",
    "write_reference": "dataset",
    "read_reference": "dataset",
    "validate": "dataset",
    "write_features": "dataset",
    "ValidationReport": "dataset",
    "plot_features": "plot",
    "StreamingPipeline": "stream",
    "StreamPool": "stream",
    "PoolError": "stream",
    "latency_for": "stream",
    "Latency": "stream",
    "hubert_features": "hubert",
    "load_hubert_engine": "hubert",
    "write_standin_hubert": "hubert",
    "wenet_features": "wenet",
    "load_wenet_engine": "wenet",
    "write_standin_wenet_onnx": "wenet",
    "fbank": "kaldi_fbank",
    "extract_dataset": "jobs",
}

__all__ = [
    "__version__",
    "load_audio", "load_channel", "resample", "to_mono",
    "MelConfig", "SYNCTALK_2D", "WAV2LIP", "PRESETS", "MODES", "MODE_FPS", "CONTEXT_MODES", "RADII",
    "mode_shape",
    "preemphasis", "stft", "mel_basis", "linear_to_mel", "amp_to_db", "normalize", "melspectrogram",
    "mel_init", "mel_step",
    "frame_count", "window_starts", "window", "MelWindows",
    "resolve_encoder", "encode_batch", "run_engine", "PRECISIONS",
    "pad_context", "context_windows", "context_window", "reshape_for_mode", "frames_for_mode",
    "pipeline", "Features", "AudioPipeline",
    "SyncTalkAudioError", "AudioError", "CheckpointError", "ConfigError", "ShapeError", "OutputError",
    "StreamError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'synctalk_audio' has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)
