"""Measuring a stream (:func:`run_stream`, :class:`StreamReport`) and saving its frames
(:func:`save_frames`): what ``synctalk-audio stream`` and the streaming benchmarks use.
"""

from __future__ import annotations

import numbers
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._io import check_names_a_file, check_parent_folder, save_npy
from .errors import ConfigError, OutputError

if TYPE_CHECKING:
    from .stream import Latency, StreamingPipeline

__all__ = ["StreamReport", "run_stream", "save_frames", "check_frames_path"]


def _stats(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"median": 0.0, "p95": 0.0, "max": 0.0, "mean": 0.0}
    return {"median": float(np.median(v)), "p95": float(np.percentile(v, 95)), "max": float(v.max()),
            "mean": float(v.mean())}


@dataclass(frozen=True)
class StreamReport:
    """Timings of one audio stream through a :class:`StreamingPipeline` (see :func:`run_stream`).

    Attributes
    ----------
    n_samples, sample_rate, chunk_samples : int
    fps : float
    latency : Latency
        The algorithmic latency.
    n_frames : int
        Frames in all (N + 2); ``n_tail`` of them came from ``flush()``.
    n_tail : int
    chunk_wall_ms, chunk_cpu_ms : ndarray (pushes,)
        Wall-clock and process CPU time (all threads) of every ``push``.
    frame_compute_ms : ndarray (n_frames - n_tail,)
        Per streamed frame: wall time of the push that returned it / frames it returned.
    frame_lag_ms : ndarray (n_frames - n_tail,)
        Per streamed frame: audio received when it was returned, past its own time
        ``j / fps`` (the algorithmic latency plus chunking), in ms of audio.
    frame_ready_ms : ndarray (n_frames - n_tail,)
        ``frame_lag_ms`` + wall time of the push that returned it: how far behind a live input
        the frame is available.
    flush_wall_ms : float
    total_cpu_s, total_wall_s : float
        Over all pushes and the flush.
    """

    n_samples: int
    sample_rate: int
    chunk_samples: int
    fps: float
    latency: Latency
    n_frames: int
    n_tail: int
    chunk_wall_ms: np.ndarray
    chunk_cpu_ms: np.ndarray
    frame_compute_ms: np.ndarray
    frame_lag_ms: np.ndarray
    frame_ready_ms: np.ndarray
    flush_wall_ms: float
    total_cpu_s: float
    total_wall_s: float

    @property
    def cpu_ms_per_frame(self) -> float:
        """Process CPU time per output video frame (all pushes and the flush)."""
        return 1000.0 * self.total_cpu_s / max(self.n_frames, 1)

    @property
    def wall_ms_per_frame(self) -> float:
        """Wall-clock time per output video frame."""
        return 1000.0 * self.total_wall_s / max(self.n_frames, 1)

    @property
    def real_time_factor(self) -> float:
        """Compute wall time / audio duration (< 1: faster than real time)."""
        return self.total_wall_s / max(self.n_samples / self.sample_rate, 1e-12)

    def summary(self) -> dict[str, Any]:
        """JSON-ready dict: latency, totals and median/p95/max/mean of every per-chunk/frame series."""
        return {
            "audio_s": self.n_samples / self.sample_rate,
            "chunk_ms": 1000.0 * self.chunk_samples / self.sample_rate,
            "fps": self.fps,
            "n_chunks": int(self.chunk_wall_ms.shape[0]),
            "n_frames": self.n_frames,
            "n_frames_at_flush": self.n_tail,
            "algorithmic_latency": {"samples": self.latency.samples, "ms": self.latency.ms,
                                    "context_samples": self.latency.context_samples,
                                    "window_samples": self.latency.window_samples,
                                    "stft_samples": self.latency.stft_samples},
            "cpu_ms_per_frame": self.cpu_ms_per_frame,
            "wall_ms_per_frame": self.wall_ms_per_frame,
            "real_time_factor": self.real_time_factor,
            "chunk_wall_ms": _stats(self.chunk_wall_ms),
            "chunk_cpu_ms": _stats(self.chunk_cpu_ms),
            "frame_compute_ms": _stats(self.frame_compute_ms),
            "frame_lag_ms": _stats(self.frame_lag_ms),
            "frame_ready_ms": _stats(self.frame_ready_ms),
            "flush_wall_ms": self.flush_wall_ms,
        }


