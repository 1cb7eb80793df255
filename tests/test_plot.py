"""plot_features: panels, labels, atomic saving, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import synctalk_audio as sa  # noqa: E402
from synctalk_audio.errors import ConfigError, OutputError  # noqa: E402
from synctalk_audio.plot import check_figure_path, plot_features, save_figure  # noqa: E402

from .conftest import golden_input  # noqa: E402

CLIP = golden_input("short_0p3s_16k")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def result(seeded_encoder):
    return sa.pipeline(CLIP, checkpoint=seeded_encoder, device="cpu")


def _main_axes(fig):
    """The panels (colour-bar axes have no x label and are excluded)."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_ylabel() in ("amplitude", "mel band", "feature dimension")]


def test_three_panels_from_features(result):
    fig = plot_features(result)
    axes = _main_axes(fig)
    assert [ax.get_ylabel() for ax in axes] == ["amplitude", "mel band", "feature dimension"]
    assert axes[-1].get_xlabel() == "time (s)"
    mel_img = axes[1].get_images()[0].get_array()
    np.testing.assert_array_equal(np.asarray(mel_img), result.mel)
    feat_img = axes[2].get_images()[0].get_array()
    np.testing.assert_array_equal(np.asarray(feat_img), result.features.T)
    # time axes agree: the x range covers the whole clip
    lo, hi = axes[0].get_xlim()
    assert lo <= 0 and hi >= result.metadata["duration_s"]


def test_audio_without_checkpoint_has_two_panels():
    fig = plot_features(str(CLIP))
    assert [ax.get_ylabel() for ax in _main_axes(fig)] == ["amplitude", "mel band"]


def test_audio_with_seeded_checkpoint_is_labelled_untrained(seeded_encoder):
    fig = plot_features(np.asarray(sa.load_audio(CLIP)), checkpoint=seeded_encoder)
    axes = _main_axes(fig)
    assert len(axes) == 3
    assert "UNTRAINED" in axes[2].get_title(loc="left")
    assert "UNTRAINED" in fig.get_suptitle()


def test_save_png_atomically(result, tmp_path):
    out = tmp_path / "sub" / "fig.png"
    fig = plot_features(result, path=out, dpi=40)
    assert out.read_bytes()[:8] == PNG
    assert [p.name for p in out.parent.iterdir()] == ["fig.png"]  # no temp file left
    save_figure(fig, tmp_path / "fig.svg")
    assert (tmp_path / "fig.svg").read_text().lstrip().startswith("<?xml")


def test_save_errors_leave_nothing(result, tmp_path, monkeypatch):
    with pytest.raises(OutputError, match="is a directory"):
        check_figure_path(tmp_path)
    with pytest.raises(OutputError, match="fig.xyz"):
        check_figure_path(tmp_path / "fig.xyz")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="under the file"):
        check_figure_path(tmp_path / "file" / "fig.png")
    fig = plot_features(result)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fig, "savefig", disk_full)
    with pytest.raises(OutputError, match="No space left"):
        save_figure(fig, tmp_path / "fig.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_bad_input():
    with pytest.raises(ConfigError, match="Features"):
        plot_features(42)
    with pytest.raises(sa.AudioError):
        plot_features(Path("no_such_file.wav"))


def test_existing_figure_needs_overwrite_and_special_files_are_refused(result, tmp_path):
    import os

    fig = plot_features(result)
    out = tmp_path / "fig.png"
    save_figure(fig, out, dpi=20)
    before = out.read_bytes()
    with pytest.raises(OutputError, match="--force"):
        save_figure(fig, out, dpi=30)
    assert out.read_bytes() == before
    save_figure(fig, out, dpi=30, overwrite=True)
    assert out.read_bytes() != before
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(OutputError, match="FIFO"):
        check_figure_path(tmp_path / "pipe.png", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "pipe.png"]


@pytest.mark.parametrize("mode", ["hubert", "wenet"])
def test_hubert_and_wenet_plot_their_frames_without_a_mel_panel(mode, tmp_path):
    """hubert: waveform + one flattened feature row per video frame (no mel); wenet: the Kaldi
    fbank panel in between (the CLI's `plot --mode hubert|wenet --checkpoint …` once crashed)."""
    pytest.importorskip("onnxruntime")
    if mode == "hubert":
        pytest.importorskip("transformers")
        from synctalk_audio.hubert import write_standin_hubert

        ckpt = write_standin_hubert(tmp_path / "h", seed=0, num_layers=2, conv_dim=32)
    else:
        from synctalk_audio.wenet import write_standin_wenet_onnx

        ckpt = write_standin_wenet_onnx(tmp_path / "w.onnx")
    wav = golden_input("speech_16k_mono")
    result = sa.pipeline(wav, checkpoint=ckpt, mode=mode, device="cpu")
    from_audio = plot_features(str(wav), checkpoint=ckpt, mode=mode, device="cpu", path=tmp_path / f"{mode}.png")
    assert "UNTRAINED stand-in" in from_audio.get_suptitle()  # known from the checkpoint, not from a Features
    for fig in (plot_features(result, audio=wav), from_audio):
        axes = _main_axes(fig)
        panels = ["amplitude", "feature dimension"] if mode == "hubert" else ["amplitude", "mel band", "feature dimension"]
        assert [ax.get_ylabel() for ax in axes] == panels
        if mode == "wenet":
            np.testing.assert_array_equal(np.asarray(axes[1].get_images()[0].get_array()), result.mel.T)
            assert "Kaldi fbank" in axes[1].get_title(loc="left")
        rows = np.asarray(axes[-1].get_images()[0].get_array())
        np.testing.assert_array_equal(rows, result.padded.T)  # (2048 | 8192, frames)
        assert rows.shape[1] == result.frames.shape[0]
        assert f"{result.frames.shape[0]} video frames ({mode}" in fig.get_suptitle()
    assert (tmp_path / f"{mode}.png").read_bytes()[:8] == PNG
    from synctalk_audio.cli import main

    out = tmp_path / f"cli_{mode}.png"
    assert main(["plot", str(wav), "--mode", mode, "--checkpoint", str(ckpt), "--device", "cpu", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG


@pytest.mark.parametrize("kwargs,match", [
    (dict(figsize=(-1, 5)), "figsize must be"), (dict(figsize="big"), "figsize must be"),
    (dict(figsize=(1e5, 1e5)), "figsize must be"), (dict(title=5), "title must be a str"),
    (dict(mode="x"), "unknown mode"), (dict(fps=0), "fps must be"), (dict(context="x"), "unknown context"),
    (dict(overwrite="no"), "overwrite must be True or False"),
    (dict(audio=np.zeros(1000, np.float32)), "not the same clip"),
])
def test_plot_options_are_checked_before_any_work(result, tmp_path, kwargs, match):
    """Raw matplotlib errors (figsize, title) once escaped, and mode/fps/context were ignored
    without a checkpoint; a Features with another clip's audio was drawn without a word."""
    with pytest.raises(ConfigError, match=match):
        plot_features(result, path=tmp_path / "f.png", **kwargs)
    assert list(tmp_path.iterdir()) == []
