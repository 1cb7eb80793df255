"""Argument types and the error exit the benchmark scripts share.

A bad option is one argparse error line (exit 2), not a traceback half-way through a run:
``--repeats 0`` once ended in ``StatisticsError: no median for empty data``, ``--seconds 0`` in a
TypeError, a missing ``--audio`` in a traceback around the right message.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable


def positive_int(text: str) -> int:
    """An integer >= 1 (``--repeats``, ``--threads``, ``--hubert-layers``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (``--seconds``, ``--chunk-ms``, ``--ghz``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def existing_file(text: str) -> str:
    """A path to a file that exists (``--audio``, ``--checkpoint`` paths)."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return text


def checkpoint(text: str) -> str:
    """``seeded`` (the untrained stand-in weights) or a checkpoint file that exists."""
    return text if text == "seeded" else existing_file(text)


def existing_dir(text: str) -> Path:
    """A folder that exists."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {text!r}")
    return Path(text)


def run(main: Callable[[], int], prog: str) -> int:
    """``main()``, with the library's errors (a checkpoint it cannot read, audio it refuses) as one
    ``prog: error: …`` line and exit status 2, as the CLI prints them."""
    from synctalk_audio.errors import SyncTalkAudioError

    try:
        return main()
    except SyncTalkAudioError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
