"""Exception family of the library.

Every error the library raises on bad input is a :class:`SyncTalkAudioError`, which is a
``ValueError``; each family has its own subclass. Messages name the offending value and what
was expected, on one line.
"""

from __future__ import annotations

__all__ = [
    "SyncTalkAudioError",
    "AudioError",
    "CheckpointError",
    "ConfigError",
    "ShapeError",
    "OutputError",
    "StreamError",
    "install_hint",
]


class SyncTalkAudioError(ValueError):
    """Base class of every error raised by synctalk_audio on bad input."""


class AudioError(SyncTalkAudioError):
    """Audio that cannot be read or used: missing, empty, undecodable, non-finite, too short."""


class CheckpointError(SyncTalkAudioError):
    """An encoder checkpoint that cannot be loaded: missing, not a state dict, wrong keys/shapes."""


class ConfigError(SyncTalkAudioError):
    """An invalid configuration value: unknown mode, fps <= 0, bad preset parameter."""


class ShapeError(SyncTalkAudioError):
    """An array whose shape, dtype or values do not fit the stage it is given to."""


class OutputError(SyncTalkAudioError):
    """An output location that cannot be written: a file in the way, no permission, disk full."""


class StreamError(SyncTalkAudioError):
    """Misuse of a streaming pipeline, e.g. pushing after flush."""


def install_hint(extra: str) -> str:
    """How to add an optional extra to an install from a clone (the package is on no index)."""
    return f"pip install -e '.[{extra}]' in a clone of synctalk-audio"
