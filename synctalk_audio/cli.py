"""The ``synctalk-audio`` command line.

Subcommands are rows of :data:`COMMANDS`: a name, a help line, an example, a function that adds
the subcommand's own arguments and a function that runs it (``run(args) -> exit code``).
To add one (e.g. ``stream`` or ``export``), write ``_add_stream(parser)`` and
``_run_stream(args)`` in :mod:`synctalk_audio.cli_commands` and append ``Command("stream", ...)``
to :data:`COMMANDS`; set ``pipeline_options=True`` to get ``--mode --fps --device --precision
--context --batch-size`` and use :func:`load_weights` (:mod:`synctalk_audio.cli_common`, with
the other helpers the commands share) for ``--checkpoint``. ``--json --quiet --debug`` come
with every subcommand.

This module holds the table, the parser and the entry point (:func:`main`, :func:`entry`).

Exit codes: 0 success, 1 validation failed, 2 error (one ``synctalk-audio: error: …`` line on
stderr, no traceback unless ``--debug``), 130 interrupted.

Imports stay lazy: torch, matplotlib and tqdm are imported inside the commands that use them,
so ``synctalk-audio validate`` never loads torch and ``--help`` starts instantly.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from . import __version__
from .cli_common import DEMO_AUDIO, PROG, SEEDED, _one_line, load_weights, one_line_text  # noqa: F401  (SEEDED: cli.SEEDED)
from .cli_commands import (_add_dataset, _add_demo, _add_export, _add_features, _add_frames, _add_plot, _add_reference,
                           _add_stream, _add_validate, _run_dataset, _run_demo, _run_export, _run_features, _run_frames,
                           _run_plot, _run_reference, _run_stream, _run_validate)
from .errors import SyncTalkAudioError

__all__ = ["Command", "COMMANDS", "build_parser", "main", "load_weights", "DEMO_AUDIO"]


@dataclass(frozen=True)
class Command:
    """One subcommand: ``add_arguments(parser)`` declares its arguments, ``run(args)`` runs it."""

    name: str
    help: str
    example: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    pipeline_options: bool = False


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one stderr line and exit code 2."""

    def error(self, message: str) -> "None":  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line_text(message)} (see {self.prog} --help)\n")


_Formatter = argparse.RawDescriptionHelpFormatter



def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    return int(value) if value.is_integer() else value


def add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    """``--mode --fps --device --precision --context --batch-size``."""
    from .config import CONTEXT_MODES, MODES, RADII
    from .engines import PRECISIONS

    g = parser.add_argument_group("pipeline options")
    g.add_argument("--mode", default="ave", choices=list(MODES),
                   help="front end: 'ave' (conv encoder, --checkpoint audio_visual_encoder.pth), 'hubert' "
                        "(--checkpoint a HuggingFace HuBERT directory), 'wenet' (--checkpoint encoder.onnx) "
                        "(default: ave)")
    g.add_argument("--radius", type=int, default=8, choices=list(RADII),
                   help="context rows each side of a frame: 8 (SyncTalk_2D, the seed) or 4 (Ultralight since "
                        "mid-2025, LiveTalking) (default: 8)")
    g.add_argument("--fps", type=_number, default=None,
                   help="video frame rate (default: the mode's: 25 for ave/hubert, 20 for wenet; fixed for "
                        "hubert/wenet)")
    g.add_argument("--device", default="auto", help="'auto' (CUDA when available; the default), 'cpu', 'cuda', 'cuda:1', …")
    g.add_argument("--precision", default=None, choices=list(PRECISIONS),
                   help="'exact' (the default for a .pth) reproduces the upstream recipe bit for bit; 'fast' "
                        "bfloat16/float16 (<= 2%% of max|features|); 'onnx' (the default and only choice for an "
                        ".onnx checkpoint) float32 in onnxruntime without torch (<= 5e-6 of max|features|)")
    g.add_argument("--context", default="zeros", choices=list(CONTEXT_MODES),
                   help="rows outside the padded features: 'zeros' (upstream, default) or 'edge' repeats")
    g.add_argument("--batch-size", type=int, default=None,
                   help="encoder windows per forward pass (default: the device's best, 32 per CPU thread)")


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("output options")
    g.add_argument("--json", action="store_true", help="print a JSON summary/report on stdout instead of text")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no text output (errors still go to stderr)")
    g.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")


