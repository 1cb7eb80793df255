"""The ``synctalk-audio`` subcommands: for each, ``_add_NAME(parser)`` and ``_run_NAME(args)``.

features, reference, frames, validate, plot, demo, export, stream and dataset; the table that
names them (:data:`synctalk_audio.cli.COMMANDS`), the parser and the entry point are in
:mod:`synctalk_audio.cli`, the helpers they share in :mod:`synctalk_audio.cli_common`. Every
heavy import (torch, matplotlib, tqdm, the pipeline) happens inside the ``_run_*`` functions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from .cli_common import (DEMO_AUDIO, PROG, SEEDED, _add_checkpoint, _add_force, _counts, _describe_outputs, _emit_json,
                         _one_line, _progress, _run_pipeline, _say, _shape, _summary, _warn_untrained, _weights_line,
                         load_weights)
from .errors import SyncTalkAudioError


# --------------------------------------------------------------------------- features / reference


def _write_command(args: argparse.Namespace, kind: str) -> int:
    from .dataset import check_output_dir, write_features, write_reference

    check_output_dir(args.output, overwrite=args.force, kind=kind)  # fail before the long work
    encoder, weights = load_weights(args.checkpoint, args.device, mode=args.mode, precision=args.precision)
    result = _run_pipeline(args, args.audio, encoder)
    if kind == "features":
        meta = write_features(result, args.output, weights=weights, overwrite=args.force, frames=args.frames)
    else:
        meta = write_reference(result, args.output, weights=weights, overwrite=args.force,
                               progress=_progress(args))
    out = Path(args.output)
    _warn_untrained(args, weights)
    if args.json:
        _emit_json(_summary(out, meta))
        return 0
    _say(args, f"{args.audio} ({meta['duration_s']:.2f} s) → {out}/: {_counts(meta)}, mode {meta['mode']}, "
               f"{meta['fps']} fps, radius {meta.get('radius', 8)}, context {meta['context']}")
    _say(args, _weights_line(weights))
    for line in _describe_outputs(out, meta):
        _say(args, line)
    return 0


def _add_audio_out(parser: argparse.ArgumentParser, out_help: str, *, many: bool = False) -> None:
    if many:
        parser.add_argument("audio", metavar="AUDIO", nargs="+",
                            help="audio file(s) (wav/flac/ogg/mp3, any rate/channels); several run in one process, "
                                 "the encoder loaded once")
    else:
        parser.add_argument("audio", metavar="AUDIO", help="audio file (wav/flac/ogg/mp3, any rate/channels)")
    _add_checkpoint(parser, required=True)
    parser.add_argument("--output", "-o", required=True, metavar="OUT", help=out_help)
    parser.add_argument("--force", action="store_true",
                        help="replace OUT if it is a non-empty directory written earlier by synctalk-audio and "
                             "holding nothing else")


def _add_features(parser: argparse.ArgumentParser) -> None:
    _add_audio_out(parser, "output directory (created atomically; must not exist or be empty unless --force); "
                           "with several AUDIO files, the folder that gets one such directory per file, named "
                           "after the file (talk.wav → OUT/talk/)", many=True)
    parser.add_argument("--frames", action="store_true",
                        help="also write audio_frames.npy, every frame stacked (N+2, 32, 16, 16): 16x the padded "
                             "features, which hold the same numbers (2.9 GB per hour of audio)")


def _run_features(args: argparse.Namespace) -> int:
    if len(args.audio) == 1:
        args.audio = args.audio[0]
        return _write_command(args, "features")
    return _write_many(args)


def _plan_many(inputs: Sequence[str], output: str, *, overwrite: bool) -> list[tuple[str, Path]]:
    """(audio, output directory) per input, all checked before any work: OUT/<file stem>/."""
    from ._io import check_parent_folder
    from .dataset import check_output_dir
    from .errors import ConfigError, OutputError

    root = Path(output).expanduser()
    if root.exists() and not root.is_dir():
        raise OutputError(f"output {root} is a file; with several AUDIO files -o names a folder "
                          "(one sub-folder per file)")
    if not root.exists():
        check_parent_folder(root)
    plan: dict[str, tuple[str, Path]] = {}
    for audio in inputs:
        name = Path(audio).stem or Path(audio).name
        if name in plan:
            raise ConfigError(f"inputs {plan[name][0]} and {audio} would both write {root / name}; "
                              "rename one or run them separately")
        if root.is_dir():
            check_output_dir(root / name, overwrite=overwrite, kind="features")
        plan[name] = (audio, root / name)
    return list(plan.values())


def _write_many(args: argparse.Namespace) -> int:
    """``features A B C -o OUT``: one process, the encoder loaded once, OUT/<stem>/ per file.

    Files are written one by one, each atomically; the first failure stops the run with one
    error line naming the file (the directories already written stay complete).
    """
    from .dataset import write_features

    plan = _plan_many(args.audio, args.output, overwrite=args.force)  # fail before the long work
    encoder, weights = load_weights(args.checkpoint, args.device, mode=args.mode, precision=args.precision)
    Path(args.output).expanduser().mkdir(exist_ok=True)
    summaries = []
    for done, (audio, out) in enumerate(plan):
        try:
            result = _run_pipeline(args, audio, encoder)
            meta = write_features(result, out, weights=weights, overwrite=args.force, frames=args.frames)
        except SyncTalkAudioError as exc:
            text = _one_line(exc)
            where = "" if audio in text else f"{audio}: "
            raise type(exc)(f"{where}{text} ({done} of {len(plan)} inputs written to {args.output} before it)") \
                from None
        summaries.append(_summary(out, meta))
        _say(args, f"{audio} ({meta['duration_s']:.2f} s) → {out}/: {_counts(meta)}")
    _warn_untrained(args, weights)
    if args.json:
        _emit_json(summaries)
        return 0
    _say(args, f"{len(plan)} files, mode {summaries[0]['mode']}, {summaries[0]['fps']} fps, context "
               f"{summaries[0]['context']}, precision {summaries[0]['precision']}")
    _say(args, _weights_line(weights))
    return 0


def _add_reference(parser: argparse.ArgumentParser) -> None:
    _add_audio_out(parser, "output directory for the reference dataset (created atomically)")


def _run_reference(args: argparse.Namespace) -> int:
    return _write_command(args, "reference")


# --------------------------------------------------------------------------- frames (precomputed features)


def _add_frames(parser: argparse.ArgumentParser) -> None:
    from .config import CONTEXT_MODES, MODES

    parser.add_argument("features", metavar="FEATURES",
                        help="precomputed features .npy: hubert (T, 2, 1024) like aud_hu.npy, wenet (T, 8192), "
                             "or ave padded features (N+2, 512)")
    parser.add_argument("--mode", required=True, choices=list(MODES), help="U-Net audio mode")
    parser.add_argument("--context", default="zeros", choices=list(CONTEXT_MODES),
                        help="rows outside the array: 'zeros' (upstream, default) or 'edge' repeats")
    parser.add_argument("--radius", type=int, default=8, choices=[8, 4],
                        help="context rows each side of a frame: 8 (SyncTalk_2D) or 4 (Ultralight since mid-2025)")
    parser.add_argument("--output", "-o", required=True, metavar="OUT.npy",
                        help="frames (T, *mode shape) float32, written atomically")
    _add_force(parser, "OUT.npy", file=True)


def _load_npy(path: str) -> Any:
    import numpy as np

    from .errors import ShapeError

    p = Path(path)
    if not p.is_file():
        raise ShapeError(f"features file not found: {p}" if not p.exists() else f"features path {p} is not a file")
    with open(p, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise ShapeError(f"{p} is not a .npy file (no NUMPY header); save arrays with numpy.save")
    try:
        return np.load(p, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ShapeError(f"cannot read {p} as a .npy array: {' '.join(str(exc).split())[:160]}") from None


def _run_frames(args: argparse.Namespace) -> int:
    import numpy as np

    from ._io import check_file_target, check_not_an_input
    from .context import frames_for_mode
    from .stream import check_frames_path, save_frames

    check_file_target(check_frames_path(args.output), overwrite=args.force)  # fail before reading a large array
    check_not_an_input(args.output, args.features)
    feats = _load_npy(args.features)
    if feats.dtype.kind == "f" and feats.dtype != np.float32:
        from .errors import ShapeError

        with np.errstate(over="ignore", invalid="ignore"):
            cast = np.asarray(feats, dtype=np.float32)
        if np.isinf(cast).any() and np.isfinite(feats).all():
            big = float(np.abs(feats).max())
            raise ShapeError(f"{args.features} holds values beyond float32's range (max |x| {big:.3g}); "
                             "the frames are float32")
        feats = cast
    frames = frames_for_mode(feats, args.mode, context=args.context, radius=args.radius)
    out = save_frames(frames, args.output, overwrite=args.force)
    summary = {"input": args.features, "input_shape": list(feats.shape), "mode": args.mode,
               "context": args.context, "output": str(out), "frames_shape": list(frames.shape)}
    if args.json:
        _emit_json(summary)
    else:
        _say(args, f"{args.features} {_shape(feats.shape)} → {out}: {_shape(frames.shape)} float32 "
                   f"({args.mode}, ±{args.radius} rows of context, {args.context} outside; no first/last repeat)")
    return 0


# --------------------------------------------------------------------------- validate


def _add_validate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reference", metavar="REF", help="reference dataset directory (from 'reference' or 'features')")
    parser.add_argument("candidate", metavar="CANDIDATE",
                        help="directory of your port's .npy outputs, named like the reference's (any subset)")
    parser.add_argument("--require", action="append", default=None, metavar="ARTIFACT",
                        help="fail if this artifact is missing from CANDIDATE (repeatable; 'all' for every one). "
                             "Artifacts: mel_spectrogram, mel_windows, audio_features_raw, audio_features_padded, "
                             "frames_window, frames_reshaped")
    parser.add_argument("--atol", type=float, default=None, help="absolute tolerance for every artifact "
                        "(default: per artifact, from the reference's VALIDATION_INSTRUCTIONS.json)")
    parser.add_argument("--rtol", type=float, default=None,
                        help="tolerance relative to max|reference| for every artifact (default: per artifact)")
    parser.add_argument("--apply-to", default="all", metavar="ARTIFACTS",
                        help="the artifacts --atol/--rtol change: 'all' (default); 'encoder' (features, padded "
                             "features and frames: loosen a float16 port's encoder, keep the mel strict); or a "
                             "comma list of artifact names")


def _run_validate(args: argparse.Namespace) -> int:
    from .dataset import ARTIFACTS, validate

    from .errors import ConfigError

    tolerances = None
    override = {k: v for k, v in (("atol", args.atol), ("rtol", args.rtol)) if v is not None}
    front = ("mel_spectrogram", "mel_windows", "fbank")  # the front end: kept strict by --apply-to encoder
    groups = {"all": ARTIFACTS, "encoder": tuple(a for a in ARTIFACTS if a not in front)}
    names = [n.strip() for n in args.apply_to.split(",") if n.strip()]
    targets = [a for n in names for a in groups.get(n, (n,))]
    unknown = sorted(set(targets) - set(ARTIFACTS))
    if unknown or not targets:
        raise ConfigError(f"--apply-to takes 'all', 'encoder' or artifact names ({', '.join(ARTIFACTS)}), "
                          f"got {args.apply_to!r}")
    if args.apply_to != "all" and not override:
        raise ConfigError("--apply-to needs --atol or --rtol (it says which artifacts they change)")
    if override:
        tolerances = {name: dict(override) for name in dict.fromkeys(targets)}
    required: Any = None
    if args.require:
        required = "all" if "all" in args.require else list(args.require)
    report = validate(args.reference, args.candidate, tolerances=tolerances, required=required)
    if args.json:
        print(report.to_json())
    elif not args.quiet:
        print(report.table())
    return 0 if report.ok else 1


# --------------------------------------------------------------------------- plot


def _add_plot(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("audio", metavar="AUDIO", help="audio file")
    parser.add_argument("--output", "-o", required=True, metavar="FIG", help="image file (.png, .svg, .pdf)")
    _add_force(parser, "FIG", file=True)
    _add_checkpoint(parser, required=False)
    parser.add_argument("--dpi", type=int, default=120, help="resolution of raster images (default: 120)")


def _run_plot(args: argparse.Namespace) -> int:
    from .plot import check_dpi, check_figure_path, plot_features

    from ._io import check_not_an_input

    check_dpi(args.dpi)
    check_figure_path(args.output, overwrite=args.force)  # fail before the long work
    check_not_an_input(args.output, args.audio, args.checkpoint)
    if args.checkpoint is None:
        from .config import check_context, check_fps, check_mode

        check_mode(args.mode)
        check_context(args.context)
        if args.fps is not None:
            check_fps(args.fps)
        if not args.quiet and not args.json:
            print(f"{PROG}: note: no --checkpoint, so no feature panel (pass --checkpoint CKPT, or "
                  "--checkpoint seeded for untrained weights)", file=sys.stderr)
        plot_features(args.audio, path=args.output, dpi=args.dpi, overwrite=args.force)
        weights = None
    else:
        encoder, weights = load_weights(args.checkpoint, args.device, mode=args.mode, precision=args.precision)
        result = _run_pipeline(args, args.audio, encoder)
        note = ("UNTRAINED seeded weights (seeded_state_dict(0)): not the real audio_visual_encoder.pth"
                if weights.get("untrained_seeded") else None)
        plot_features(result, audio=args.audio, path=args.output, dpi=args.dpi, note=note, overwrite=args.force)
        _warn_untrained(args, weights)
    if args.json:
        _emit_json({"output": str(args.output), "audio": str(args.audio), "weights": weights})
    else:
        _say(args, f"wrote {args.output}")
    return 0


# --------------------------------------------------------------------------- demo


_DEMO_README = """\
synctalk-audio demo output
==========================

