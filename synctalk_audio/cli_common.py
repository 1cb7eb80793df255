"""What the ``synctalk-audio`` subcommands share.

The ``--checkpoint`` and ``--force`` arguments, :func:`load_weights` (``--checkpoint`` →
engine through the one encoder seam), the pipeline run with the command's options, and the
output: text lines (``_say``), JSON (``_emit_json``), the UNTRAINED warning, summaries of
written directories, and ``_one_line`` for error messages. The commands are in
:mod:`synctalk_audio.cli_commands`, the table, parser and entry point in
:mod:`synctalk_audio.cli`. Standard library only at import time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

PROG = "synctalk-audio"
DEMO_AUDIO = Path(__file__).resolve().parent / "data" / "demo_speech.wav"
SEEDED = "seeded"


def _add_force(parser: argparse.ArgumentParser, what: str, *, file: bool = False, rule: "str | None" = None) -> None:
    rule = rule or ("a regular file there (never the command's input, a directory or a device)" if file else
                    "only an earlier synctalk-audio output holding nothing else (never a file you put there)")
    parser.add_argument("--force", action="store_true", help=f"replace {what} if it exists: {rule}")


def _add_checkpoint(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--checkpoint", "-c", required=required, metavar="CKPT",
        help="encoder weights: audio_visual_encoder.pth (with or without the 'audio_encoder.' prefix); an "
             ".onnx from 'export --format onnx' (runs in onnxruntime, never imports torch: fastest start); or "
             "'seeded' for the deterministic UNTRAINED seeded_state_dict(0) weights (tests/demos only)")


def load_weights(spec: str, device: str = "auto", *, threads: "int | None" = None, mode: str = "ave",
                 precision: "str | None" = None) -> tuple[Any, dict[str, Any]]:
    """``--checkpoint`` value → (engine, weights_info dict), through the one encoder seam.

    ave: ``"seeded"`` (UNTRAINED seeded_state_dict(0)), a ``.pth``, or an ``.onnx`` (onnxruntime;
    torch is not imported); hubert: a HuggingFace HuBERT directory; wenet: ``encoder.onnx``.
    """
    import warnings

    from .dataset import weights_info
    from .engines import resolve_encoder

    if mode == "hubert":
        _quiet_transformers()
    with warnings.catch_warnings():  # the CLI prints its own UNTRAINED warning line
        warnings.simplefilter("ignore", UserWarning)
        engine = resolve_encoder(spec, mode=mode, precision=precision, device=device, threads=threads)
    return engine, weights_info(engine)


def _quiet_transformers() -> None:
    """No progress bars or retry chatter from transformers / huggingface_hub on the CLI's stderr
    (process-wide settings: fine for the CLI's own process; errors still come as one line)."""
    try:
        import huggingface_hub.utils as hub_utils
        from transformers.utils import logging as tf_logging
    except ImportError:  # the hubert engine names the missing extra
        return
    tf_logging.set_verbosity_error()
    tf_logging.disable_progress_bar()
    hub_utils.disable_progress_bars()
    import logging

    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars only for an interactive stderr and without --quiet/--json."""
    return not args.quiet and not args.json and sys.stderr.isatty()


def _say(args: argparse.Namespace, text: str = "") -> None:
    if not args.quiet and not args.json:
        print(text)


def _warn_untrained(args: argparse.Namespace, weights: dict[str, Any]) -> None:
    if weights.get("untrained_seeded") and not args.quiet:
        print(f"{PROG}: warning: {_untrained_what(weights)}; the features are not those of a trained model",
              file=sys.stderr)


def _untrained_what(weights: dict[str, Any]) -> str:
    """Which UNTRAINED stand-in the weights are: ave's seeded_state_dict(0) or a hubert/wenet stand-in."""
    checkpoint = str(weights.get("checkpoint", ""))
    if weights.get("state_dict_sha256") or checkpoint == SEEDED or checkpoint.endswith(".pth"):
        return "UNTRAINED seeded weights (seeded_state_dict(0))"
    return f"UNTRAINED stand-in model ({weights.get('checkpoint') or weights.get('source') or 'in memory'})"


def _emit_json(obj: Any) -> None:
    from ._io import jsonable

    print(json.dumps(jsonable(obj), indent=2, allow_nan=False))


def _run_pipeline(args: argparse.Namespace, audio: Any, encoder: Any) -> Any:
    from .pipeline import pipeline

    return pipeline(audio, checkpoint=encoder, mode=args.mode, fps=args.fps, precision=args.precision,
                    device=args.device, context=args.context, radius=getattr(args, "radius", 8),
                    batch_size=args.batch_size, progress=_progress(args))


def _counts(meta: dict[str, Any]) -> str:
    """"N windows, N+2 frames (N+2)" for ave; "M frames" for hubert/wenet (one row per frame)."""
    if meta.get("n_windows") is None:
        return f"{meta['n_frames']} frames"
    return f"{meta['n_windows']} windows, {meta['n_frames']} frames (N+2)"


def _shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _describe_outputs(out: Path, meta: dict[str, Any]) -> list[str]:
    shapes = meta["shapes"]
    kind = meta["dataset"]["kind"]
    if meta.get("mode", "ave") != "ave":  # hubert/wenet: the upstream file (+ fbank), frames as written
        names = sorted(n for n in meta.get("sha256", {}) if not n.startswith("frames/"))

        def shape_of(name: str) -> list:
            if name == "audio_frames.npy":  # every frame, (M, *frame_reshaped)
                return [meta["n_frames"], *shapes["frame_reshaped"]]
            return shapes.get("fbank" if name == "fbank.npy" else "audio_features_raw", [])

        lines = [f"  {name}  float32  {_shape(shape_of(name))}" for name in names]
        if kind == "reference":
            n = meta["n_frames"]
            lines += [f"  frames/frame_XXXXX_window.npy   ×{n}  float32  {_shape(shapes['frame_window'])}",
                      f"  frames/frame_XXXXX_reshaped.npy ×{n}  float32  {_shape(shapes['frame_reshaped'])}"]
        return lines + ["  metadata.json" + (", summary.json, VALIDATION_INSTRUCTIONS.json" if kind == "reference" else "")]
    rows = [("mel_spectrogram.npy", "float64", shapes["mel_spectrogram"])]
    if kind != "features":
        rows.append(("mel_windows.npy", "float32", shapes["mel_windows"]))
    rows += [("audio_features_raw.npy", "float32", shapes["audio_features_raw"]),
             ("audio_features_padded.npy", "float32", shapes["audio_features_padded"])]
    n = meta["n_frames"]
    if kind == "features" and "audio_frames.npy" in meta["sha256"]:
        rows.append(("audio_frames.npy", "float32", [n, *shapes["frame_reshaped"]]))
    elif kind == "reference":
        rows.append((f"frames/frame_XXXXX_window.npy   ×{n}", "float32", shapes["frame_window"]))
        rows.append((f"frames/frame_XXXXX_reshaped.npy ×{n}", "float32", shapes["frame_reshaped"]))
    width = max(len(r[0]) for r in rows)
    lines = [f"  {name.ljust(width)}  {dtype}  {_shape(shape)}" for name, dtype, shape in rows]
    extra = ["metadata.json"] + (["summary.json", "VALIDATION_INSTRUCTIONS.json"] if kind == "reference" else [])
    lines.append(f"  {', '.join(extra)}")
    return lines


def _weights_line(weights: dict[str, Any]) -> str:
    if weights.get("untrained_seeded"):
        return f"weights: {_untrained_what(weights)} — NOT a trained model"
    where = weights.get("checkpoint", "in-memory state dict")
    return f"weights: {where} (state_dict sha256 {str(weights.get('state_dict_sha256'))[:16]}…)"


def _summary(out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "output": str(out),
        "kind": meta["dataset"]["kind"],
        "source": meta.get("source"),
        "duration_s": meta.get("duration_s"),
        "mode": meta["mode"],
        "fps": meta["fps"],
        "context": meta["context"],
        "precision": meta.get("precision"),
        "n_mel_frames": meta.get("n_mel_frames"),
        "n_windows": meta.get("n_windows"),
        "n_frames": meta["n_frames"],
        "shapes": meta["shapes"],
        "n_npy_files": len(meta["sha256"]),
        "weights": meta["weights"],
    }



def one_line_text(text: str) -> str:
    """``text`` on one printable line: whitespace runs (every Unicode line break included) folded
    to one space, other control characters escaped (``\\x1e``)."""
    folded = " ".join(text.split())
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in folded)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    return one_line_text(text) or type(exc).__name__