def run_stream(stream: StreamingPipeline, wav: np.ndarray, chunk_samples: int, *,
               keep_frames: bool = True) -> "tuple[np.ndarray | None, StreamReport]":
    """Feed ``wav`` to ``stream`` in chunks of ``chunk_samples``, flush, and time every call.

    ``stream`` is reset first. The chunks are views of ``wav``; timings are only the
    ``push``/``flush`` calls.

    Parameters
    ----------
    stream : StreamingPipeline
    wav : ndarray, float32, shape (n,)
    chunk_samples : int
        Samples per push (320 = 20 ms at 16 kHz).
    keep_frames : bool
        Return the concatenated frames (else None; saves memory on long inputs).

    Returns
    -------
    frames : ndarray float32 (N + 2, *frame_shape) or None
    report : StreamReport
    """
    if isinstance(chunk_samples, bool) or not isinstance(chunk_samples, numbers.Integral) or chunk_samples <= 0:
        raise ConfigError(f"chunk_samples must be a positive integer, got {chunk_samples!r}")
    from .audio import check_waveform

    wav = check_waveform(wav)
    stream.reset()
    sr = stream.config.sample_rate
    step = sr / float(stream.fps)  # samples per video frame
    kept: list[np.ndarray] = []
    walls, cpus, f_compute, f_lag, f_ready = [], [], [], [], []
    n_out = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for lo in range(0, wav.shape[0], int(chunk_samples)):
        chunk = wav[lo:lo + int(chunk_samples)]
        t, c = time.perf_counter(), time.process_time()
        frames = stream.push(chunk)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        walls.append(dt)
        cpus.append(dc)
        k = frames.shape[0]
        if k:
            received = lo + chunk.shape[0]
            for j in range(n_out, n_out + k):
                lag = 1000.0 * (received - j * step) / sr
                f_lag.append(lag)
                f_compute.append(1000.0 * dt / k)
                f_ready.append(lag + 1000.0 * dt)
            n_out += k
            if keep_frames:
                kept.append(frames)
    t = time.perf_counter()
    tail = stream.flush()
    flush_wall = time.perf_counter() - t
    total_wall, total_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if keep_frames:
        kept.append(tail)
    report = StreamReport(
        n_samples=int(wav.shape[0]), sample_rate=sr, chunk_samples=int(chunk_samples), fps=stream.fps,
        latency=stream.latency, n_frames=n_out + tail.shape[0], n_tail=int(tail.shape[0]),
        chunk_wall_ms=1000.0 * np.asarray(walls), chunk_cpu_ms=1000.0 * np.asarray(cpus),
        frame_compute_ms=np.asarray(f_compute), frame_lag_ms=np.asarray(f_lag), frame_ready_ms=np.asarray(f_ready),
        flush_wall_ms=1000.0 * flush_wall, total_cpu_s=total_cpu, total_wall_s=total_wall,
    )
    return (np.concatenate(kept) if keep_frames else None), report


def check_frames_path(path: "str | os.PathLike") -> Path:
    """Check that ``path`` can take a frames ``.npy`` (parent folder exists, not a directory)."""
    check_names_a_file(path)
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"output {p} is a directory, expected a .npy file path")
    check_parent_folder(p)
    return p


def save_frames(frames: np.ndarray, path: "str | os.PathLike", *, overwrite: bool = False) -> Path:
    """Write ``frames`` to ``path`` as .npy, atomically (temp sibling + rename).

    The file is written at exactly ``path`` (no ``.npy`` is appended). An existing non-empty
    file is replaced only with ``overwrite=True``; a directory, device, FIFO or socket never.

    Raises
    ------
    OutputError
        The folder is missing or not writable, ``path`` is not a regular file, exists without
        ``overwrite``, or the disk is full; nothing is left behind.
    """
    p = check_frames_path(path)
    save_npy(p, frames, overwrite=overwrite)
    return p