Made by `synctalk-audio demo` from the bundled clip {audio} ({duration:.2f} s)
with UNTRAINED seeded encoder weights (synctalk_audio.encoder.seeded_state_dict(0),
state_dict sha256 {sha}).

These features show the pipeline and the dataset layout and are exact for those weights,
but they are NOT the features of the trained audio_visual_encoder.pth: do not feed them
to a real SyncTalk_2D U-Net. For real features run
    synctalk-audio reference YOUR.wav --checkpoint audio_visual_encoder.pth -o OUT

Contents: a complete reference dataset (see VALIDATION_INSTRUCTIONS.json) and
demo_features.png (waveform, mel spectrogram, feature heat-map).
Check a port against it:  synctalk-audio validate {out} YOUR_PORT_OUTPUT_DIR
"""


def _add_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", default="demo_output", metavar="DIR",
                        help="output directory (default: demo_output; must not exist or be empty unless --force)")
    _add_force(parser, "DIR (only an earlier demo output)")
    parser.add_argument("--audio", default=str(DEMO_AUDIO), metavar="AUDIO", help="input clip (default: the bundled demo_speech.wav)")


def _run_demo(args: argparse.Namespace) -> int:
    from .dataset import UNTRAINED_NOTE, write_reference
    from .encoder import resolve_device

    from .dataset import check_output_dir

    out = Path(args.output)
    check_output_dir(out, overwrite=args.force, kind="demo")  # fail before the work
    encoder, weights = load_weights(SEEDED, args.device, precision=args.precision)
    device = str(resolve_device(args.device))
    _say(args, "synctalk-audio demo — UNTRAINED seeded weights (seeded_state_dict(0)): the numbers are exact for "
               "these weights, but they are NOT the trained audio_visual_encoder.pth")
    result = _run_pipeline(args, args.audio, encoder)
    meta_src = result.metadata
    _say(args, f"input: {args.audio} ({meta_src['duration_s']:.2f} s, {meta_src['n_samples']} samples at "
               f"{meta_src['sample_rate']} Hz), device {device}")
    n = result.features.shape[0]
    _say(args, f"mel {_shape(result.mel.shape)} → windows ({n}, 80, 16) → features {_shape(result.features.shape)} "
               f"→ padded {_shape(result.padded.shape)} → frames {_shape(result.frames.shape)}")

    def extras(tmp: Path) -> None:
        from .plot import plot_features

        plot_features(result, audio=args.audio, path=tmp / "demo_features.png", note=UNTRAINED_NOTE.split(":")[0])
        (tmp / "README.txt").write_text(_DEMO_README.format(audio=args.audio, duration=meta_src["duration_s"],
                                                           sha=weights["state_dict_sha256"], out=out))

    meta = write_reference(result, out, weights=weights, overwrite=args.force, progress=_progress(args),
                           extra_meta={"demo": UNTRAINED_NOTE}, extra_files=extras, output_kind="demo")
    if args.json:
        summary = _summary(out, meta)
        summary["plot"] = str(out / "demo_features.png")
        _emit_json(summary)
        return 0
    _say(args, f"wrote {out}/ ({len(meta['sha256'])} .npy files, checksums in metadata.json):")
    for line in _describe_outputs(out, meta):
        _say(args, line)
    _say(args, "  demo_features.png, README.txt")
    _say(args, f"check a port against it: {PROG} validate {out} YOUR_PORT_OUTPUT_DIR")
    return 0


# --------------------------------------------------------------------------- export


def _add_export(parser: argparse.ArgumentParser) -> None:
    _add_checkpoint(parser, required=True)
    parser.add_argument("--format", "-f", default="all", choices=["onnx", "torchscript", "coreml", "all"],
                        help="encoder.onnx, encoder.pt (TorchScript), encoder.mlpackage (CoreML) or all three")
    parser.add_argument("--output-dir", "-o", required=True, metavar="DIR",
                        help="folder for the artifacts and their .json metadata (created if missing)")
    _add_force(parser, "an artifact in DIR", rule="only one synctalk-audio wrote (its .json beside it says so)")
    parser.add_argument("--fp16", action="store_true", help="CoreML: float16 compute precision (default float32)")
    parser.add_argument("--max-batch", type=int, default=64, help="CoreML: largest batch of the flexible input "
                        "(1 = fixed (1, 1, 80, 16), best for the Neural Engine)")


def _run_export(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .export import export_all

    coreml_only = [opt for opt, given in (("--fp16", args.fp16), ("--max-batch", args.max_batch != 64)) if given]
    if coreml_only and args.format not in ("coreml", "all"):
        verb = "applies" if len(coreml_only) == 1 else "apply"
        raise ConfigError(f"{' and '.join(coreml_only)} {verb} to --format coreml (or all) only, not {args.format}")

    results = export_all(args.checkpoint, args.output_dir, formats=args.format, max_batch=args.max_batch,
                         compute_precision="float16" if args.fp16 else "float32", overwrite=args.force)
    _warn_untrained(args, dict(results[0].metadata["checkpoint"]))
    if args.json:
        _emit_json([{"format": r.format, "path": str(r.path), "metadata_path": str(r.metadata_path),
                     **dict(r.metadata)} for r in results])
        return 0
    for r in results:
        ver = r.metadata["verification"]
        _say(args, f"wrote {r.path} (+ .json): max abs diff {ver['max_abs_diff']:.3g} vs {ver['reference']}, "
                   f"{ver['max_abs_diff_vs_exact_encoder']:.3g} vs the exact encoder "
                   f"(max|features| {ver['feature_scale']:.3g}; {ver['runtime']})")
    return 0


# --------------------------------------------------------------------------- stream


def _add_stream(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("audio", metavar="AUDIO", help="audio file, streamed in chunks as if it were live input")
    _add_checkpoint(parser, required=True)
    parser.add_argument("--chunk-ms", type=float, default=20.0, metavar="MS",
                        help="push size in milliseconds of audio (default: 20)")
    parser.add_argument("--output", "-o", default=None, metavar="OUT.npy",
                        help="save the streamed frames float32 to this .npy (ave: (N+2, 32, 16, 16); wenet: "
                             "(K, 256, 16, 32) at radius 8), written atomically")
    _add_force(parser, "OUT.npy", file=True)
    parser.add_argument("--threads", type=int, default=1,
                        help="encoder threads for the per-window calls (default: 1; 0 = torch's setting, or all "
                             "usable cores for an .onnx encoder)")


def _run_stream(args: argparse.Namespace) -> int:
    import math

    from .errors import ConfigError
    from .pipeline import load_for_mode
    from .stream import StreamingPipeline, check_frames_path, run_stream, save_frames

    if not (math.isfinite(args.chunk_ms) and 1 <= args.chunk_ms <= 60000):
        raise ConfigError(f"--chunk-ms must be a number of milliseconds in [1, 60000], got {args.chunk_ms!r}")
    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        from .batches import check_positive_int

        check_positive_int("threads", args.threads)  # bounded by the machine's cores, before any loading
    if args.output is not None:
        from ._io import check_file_target, check_not_an_input

        check_file_target(check_frames_path(args.output), overwrite=args.force)
        check_not_an_input(args.output, args.audio, args.checkpoint)
    if args.mode == "hubert":  # before loading a model: hubert cannot stream exactly (whole-file normalisation)
        StreamingPipeline(checkpoint=None, mode="hubert")
    encoder, weights = load_weights(args.checkpoint, args.device, threads=args.threads or None,
                                    precision=args.precision, mode=args.mode)
    _warn_untrained(args, weights)
    stream = StreamingPipeline(checkpoint=encoder, mode=args.mode, fps=args.fps, device=args.device,
                               precision=args.precision, context=args.context, radius=args.radius,
                               batch_size=args.batch_size, threads=args.threads or None)
    wav = load_for_mode(args.audio, args.mode, config=stream.config)
    chunk = max(1, int(round(args.chunk_ms * 16000 / 1000.0)))
    frames, report = run_stream(stream, wav, chunk, keep_frames=args.output is not None)
    summary = {"audio": str(args.audio), "device": stream.device, "mode": stream.mode, "context": stream.context,
               "chunk_samples": chunk, **report.summary(), "output": args.output, "weights": weights}
    if args.output is not None:
        save_frames(frames, args.output, overwrite=args.force)
    if args.json:
        _emit_json(summary)
        return 0
    lat = report.latency
    _say(args, f"{args.audio} ({summary['audio_s']:.2f} s) streamed in {summary['n_chunks']} chunks of "
               f"{summary['chunk_ms']:g} ms ({chunk} samples) → {report.n_frames} frames "
               f"{_shape(stream.frame_shape)} ({report.n_tail} at flush), mode {stream.mode}, {stream.fps} fps, "
               f"context {stream.context}, device {stream.device}")
    _say(args, _weights_line(weights))
    window = "mel window" if stream.mode == "ave" else "fbank window past the 320 ms of leading zeros"
    _say(args, f"algorithmic latency: {lat.samples} samples = {lat.ms:.1f} ms after a frame's time "
               f"(context look-ahead {1000 * lat.context_samples / lat.sample_rate:.1f} + {window} "
               f"{1000 * lat.window_samples / lat.sample_rate:.1f}"
               + (f" + STFT centring {1000 * lat.stft_samples / lat.sample_rate:.1f}" if lat.stft_samples else "")
               + " ms)")
    _say(args, f"  {'measured (ms)':34s} {'median':>8s} {'p95':>8s} {'max':>8s}")
    for key, label in (("chunk_wall_ms", "compute per chunk (push)"),
                       ("frame_compute_ms", "compute per streamed frame"),
                       ("frame_lag_ms", "audio past frame time when out"),
                       ("frame_ready_ms", "  + compute = frame ready after")):
        st = summary[key]
        _say(args, f"  {label:34s} {st['median']:8.2f} {st['p95']:8.2f} {st['max']:8.2f}")
    _say(args, f"flush {report.flush_wall_ms:.1f} ms; CPU {report.cpu_ms_per_frame:.2f} ms per frame; "
               f"real-time factor {report.real_time_factor:.3f}")
    if args.output is not None:
        _say(args, f"wrote {args.output} {_shape(frames.shape)} float32")
    return 0


# --------------------------------------------------------------------------- dataset


def _add_dataset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC",
                        help="a directory of audio files (recursive: wav/flac/ogg/mp3, any case; hidden entries and "
                             "links to directories skipped) or a manifest: one path per line, or .csv/.jsonl with a "
                             "'path' column (relative paths are relative to the manifest)")
    _add_checkpoint(parser, required=True)
    parser.add_argument("--output", "-o", required=True, metavar="OUT",
                        help="folder that gets OUT/<path relative to SRC, suffix dropped>/ per file (what 'features' "
                             "writes), _summary.json and _failures.jsonl; run again to resume (complete files are "
                             "skipped)")
    parser.add_argument("--frames", action="store_true", help="also write audio_frames.npy per file (features --frames)")
    g = parser.add_argument_group("workers")
    g.add_argument("--workers", "-j", type=int, default=None, metavar="N",
                   help="local worker processes, each loading the encoder once (default: 1, this process); with "
                        "--ray: the number of actors (default: cluster CPUs / --threads, or GPUs / --gpus-per-worker)")
    g.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                   help="run on Ray actors: alone, a local Ray; with ADDRESS ('auto', HOST:6379) an existing cluster, "
                        "whose nodes must all see SRC, OUT and the checkpoint (put --ray last, or write --ray=ADDRESS)")
    g.add_argument("--gpus-per-worker", type=float, default=0, metavar="G", help="GPUs per Ray actor (default: 0)")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads per worker (default: usable cores / workers; 1 per Ray actor)")


def _run_dataset(args: argparse.Namespace) -> int:
    from .jobs import extract_dataset

    summary = extract_dataset(args.src, args.output, checkpoint=args.checkpoint, mode=args.mode, radius=args.radius,
                              precision=args.precision, device=args.device, fps=args.fps, context=args.context,
                              frames=args.frames, batch_size=args.batch_size, threads=args.threads,
                              workers=args.workers, ray=args.ray, gpus_per_worker=args.gpus_per_worker,
                              progress=_progress(args))
    _warn_untrained(args, {"untrained_seeded": summary.untrained, "checkpoint": args.checkpoint})
    if args.json:
        _emit_json(summary.to_dict())
    else:
        for line in summary.lines():
            _say(args, line)
    return 0 if summary.ok else 1