# --------------------------------------------------------------------------- table and parser


COMMANDS: tuple[Command, ...] = (
    Command("features", "audio → mel, features and padded features (.npy; frames with --frames) + metadata.json",
            "synctalk-audio features talk.wav --checkpoint audio_visual_encoder.pth -o talk_features/\n"
            "  synctalk-audio features clips/*.wav --checkpoint encoder.onnx -o features/   # features/<name>/ each",
            _add_features, _run_features, pipeline_options=True),
    Command("reference", "write the full reference dataset for ports (per-frame files, validation instructions)",
            "synctalk-audio reference talk.wav --checkpoint audio_visual_encoder.pth -o reference/",
            _add_reference, _run_reference, pipeline_options=True),
    Command("frames", "precomputed hubert/wenet (or ave) features → per-frame U-Net tensors (.npy)",
            "synctalk-audio frames aud_hu.npy --mode hubert -o hubert_frames.npy",
            _add_frames, _run_frames),
    Command("validate", "compare a port's .npy outputs with a reference dataset (exit 1 on failure)",
            "synctalk-audio validate reference/ my_port_output/ --json > report.json",
            _add_validate, _run_validate),
    Command("plot", "figure of the waveform, mel spectrogram and feature heat-map",
            "synctalk-audio plot talk.wav --checkpoint audio_visual_encoder.pth -o talk.png",
            _add_plot, _run_plot, pipeline_options=True),
    Command("demo", "run everything on the bundled clip with UNTRAINED seeded weights",
            "synctalk-audio demo -o demo_output",
            _add_demo, _run_demo, pipeline_options=True),
    Command("export", "export the encoder to ONNX, TorchScript and CoreML, each verified against PyTorch",
            "synctalk-audio export --checkpoint audio_visual_encoder.pth --format all -o exported/",
            _add_export, _run_export),
    Command("stream", "stream a file through StreamingPipeline in chunks; print latency and compute time per frame",
            "synctalk-audio stream talk.wav --checkpoint audio_visual_encoder.pth --chunk-ms 20",
            _add_stream, _run_stream, pipeline_options=True),
    Command("dataset", "a folder or manifest of audio → OUT/<path>/ features each; resumable, failures recorded",
            "synctalk-audio dataset clips/ -o features/ --checkpoint audio_visual_encoder.pth --workers 2",
            _add_dataset, _run_dataset, pipeline_options=True),
)


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    """The argparse parser with one subparser per :class:`Command`."""
    examples = "\n".join(f"  {c.example}" for c in commands)
    parser = _Parser(
        prog=PROG,
        description="Exact SyncTalk_2D audio features: audio → mel → encoder → per-frame U-Net tensors.",
        epilog=f"examples:\n{examples}\n\n'--checkpoint seeded' uses untrained seeded weights (tests, demos).\n"
               "exit codes: 0 ok, 1 validation failed, 2 error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cmd in commands:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help,
                           epilog=f"example:\n  {cmd.example}", formatter_class=_Formatter)
        cmd.add_arguments(p)
        if cmd.pipeline_options:
            add_pipeline_options(p)
        _add_common_options(p)
        p.set_defaults(_run=cmd.run)
    return parser


def _warning_line(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    """``warnings.showwarning`` for the CLI: ``synctalk-audio: warning: …`` on one line."""
    print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``synctalk-audio`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            if not args.debug:  # a library warning is one line, like an error (--debug: Python's own form)
                warnings.showwarning = _warning_line
            return int(args._run(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. piped into head): nothing more to say.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except (SyncTalkAudioError, OSError, ImportError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: still one line, the traceback with --debug
        if args.debug:
            traceback.print_exc()
        print(f"{PROG}: error: internal error {type(exc).__name__}: {_one_line(exc)} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 2


def entry() -> None:
    """Console-script entry: run :func:`main`, flush, and leave without interpreter teardown.

    Every output is complete (files renamed into place, streams flushed) when ``main`` returns;
    skipping the teardown of a process that imported torch saves 0.15–0.3 s per run.
    """
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: nothing more to deliver
        pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
