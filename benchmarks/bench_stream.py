"""Streaming benchmark: CPU time per 40 ms video frame of one stream, beside the encoder's floor.

Streams benchmarks/data/speech_45s.flac through :class:`synctalk_audio.StreamingPipeline` in
chunks of ``--chunk-ms`` and reports the process CPU time (all threads) per output video frame,
the wall time per push, and how far behind the input the frames become available. Beside it,
measured in the same run on the same speech: the floor, the encoder's own CPU time per window
in large batches (its batch size, one thread), and the ratio of the two (issue 14's target:
<= 1.25). Also checks that the streamed frames equal the offline ``pipeline`` frames
(``--no-check`` to skip).

    .venv/bin/python benchmarks/bench_stream.py                        # exact, 45 s clip, 20 ms chunks
    .venv/bin/python benchmarks/bench_stream.py --precision fast
    .venv/bin/python benchmarks/bench_stream.py --checkpoint exported/encoder.onnx   # onnxruntime

The machine (CPU model, cores, load average) is printed with the result: other processes on
the same cores inflate the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_args import checkpoint, existing_file, positive_float, positive_int, run  # noqa: E402

DEFAULT_AUDIO = ROOT / "benchmarks" / "data" / "speech_45s.flac"


def cpu_model() -> str:
    """``lscpu``'s model name, read from /proc/cpuinfo (or platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def upstream_ms_per_frame(wav: np.ndarray, checkpoint: str, repeats: int = 2) -> "float | None":
    """Upstream's own recipe (benchmarks/upstream_recipe.py: librosa 0.10.1, DataLoader batches of 64,
    one ``get_audio_features`` per frame, torch's default threads) run offline on ``wav``: its process
    CPU ms per video frame, best of ``repeats``. Upstream cannot stream — it needs the whole file —
    so this is the per-frame cost a server pays with upstream's code at best. None when its
    librosa 0.10.1 is not installed (``make bench`` installs it) or the checkpoint is an .onnx."""
    import tempfile

    import bench

    if checkpoint.endswith(".onnx") or bench.ensure_pkg_resources(required=False) is None:
        return None
    try:
        import soundfile as sf
        import torch
        import upstream_recipe as up
    except ImportError:
        return None
    from synctalk_audio.encoder import seeded_state_dict

    weights = seeded_state_dict(0) if checkpoint == "seeded" else torch.load(checkpoint, map_location="cpu")
    model = up.load_model(weights)
    best = float("inf")
    with tempfile.TemporaryDirectory(prefix="synctalk-upstream-") as tmp:
        path = str(Path(tmp) / "clip.wav")
        sf.write(path, wav, 16000, subtype="FLOAT")  # float32 as loaded: upstream's librosa.load reads it as is
        for _ in range(repeats + 1):  # the first run warms up
            c = time.process_time()
            n, _ = up.frames(up.features(path, model))
            best = min(best, (time.process_time() - c) * 1000 / n)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=existing_file, default=str(DEFAULT_AUDIO),
                        help="audio file (default: the 45 s speech clip)")
    parser.add_argument("--checkpoint", type=checkpoint, default="seeded",
                        help="encoder checkpoint (.pth, or an exported .onnx: onnxruntime), or 'seeded' (default)")
    parser.add_argument("--precision", choices=["exact", "fast"], default="exact",
                        help="PyTorch encoder precision (default exact; an .onnx runs 'onnx')")
    parser.add_argument("--chunk-ms", type=positive_float, default=20.0, help="push size in ms (default 20)")
    parser.add_argument("--threads", type=threads_or_none, default="1",
                        help="StreamingPipeline(threads=…): torch threads per encoder call, or 'none' (default 1)")
    parser.add_argument("--seconds", type=positive_float, default=None, help="only the first S seconds of the audio")
    parser.add_argument("--repeat", type=positive_int, default=3, help="stream it this many times, report the best run")
    parser.add_argument("--no-check", action="store_true", help="skip the comparison with the offline pipeline")
    parser.add_argument("--layers", action="store_true",
                        help="also: each encoder block's CPU per window at one window per call and in batches of 32 "
                             "(exact PyTorch engine)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    import synctalk_audio as sa
    from synctalk_audio.engines import resolve_encoder
    from synctalk_audio.runtime import is_onnx_model, load_onnx_encoder
    from synctalk_audio.stream import run_stream

    from bench_serving import floor_ms

    threads = args.threads
    if is_onnx_model(args.checkpoint):  # onnxruntime, torch never imported
        encoder = load_onnx_encoder(args.checkpoint, device="cpu", threads=threads)
    else:
        from synctalk_audio.encoder import load_encoder, seeded_state_dict

        weights = seeded_state_dict(0) if args.checkpoint == "seeded" else args.checkpoint
        encoder = resolve_encoder(load_encoder(weights, device="cpu"), precision=args.precision, device="cpu")
    wav = sa.load_audio(args.audio)
    if args.seconds is not None:
        wav = wav[: int(args.seconds * 16000)]
    chunk = int(round(args.chunk_ms * 16000 / 1000))
    stream = sa.StreamingPipeline(checkpoint=encoder, device="cpu", threads=threads)

    # Warm-up (imports, oneDNN primitive creation), then the timed runs, each beside a floor run.
    run_stream(stream, wav[: 16000 * 2], chunk, keep_frames=False)
    floor_engine = (load_onnx_encoder(args.checkpoint, device="cpu", threads=1) if stream.precision == "onnx"
                    else encoder)
    load_before = os.getloadavg()
    best = None
    frames = None
    floor = one = float("inf")
    for _ in range(max(args.repeat, 1)):
        floor = min(floor, floor_ms(floor_engine, wav))
        one = min(one, floor_ms(floor_engine, wav, batch_size=1))
        out, report = run_stream(stream, wav, chunk, keep_frames=not args.no_check)
        if best is None or report.total_cpu_s < best.total_cpu_s:
            best, frames = report, out
    upstream = upstream_ms_per_frame(wav, args.checkpoint)
    load_after = os.getloadavg()

    result = best.summary()
    result["upstream_offline_cpu_ms_per_frame"] = upstream
    result["floor_ms_per_window"] = floor
    result["encoder_ms_one_window_per_call"] = one
    result["ratio_to_floor"] = result["cpu_ms_per_frame"] / floor
    result["machine"] = {
        "cpu_model": cpu_model(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads_process": sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None,
        "encoder": stream.precision,
        "stream_threads": threads,
        "load_average_before": load_before[0],
        "load_average_after": load_after[0],
        "torch": sys.modules["torch"].__version__ if "torch" in sys.modules else "not imported",
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    result["audio"] = str(args.audio)
    if args.layers:
        result["layers"] = layer_table(encoder, wav)
    if not args.no_check:
        t = time.perf_counter()
        ref = sa.pipeline(wav, checkpoint=encoder, device="cpu").frames
        result["offline_s"] = time.perf_counter() - t
        same_shape = ref.shape == frames.shape
        result["max_abs_diff_vs_offline"] = float(np.max(np.abs(ref - frames))) if same_shape else None
        result["frames_shape_matches_offline"] = same_shape

    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    m = result["machine"]
    lat = result["algorithmic_latency"]
    print(f"machine: {m['cpu_model']}, {m['cpus_available']} CPUs, torch {m['torch']} "
          f"({m['torch_threads_process']} threads; stream encoder calls: {threads or 'as torch'}), "
          f"load average {m['load_average_before']:.2f} → {m['load_average_after']:.2f}")
    print(f"audio: {result['audio_s']:.1f} s in {result['n_chunks']} chunks of {result['chunk_ms']:g} ms → "
          f"{result['n_frames']} frames ({result['n_frames_at_flush']} at flush)")
    print(f"CPU time per 40 ms video frame: {result['cpu_ms_per_frame']:.3f} ms; encoder floor "
          f"{floor:.3f} ms per window ({stream.precision}, batches of {floor_engine.batch_size}, 1 thread); "
          f"ratio {result['ratio_to_floor']:.2f} (target <= 1.25: "
          f"{'met' if result['ratio_to_floor'] <= 1.25 else 'NOT met'}) on {m['cpu_model']}")
    print(f"  of which the encoder, one window per call as a stream runs it: {one:.3f} ms "
          f"({one / floor:.2f} × the floor); the rest, {result['cpu_ms_per_frame'] - one:.3f} ms, is the stream's own")
    if upstream is not None:
        print(f"upstream's recipe, offline on the same audio (it cannot stream: it needs the whole file; "
              f"torch's default threads): {upstream:.3f} CPU-ms per frame; this stream costs "
              f"{result['cpu_ms_per_frame'] / upstream:.2f} × that (upstream / stream = "
              f"{upstream / result['cpu_ms_per_frame']:.2f}×) on {m['cpu_model']}")
    else:
        print("upstream's recipe: not measured (an .onnx checkpoint, or librosa 0.10.1 missing: `make bench` "
              "installs it)")
    print(f"wall {result['wall_ms_per_frame']:.2f} ms per frame; real-time factor {result['real_time_factor']:.3f}")
    for key, label in [("chunk_wall_ms", "push wall time per chunk"), ("chunk_cpu_ms", "push CPU time per chunk"),
                       ("frame_compute_ms", "compute per streamed frame"),
                       ("frame_ready_ms", "frame ready after its time")]:
        st = result[key]
        print(f"  {label:28s} median {st['median']:7.2f}  p95 {st['p95']:7.2f}  max {st['max']:7.2f} ms")
    print(f"algorithmic latency: {lat['samples']} samples = {lat['ms']:.1f} ms "
          f"(context {lat['context_samples']:g} + window {lat['window_samples']} + STFT {lat['stft_samples']})")
    if one / floor > 1.25:
        print(f"  the encoder alone, one window per call, costs {one / floor:.2f} × the floor: a stream that encodes "
              f"each window as soon as it is final cannot reach 1.25 × on {m['cpu_model']}"
              + ("" if args.layers else " (--layers shows which blocks)"))
    if args.layers:
        print_layers(result["layers"], m["cpu_model"])
    if "max_abs_diff_vs_offline" in result:
        print(f"max |stream - offline| = {result['max_abs_diff_vs_offline']} "
              f"(offline pipeline {result['offline_s']:.1f} s)")
    return 0


def layer_table(engine, wav: np.ndarray, batch: int = 32) -> "list[dict] | None":
    """Each encoder block: output shape, weight MB (float32) and CPU ms per window at one window per
    call and in one call of ``batch`` windows (real speech, one thread). None for engines other
    than the exact PyTorch one on CPU (the only one that times its blocks)."""
    if not hasattr(engine, "layer_cpu_ms"):
        return None
    import torch
    from bench_serving import speech_windows

    from synctalk_audio.config import ENCODER_LAYOUT, WINDOW_SHAPE
    from synctalk_audio.flops import layer_shapes

    spread = speech_windows(wav)[:: max(512 // batch, 1)][:batch]  # spread over the floor's windows
    windows = torch.from_numpy(np.ascontiguousarray(spread).reshape(batch, *WINDOW_SHAPE))
    one, many = engine.layer_cpu_ms(windows[:1]), engine.layer_cpu_ms(windows, repeats=5)
    return [{"block": i, "channels": f"{cin}→{cout}", "kernel": k, "out_shape": list(shape),
             "weights_mb": cin * cout * k * k * 4 / 1e6, "one_window_ms": a, "batched_ms_per_window": b}
            for i, ((cin, cout, k, _s, _p, _r), shape, a, b) in enumerate(zip(ENCODER_LAYOUT, layer_shapes(), one, many))]


def print_layers(layers: "list[dict] | None", cpu: str) -> None:
    if layers is None:
        print("--layers: only the exact PyTorch engine on CPU times its blocks")
        return
    print(f"encoder blocks on {cpu}, CPU ms per window (one thread, best of several calls):")
    print("  block  channels   out shape     weights MB  one window  batch of 32  ratio")
    for row in layers:
        shape = "×".join(map(str, row["out_shape"]))
        print(f"  {row['block']:5d}  {row['channels']:9s}  {shape:12s}  {row['weights_mb']:10.2f}  "
              f"{row['one_window_ms']:10.3f}  {row['batched_ms_per_window']:11.3f}  "
              f"{row['one_window_ms'] / row['batched_ms_per_window']:5.2f}")
    one = sum(r["one_window_ms"] for r in layers)
    many = sum(r["batched_ms_per_window"] for r in layers)
    print(f"  total{'':40s}{one:10.3f}  {many:11.3f}  {one / many:5.2f}")


def threads_or_none(text: str) -> "int | None":
    """``--threads``: a positive integer, or ``none`` (leave torch's setting alone)."""
    return None if text.lower() == "none" else positive_int(text)


if __name__ == "__main__":
    sys.exit(run(main, "bench_stream"))
