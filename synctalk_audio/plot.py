"""Figures of the pipeline: waveform, mel spectrogram and encoder-feature heat-map.

Needs the ``plot`` extra (matplotlib). Figures are built with ``matplotlib.figure.Figure``
directly, never through ``pyplot``: no global backend is switched and nothing is kept open,
so the same call works in a notebook (the figure is displayed when returned) and in the CLI
(saved through the Agg canvas).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_file, check_file_target
from .audio import check_waveform, load_audio
from .config import SYNCTALK_2D, MelConfig
from .errors import ConfigError, OutputError, install_hint

__all__ = ["plot_features", "save_figure", "check_figure_path"]

_ENVELOPE_ABOVE = 20000  # samples; longer waveforms are drawn as a min/max envelope
_ENVELOPE_BINS = 4000


def _matplotlib_figure() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plotting needs matplotlib (the [plot] extra: " + install_hint("plot") + ")") from None
    return Figure


def check_figure_path(path: "str | os.PathLike", *, overwrite: bool = False) -> str:
    """Check that a figure can be saved at ``path``; return its format (the suffix).

    Raises
    ------
    OutputError
        ``path`` is a directory or lies under a file, its suffix is not an image format
        matplotlib writes, or it exists and is not empty without ``overwrite`` (never replaced:
        a device, FIFO or socket).
    """
    _matplotlib_figure()
    from matplotlib.backend_bases import FigureCanvasBase

    from ._io import check_path_type

    target = Path(check_path_type(path)).expanduser()
    try:
        is_dir = target.is_dir()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise OutputError(f"cannot use output path {target}: {' '.join(str(exc).split())}") from None
    if is_dir:
        raise OutputError(f"output path {target} is a directory; expected an image file name like fig.png")
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputError(f"output path {target} lies under the file {parent}")
    fmt = target.suffix.lower().lstrip(".")
    supported = FigureCanvasBase.get_supported_filetypes()
    if fmt not in supported:
        raise OutputError(f"cannot save a figure as {target.name!r}: use one of .{', .'.join(sorted(supported))}")
    check_file_target(target, overwrite=overwrite)
    return fmt


#: Accepted figure resolutions (dots per inch, inclusive).
DPI_RANGE = (10, 1200)


def check_dpi(dpi: Any) -> int:
    """Return ``dpi`` if it is a whole number in :data:`DPI_RANGE`, else raise :class:`ConfigError`."""
    import numbers

    if isinstance(dpi, bool) or not isinstance(dpi, numbers.Real) or not (DPI_RANGE[0] <= dpi <= DPI_RANGE[1]) \
            or dpi != int(dpi):
        raise ConfigError(f"dpi must be a whole number in [{DPI_RANGE[0]}, {DPI_RANGE[1]}], got {dpi!r}")
    return int(dpi)


#: Figure sizes accepted, inches per side (matplotlib refuses non-positive ones; 200 in at 120 dpi
#: is already a 24,000-pixel raster).
FIGSIZE_RANGE = (1.0, 200.0)


def _check_plot_options(figsize: Any, title: Any, note: Any, path: Any, overwrite: Any) -> tuple[float, float]:
    """The plot's own keywords checked before any work: one ConfigError line each."""
    import numbers

    from ._io import check_path_type
    from .config import check_flag

    lo, hi = FIGSIZE_RANGE
    if (not isinstance(figsize, (tuple, list)) or len(figsize) != 2
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and lo <= v <= hi for v in figsize)):
        raise ConfigError(f"figsize must be (width, height) in inches, each in [{lo:g}, {hi:g}], got {figsize!r}")
    for name, value in (("title", title), ("note", note)):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{name} must be a str or None, got {type(value).__name__}")
    if path is not None:
        check_path_type(path)
    check_flag("overwrite", overwrite)
    return float(figsize[0]), float(figsize[1])


def save_figure(fig: Any, path: "str | os.PathLike", *, dpi: int = 120, overwrite: bool = False) -> Path:
    """Save ``fig`` atomically (temp sibling file + rename); the format follows the suffix.

    An existing non-empty file is replaced only with ``overwrite=True``.

    Raises
    ------
    OutputError
        As :func:`check_figure_path`, or the write fails (no partial file is left).
    """
    dpi = check_dpi(dpi)
    fmt = check_figure_path(path, overwrite=overwrite)  # the path's type first, then the output rule
    target = Path(path).expanduser()
    with atomic_file(target, overwrite=overwrite) as fh:
        fig.savefig(fh, format=fmt, dpi=dpi)
    return target


