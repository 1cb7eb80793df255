"""Shared fixtures: golden data locations and the seeded (untrained) encoder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# CI (CI=true) replays the same hypothesis examples every run, so a landing never hinges on a
# random draw; local runs keep exploring new ones (what found the control-character CLI bug).
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "golden"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
CLIPS = sorted(MANIFEST["clips"])
#: Clips with the full oracle output (every stage).
FULL_CLIPS = [c for c in CLIPS if "features.npy" in MANIFEST["clips"][c]["files"]]


def golden_input(clip: str) -> Path:
    return GOLDEN / MANIFEST["clips"][clip]["file"]


def golden_array(clip: str, name: str) -> np.ndarray:
    return np.load(GOLDEN / "out" / clip / name)


@pytest.fixture(scope="session")
def seeded_encoder():
    from synctalk_audio.encoder import load_encoder, seeded_state_dict

    return load_encoder(seeded_state_dict(0), device="cpu")


@pytest.fixture(scope="session")
def demo_wav() -> np.ndarray:
    from synctalk_audio import load_audio

    return load_audio(ROOT / "synctalk_audio" / "data" / "demo_speech.wav")
