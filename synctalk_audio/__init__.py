"""synctalk-audio: exact, fast audio features for SyncTalk_2D / Ultralight-Digital-Human.

audio → load_audio → melspectrogram (preemphasis, stft, mel_basis, amp_to_db, normalize)
→ window → encode_batch → pad_context → context_windows → reshape_for_mode.

Importing the package does not import torch; the encoder names load it on first use, and an
exported ``.onnx`` encoder (``load_onnx_encoder``) runs in onnxruntime without it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

from .audio import load_audio, resample, to_mono
from .config import CONTEXT_MODES, MODE_FPS, MODES, PRESETS, SYNCTALK_2D, WAV2LIP, FrameConfig, MelConfig, mode_shape
from .context import context_window, context_windows, frames_for_mode, pad_context, reshape_for_mode
from .dsp import amp_to_db, linear_to_mel, mel_basis, melspectrogram, normalize, preemphasis, stft
from .errors import (
    AudioError,
    CheckpointError,
    ConfigError,
    OutputError,
    ShapeError,
    StreamError,
    SyncTalkAudioError,
)
from .frames import frame_count, window, window_starts
from .pipeline import AudioPipeline, Features, pipeline

# Names served lazily (module, attribute): they import torch or optional extras.
_LAZY = {
    "AudioEncoder": "encoder",
    "load_encoder": "encoder",
    "encode_batch": "encoder",
    "seeded_state_dict": "encoder",
    "fold_batchnorm": "encoder",
    "prepare_encoder": "encoder",
    "encode_windows": "encoder",
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
}

__all__ = [
    "__version__",
    "load_audio", "resample", "to_mono",
    "MelConfig", "FrameConfig", "SYNCTALK_2D", "WAV2LIP", "PRESETS", "MODES", "MODE_FPS", "CONTEXT_MODES",
    "mode_shape",
    "preemphasis", "stft", "mel_basis", "linear_to_mel", "amp_to_db", "normalize", "melspectrogram",
    "frame_count", "window_starts", "window",
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