def _waveform_panel(ax: Any, wav: np.ndarray, sr: int) -> None:
    n = wav.shape[0]
    if n > _ENVELOPE_ABOVE:
        edges = np.linspace(0, n, _ENVELOPE_BINS + 1).astype(np.int64)
        lo = np.minimum.reduceat(wav, edges[:-1])
        hi = np.maximum.reduceat(wav, edges[:-1])
        t = edges[:-1] / sr
        ax.fill_between(t, lo, hi, color="tab:blue", linewidth=0)
    else:
        ax.plot(np.arange(n) / sr, wav, color="tab:blue", linewidth=0.6)
    ax.set_ylabel("amplitude")
    ax.set_title(f"waveform ({n} samples at {sr} Hz)", fontsize=10, loc="left")
    peak = float(np.max(np.abs(wav))) if n else 1.0
    ax.set_ylim(-1.05 * max(peak, 1e-3), 1.05 * max(peak, 1e-3))


def plot_features(
    data: Any,
    *,
    audio: Any = None,
    checkpoint: Any = None,
    path: "str | os.PathLike | None" = None,
    title: str | None = None,
    note: str | None = None,
    mode: str = "ave",
    fps: float | None = None,
    context: str = "zeros",
    device: str = "auto",
    config: MelConfig = SYNCTALK_2D,
    figsize: tuple[float, float] = (11.0, 7.5),
    dpi: int = 120,
    overwrite: bool = False,
) -> Any:
    """Waveform, mel spectrogram and feature heat-map of one clip, on a shared time axis.

    Parameters
    ----------
    data : Features, path or ndarray (n,)
        A :class:`~synctalk_audio.pipeline.Features` (its waveform is read from ``audio``, or
        reloaded from ``metadata["source"]`` when that is a file), or audio (a file, or 16 kHz
        mono samples). For audio, the feature panel needs ``checkpoint``; without one the
        figure has the waveform and mel panels only.
    audio : path or ndarray, optional
        The waveform to draw with a Features.
    checkpoint : path, state dict or AudioEncoder, optional
        Encoder weights for audio input. The untrained seeded weights are detected and labelled.
    path : path, optional
        Also save the figure there (atomically; format from the suffix, e.g. .png, .svg, .pdf).
        An existing non-empty file there is replaced only with ``overwrite=True``.
    title, note : str, optional
        Figure title (default: file name, duration, frame counts) and an extra line under it.
    mode, fps, context, device, config
        Passed to :func:`~synctalk_audio.pipeline.pipeline` for audio input.

    Returns
    -------
    matplotlib.figure.Figure
        Axes: waveform (amplitude vs s), mel (band vs s, colour: normalised dB in [-4, 4]; ave
        only), features (dimension vs s, one column per window/video frame i at i/fps; hubert
        and wenet: each frame's rows flattened, (T′, 2048) / (K, 8192)).

    Examples
    --------
    >>> from synctalk_audio import pipeline, seeded_state_dict            # doctest: +SKIP
    >>> fig = plot_features(pipeline("talk.wav", checkpoint=seeded_state_dict()))  # doctest: +SKIP
    """
    from .config import check_context, check_fps, check_mode
    from .pipeline import Features, pipeline

    dpi = check_dpi(dpi)
    figsize = _check_plot_options(figsize, title, note, path, overwrite)
    check_mode(mode)
    check_context(context)
    if fps is not None:
        check_fps(fps)
    Figure = _matplotlib_figure()
    wav = None
    source = None
    features = None
    untrained = False
    if isinstance(data, Features):
        result = data
        mel, features, fps_used = result.mel, result.features, result.fps
        source = result.metadata.get("source")
        if audio is not None:
            wav = load_audio(audio, sr=config.sample_rate) if isinstance(audio, (str, os.PathLike)) else check_waveform(audio)
            expected = result.metadata.get("n_samples")
            if isinstance(expected, int) and abs(wav.shape[0] - expected) > config.hop_length:
                raise ConfigError(f"audio has {wav.shape[0]} samples but these features were computed from "
                                  f"{expected}: not the same clip")
        elif isinstance(source, str) and source != "<array>" and Path(source).is_file():
            wav = load_audio(source, sr=config.sample_rate)
    elif isinstance(data, (str, os.PathLike, np.ndarray)):
        if isinstance(data, np.ndarray):
            wav, source = check_waveform(data), "<array>"
        else:
            wav, source = load_audio(data, sr=config.sample_rate), str(data)
        if checkpoint is not None:
            from .dataset import weights_info
            from .engines import resolve_encoder

            encoder = resolve_encoder(checkpoint, mode=mode, device=device)
            untrained = bool(weights_info(encoder).get("untrained_seeded"))
            result = pipeline(wav, checkpoint=encoder, mode=mode, fps=fps, context=context, device=device,
                              config=config)
            mel, features, fps_used = result.mel, result.features, result.fps
        else:
            from .dsp import melspectrogram

            mel, fps_used = melspectrogram(wav, config), fps
    else:
        raise ConfigError(f"plot_features takes a Features, an audio path or an array, got {type(data).__name__}")

    sr, hop = config.sample_rate, config.hop_length
    fbank = features is not None and result.mode == "wenet" and mel is not None
    mel_hop_s = 0.010 if fbank else hop / sr  # Kaldi fbank: 160 samples at 16 kHz
    mel_t0 = -0.5 * mel_hop_s  # where the first column's cell starts (s)
    if fbank:  # fbank frame t covers the padded PCM [160·t, 160·t + 400): centre (160·t + 200 − PAD_BEFORE) / 16 kHz
        from .wenet import PAD_BEFORE

        mel_t0 = (200 - PAD_BEFORE) / 16000 - 0.5 * mel_hop_s
    n_frames = None
    if features is not None:
        n_frames = result.n_frames
        if features.ndim != 2:  # hubert (T', 2, 1024) / wenet (K, 16, 512): one flattened row per video frame
            features = result.padded
    panels = ["wave"] if wav is not None else []
    if mel is not None:  # ave's front end; hubert and wenet have none
        panels.append("mel")
    if features is not None:
        panels.append("features")
    ratios = {"wave": 1.0, "mel": 1.5, "features": 2.0}
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, height_ratios=[ratios[p] for p in panels], squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels):
        if panel == "wave":
            _waveform_panel(ax, wav, sr)
            if len(panels) > 1:  # an invisible colourbar keeps the time axes aligned with the images
                from matplotlib.cm import ScalarMappable

                spacer = fig.colorbar(ScalarMappable(), ax=ax, pad=0.01, label=" ")
                spacer.ax.set_visible(False)
        elif panel == "mel" and fbank:  # wenet: Kaldi fbank (F, 80), 10 ms hop, log energies
            img = ax.imshow(mel.T, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                            extent=(mel_t0, mel_t0 + mel.shape[0] * mel_hop_s, -0.5, mel.shape[1] - 0.5))
            ax.set_ylabel("mel band")
            ax.set_title(f"Kaldi fbank ({mel.shape[0]}, {mel.shape[1]}), {mel_hop_s * 1000:g} ms hop", fontsize=10,
                         loc="left")
            fig.colorbar(img, ax=ax, label="log energy", pad=0.01)
        elif panel == "mel":
            T = mel.shape[1]
            img = ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", vmin=-config.max_abs_value,
                            vmax=config.max_abs_value, interpolation="nearest",
                            extent=(-0.5 * hop / sr, (T - 0.5) * hop / sr, -0.5, mel.shape[0] - 0.5))
            ax.set_ylabel("mel band")
            ax.set_title(f"mel spectrogram ({mel.shape[0]}, {T}), {hop / sr * 1000:g} ms hop", fontsize=10, loc="left")
            fig.colorbar(img, ax=ax, label="normalised dB", pad=0.01)
        else:
            n = features.shape[0]
            img = ax.imshow(features.T, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest",
                            extent=(-0.5 / fps_used, (n - 0.5) / fps_used, -0.5, features.shape[1] - 0.5))
            ax.set_ylabel("feature dimension")
            what = "encoder features" if result.mode == "ave" else f"{result.mode} features, a flattened row per frame"
            label = f"{what} ({n}, {features.shape[1]}): frame i at i / {fps_used:g} s"
            if untrained:
                label += " — UNTRAINED seeded weights" if result.mode == "ave" else " — UNTRAINED stand-in weights"
            ax.set_title(label, fontsize=10, loc="left")
            fig.colorbar(img, ax=ax, label="activation", pad=0.01)
    n_cols = (mel.shape[0] if fbank else mel.shape[1]) if mel is not None else 0
    spans = [(mel_t0, mel_t0 + n_cols * mel_hop_s)] if mel is not None else []
    if wav is not None:
        spans.append((0.0, wav.shape[0] / sr))
    if features is not None:
        spans.append((-0.5 / fps_used, (features.shape[0] - 0.5) / fps_used))
    axes[-1].set_xlim(min(a for a, _ in spans), max(b for _, b in spans))
    axes[-1].set_xlabel("time (s)")
    if title is None:
        name = Path(source).name if isinstance(source, str) and source != "<array>" else "audio array"
        duration = ((wav.shape[0] / sr) if wav is not None else (n_cols - 1) * mel_hop_s if mel is not None
                    else n_frames / fps_used)
        title = f"{name}: {duration:.2f} s"
        if features is not None and result.mode == "ave":
            title += f", {features.shape[0]} windows → {n_frames} video frames (ave, {fps_used:g} fps)"
        elif features is not None:
            title += f", {n_frames} video frames ({result.mode}, {fps_used:g} fps)"
    if untrained and note is None:
        real = {"hubert": "a real HuBERT model", "wenet": "the real wenet encoder.onnx"}
        note = (f"UNTRAINED stand-in {result.mode} weights: not {real[result.mode]}" if result.mode in real else
                "UNTRAINED seeded weights (seeded_state_dict(0)): not the real audio_visual_encoder.pth")
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=11)
    if path is not None:
        save_figure(fig, path, dpi=dpi, overwrite=overwrite)
    return fig
