"""Performance against the upstream recipe, measured side by side on this machine.

    make bench                                   # = .venv/bin/python benchmarks/bench.py
    .venv/bin/python benchmarks/bench.py --long  # + a 1-hour file end to end (a few minutes)

Sections (each prints medians, best runs and ratios; ratio = upstream time / our time):

1. warm, 45 s speech clip, in one process: the upstream recipe (``upstream_recipe.py``:
   librosa 0.10.1, ``AudDataset`` through a ``DataLoader`` in batches of 64, the encoder
   forward, one ``get_audio_features(...).reshape(32, 16, 16)`` materialised per frame) and
   ``synctalk_audio.pipeline`` (exact, fast, and onnx — the same weights exported to ONNX and
   run by onnxruntime; then every frame handed out), run alternately on the same clip with the
   same weights; the outputs are compared.
2. encoder only, same windows: upstream ``model(batch of 64)`` vs our exact, fast and onnx paths:
   windows/s, GFLOP/s and the fraction of the CPU's float32 peak.
3. cold start: ``synctalk-audio features`` as a fresh process (``--checkpoint X.pth`` for exact
   and fast, ``--checkpoint X.onnx`` for onnx: no torch import) vs ``upstream_recipe.py`` as a
   fresh process (wall time and peak RSS of each child).
3b. many clips: 12 clips of 3 s, a fresh process per clip (upstream's script; our CLI) vs our
   CLI given all of them at once (``features A B C … -o OUT``: one process, encoder loaded once).
4. long audio: a 10-minute file (the clip tiled) end to end in a child process, peak RSS
   (``ru_maxrss``); ``--long`` adds a 1-hour file.

Other processes on the same cores inflate every figure; the load average is printed. The
upstream recipe parallelises each batch over OpenMP threads, which loses more under such load
than our per-batch worker threads, so under load the *median* ratios flatter us: compare the
*best-run* ratios for the quiet-machine figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
CLIP = HERE / "data" / "speech_45s.flac"
BENCH_SITE = Path(sys.prefix) / "bench-site"  # setuptools 69's pkg_resources, for librosa 0.10.1 (make bench)
TARGETS = {"warm_exact": 1.3, "warm_fast": 3.0, "cold": 3.0, "rss_10min_mb": 600.0}


# --------------------------------------------------------------------------- machine


def lscpu() -> dict[str, str]:
    """``lscpu`` as a dict (empty when it is not there)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True,
                              env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def machine() -> dict:
    """CPU model, cores, clock, SIMD flags and the float32 peak this benchmark assumes."""
    info = lscpu()
    flags = set(info.get("Flags", "").split())
    if not flags and Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    mhz, mhz_src = None, ""
    for key in ("CPU max MHz", "CPU MHz"):
        if info.get(key):
            mhz, mhz_src = float(info[key]), f"lscpu {key}"
            break
    if mhz is None and Path("/proc/cpuinfo").exists():
        m = re.search(r"cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text())
        if m:
            mhz, mhz_src = float(m.group(1)), "/proc/cpuinfo cpu MHz"
    # FLOP/cycle/core for float32: vector lanes × 2 (FMA) × FMA units. Xeon Scalable (Gold and
    # up, Sapphire Rapids) and every recent AVX2 core have two FMA units; we assume two. With
    # one 512-bit unit (32 FLOP/cycle) the exact encoder would run at > 100 % of "peak" here,
    # which is impossible, so one unit is ruled out by measurement on this machine.
    if "avx512f" in flags:
        fpc, simd = 64, "AVX-512 FMA, 2 units: 16 lanes x 2 x 2"
    elif "avx2" in flags and "fma" in flags:
        fpc, simd = 32, "AVX2 FMA, 2 units: 8 lanes x 2 x 2"
    else:
        fpc, simd = 8, "SSE (no FMA assumed): 4 lanes x 2"
    peak = cores * (mhz or 0.0) * 1e6 * fpc
    return {
        "model": info.get("Model name") or platform.processor() or platform.machine(),
        "cores": cores,
        "mhz": mhz,
        "mhz_source": mhz_src,
        "flops_per_cycle": fpc,
        "simd": simd,
        "bf16": sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile")),
        "peak_gflops": peak / 1e9,
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------- helpers


def ensure_pkg_resources() -> dict[str, str]:
    """Make ``import librosa`` (0.10.1 imports pkg_resources) work; return the env for children."""
    env = dict(os.environ)
    try:
        import pkg_resources  # noqa: F401
        return env
    except ImportError:
        pass
    if (BENCH_SITE / "pkg_resources").is_dir():
        sys.path.append(str(BENCH_SITE))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(BENCH_SITE)) if p)
        return env
    sys.exit("bench: librosa 0.10.1 needs pkg_resources (setuptools < 81), which this venv lacks; run "
             "`make bench`, which installs it into .venv/bench-site")


def stats(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "best": min(times), "runs": len(times)}


def time_alternately(variants: dict, repeats: int, sync=None) -> dict[str, list[float]]:
    """Run every variant once per round, ``repeats`` rounds; wall seconds per variant.

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called around each timed call.
    """
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            if sync is not None:
                sync()
            t0 = time.perf_counter()
            fn()
            if sync is not None:
                sync()
            times[name].append(time.perf_counter() - t0)
    return times


def fmt_s(t: float) -> str:
    return f"{t:7.3f} s"


# A child forked from this (large) process starts with this process's RSS as its ru_maxrss
# (Linux keeps the forked mm's high-water mark across exec), so children are started by a
# small launcher: fork + exec from it, wait4 for the peak RSS, time from fork to exit.
_LAUNCHER = r"""
import json, os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(sys.argv[1], "w") as f:
    json.dump({"rc": os.waitstatus_to_exitcode(status), "wall_s": wall, "maxrss_mb": usage.ru_maxrss / 1024.0}, f)
"""


def run_child(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """Run ``cmd`` as a fresh process; return (wall s from fork to exit, its peak RSS in MB, stdout)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        report = Path(tmp.name)
    try:
        proc = subprocess.run([sys.executable, "-c", _LAUNCHER, str(report), *cmd], env=env, cwd=str(cwd),
                              capture_output=True, text=True)
        info = json.loads(report.read_text()) if report.stat().st_size else {"rc": proc.returncode}
    finally:
        report.unlink(missing_ok=True)
    if proc.returncode != 0 or info["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({info['rc']}):\n{proc.stderr[-2000:]}")
    return info["wall_s"], info["maxrss_mb"], proc.stdout


def tile_clip(src: Path, seconds: float, dest: Path) -> Path:
    """Write ``seconds`` of ``src`` repeated end to end as 16-bit FLAC."""
    import soundfile as sf

    data, sr = sf.read(str(src), dtype="int16")
    n = int(round(seconds * sr))
    with sf.SoundFile(str(dest), "w", samplerate=sr, channels=1, subtype="PCM_16", format="FLAC") as f:
        done = 0
        while done < n:
            piece = data[: n - done]
            f.write(piece)
            done += piece.shape[0]
    return dest


def load_avg() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# --------------------------------------------------------------------------- sections


def ours_variants(onnx_path: "Path | None") -> tuple[str, ...]:
    """Our precisions to measure: exact and fast always, onnx when an exported model is at hand."""
    return ("exact", "fast") + (("onnx",) if onnx_path is not None else ())


def export_onnx_model(state_dict: dict, work: Path) -> "Path | None":
    """The weights exported to ONNX (what ``--checkpoint X.onnx`` runs), or None without onnx/onnxruntime."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    from synctalk_audio.export import export_onnx

    return export_onnx(state_dict, work / "seeded.onnx").path


def warm(clip: Path, repeats: int, state_dict: dict, up, onnx_path: "Path | None") -> dict:
    import torch

    import synctalk_audio as sa
    from synctalk_audio.encoder import load_encoder

    upstream_model = up.load_model(state_dict)
    encoder = load_encoder(state_dict, device="cpu")
    checkpoints = {"exact": encoder, "fast": encoder}
    if onnx_path is not None:
        from synctalk_audio.runtime import load_onnx_encoder

        checkpoints["onnx"] = load_onnx_encoder(onnx_path, device="cpu")
    ours = ours_variants(onnx_path)

    def run_upstream():
        feats = up.features(str(clip), upstream_model)
        up.frames(feats)
        return feats

    def run_ours(precision):
        def go():
            res = sa.pipeline(clip, checkpoint=checkpoints[precision], device="cpu", precision=precision)
            total = 0.0
            for i in range(res.frames.shape[0]):  # hand out every frame, as upstream's loop does
                total += float(res.frames[i][0, 0, 0])
            return res
        return go

    variants = {"upstream": run_upstream, **{p: run_ours(p) for p in ours}}
    outputs = {name: fn() for name, fn in variants.items()}  # warm-up: librosa/numba, oneDNN kernels
    times = time_alternately(variants, repeats)
    ref = outputs["upstream"]
    scale = float(np.abs(ref).max())
    err = {p: float(np.abs(outputs[p].padded - ref).max()) for p in ours}
    res = {name: stats(t) for name, t in times.items()}
    for p in ours:
        res[p]["max_abs_vs_upstream"] = err[p]
        res[p]["max_rel_vs_upstream"] = err[p] / scale
        res[p]["ratio_median"] = res["upstream"]["median"] / res[p]["median"]
        res[p]["ratio_best"] = res["upstream"]["best"] / res[p]["best"]
    res["n_frames"] = int(ref.shape[0])
    res["torch_threads"] = torch.get_num_threads()
    res["compute"] = {p: outputs[p].metadata["encoder_compute"] for p in ours}
    return res


def encoder_only(clip: Path, repeats: int, state_dict: dict, up, peak_gflops: float,
                 onnx_path: "Path | None") -> dict:
    import torch

    import synctalk_audio as sa
    from synctalk_audio.encoder import load_encoder
    from synctalk_audio.engines import run_engine
    from synctalk_audio.flops import encoder_flops
    from synctalk_audio.torch_engines import prepare_encoder

    windows = np.asarray(sa.window(sa.melspectrogram(sa.load_audio(clip)), 25))
    n = windows.shape[0]
    x = torch.from_numpy(np.ascontiguousarray(windows)).unsqueeze(1)
    model = up.load_model(state_dict)
    enc = load_encoder(state_dict, device="cpu")
    prepared = {p: prepare_encoder(enc, precision=p, device="cpu") for p in ("exact", "fast")}

    def run_upstream():
        with torch.no_grad():
            return torch.cat([model(x[i:i + 64]) for i in range(0, n, 64)])

    def run_ours(p):
        return lambda: run_engine(prepared[p], n, lambda lo, hi: windows[lo:hi])

    variants = {"upstream": run_upstream, "exact": run_ours("exact"), "fast": run_ours("fast")}
    if onnx_path is not None:
        from synctalk_audio.runtime import load_onnx_encoder

        onnx_encoder = load_onnx_encoder(onnx_path, device="cpu")
        variants["onnx"] = lambda: run_engine(onnx_encoder, n, lambda lo, hi: windows[lo:hi])
    for fn in variants.values():
        fn()
    times = time_alternately(variants, repeats)
    flops = encoder_flops() * n
    res = {"n_windows": n, "gflop_per_window": encoder_flops() / 1e9, "gflop_total": flops / 1e9}
    for name, t in times.items():
        s = stats(t)
        s["windows_per_s"] = n / s["best"]
        s["gflops_best"] = flops / s["best"] / 1e9
        s["gflops_median"] = flops / s["median"] / 1e9
        s["peak_fraction_best"] = s["gflops_best"] / peak_gflops if peak_gflops else float("nan")
        s["peak_fraction_median"] = s["gflops_median"] / peak_gflops if peak_gflops else float("nan")
        if name != "upstream":
            s["ratio_median"] = statistics.median(times["upstream"]) / s["median"]
            s["ratio_best"] = min(times["upstream"]) / s["best"]
        res[name] = s
    return res


def cli_command() -> list[str]:
    exe = Path(sys.executable).with_name("synctalk-audio")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "synctalk_audio"]


def cold(clip: Path, repeats: int, ckpt: Path, env: dict[str, str], work: Path, onnx_path: "Path | None") -> dict:
    def upstream(i):
        return [sys.executable, str(HERE / "upstream_recipe.py"), str(clip), "--checkpoint", str(ckpt),
                "-o", str(work / f"up_{i}.npy")]

    def ours(precision):
        weights = onnx_path if precision == "onnx" else ckpt
        return lambda i: [*cli_command(), "features", str(clip), "--checkpoint", str(weights), "-o",
                          str(work / f"ours_{precision}_{i}"), "--device", "cpu", "--precision", precision, "-q"]

    variants = {"upstream": upstream, **{p: ours(p) for p in ours_variants(onnx_path)}}
    for name, make in variants.items():  # warm the page cache and librosa's numba cache
        run_child(make(f"warmup_{name}"), env, ROOT)
    times: dict[str, list[float]] = {name: [] for name in variants}
    rss: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(repeats):
        for name, make in variants.items():
            wall, mb, _ = run_child(make(i), env, ROOT)
            times[name].append(wall)
            rss[name].append(mb)
    res = {}
    for name in variants:
        res[name] = {**stats(times[name]), "peak_rss_mb": max(rss[name])}
        if name != "upstream":
            res[name]["ratio_median"] = statistics.median(times["upstream"]) / res[name]["median"]
            res[name]["ratio_best"] = min(times["upstream"]) / res[name]["best"]
    up_out = np.load(work / "up_0.npy")
    for p in ours_variants(onnx_path):
        ours_out = np.load(work / f"ours_{p}_0" / "audio_features_padded.npy")
        res[p]["max_abs_vs_upstream"] = float(np.abs(ours_out - up_out).max())
        res[p]["max_rel_vs_upstream"] = res[p]["max_abs_vs_upstream"] / float(np.abs(up_out).max())
    res["command"] = " ".join([Path(cli_command()[0]).name, *cli_command()[1:], "features", "CLIP", "--checkpoint",
                               "CKPT", "-o", "OUT", "--device", "cpu"])
    return res


def many_clips(n_clips: int, seconds: float, ckpt: Path, env: dict[str, str], work: Path,
               onnx_path: "Path | None") -> dict:
    """A folder of short clips: one fresh process per clip (upstream's script, our CLI) vs our CLI
    given every clip at once (one process, the encoder loaded once)."""
    import soundfile as sf

    from synctalk_audio import load_audio

    wav = load_audio(CLIP)
    step = int(seconds * 16000)
    folder = work / "clips"
    folder.mkdir()
    clips = []
    for i in range(n_clips):
        path = folder / f"clip_{i:02d}.wav"
        sf.write(str(path), wav[i * step:(i + 1) * step], 16000, subtype="FLOAT")
        clips.append(path)
    res: dict = {"n_clips": n_clips, "seconds_each": seconds}

    def total(make) -> float:
        return sum(run_child(make(i, c), env, ROOT)[0] for i, c in enumerate(clips))

    res["upstream_per_clip"] = total(lambda i, c: [sys.executable, str(HERE / "upstream_recipe.py"), str(c),
                                                   "--checkpoint", str(ckpt), "-o", str(work / f"many_up_{i}.npy")])
    res["exact_per_clip"] = total(lambda i, c: [*cli_command(), "features", str(c), "--checkpoint", str(ckpt),
                                                "-o", str(work / f"many_ours_{i}"), "--device", "cpu", "-q"])
    for p in ours_variants(onnx_path):
        weights = onnx_path if p == "onnx" else ckpt
        cmd = [*cli_command(), "features", *map(str, clips), "--checkpoint", str(weights), "-o",
               str(work / f"many_{p}"), "--device", "cpu", "--precision", p, "-q"]
        res[f"{p}_one_process"] = run_child(cmd, env, ROOT)[0]
    timed = ["exact_per_clip", *(f"{p}_one_process" for p in ours_variants(onnx_path))]
    res["ratios"] = {k: res["upstream_per_clip"] / res[k] for k in timed}
    return res


_LONG_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from synctalk_audio import pipeline
res = pipeline(sys.argv[1], checkpoint=sys.argv[2], device="cpu", precision=sys.argv[3])
n = res.frames.shape[0]
touch = sum(float(res.frames[i][0, 0, 0]) for i in range(n))  # hand out every frame (views)
print(json.dumps({"wall_s": time.perf_counter() - t0, "n_frames": int(n)}))
"""

_LONG_UPSTREAM_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[3])
import torch, upstream_recipe as up
model = up.load_model(torch.load(sys.argv[2]))
feats = up.features(sys.argv[1], model)
up.frames(feats)
print(json.dumps({"wall_s": time.perf_counter() - t0, "n_frames": int(feats.shape[0])}))
"""


def long_audio(minutes: float, ckpt: Path, env: dict[str, str], work: Path, with_upstream: bool,
               onnx_path: "Path | None") -> dict:
    path = tile_clip(CLIP, minutes * 60.0, work / f"speech_{minutes:g}min.flac")
    res = {"minutes": minutes, "file_mb": path.stat().st_size / 2**20}
    for precision in ours_variants(onnx_path):
        weights = onnx_path if precision == "onnx" else ckpt
        wall, mb, out = run_child([sys.executable, "-c", _LONG_CHILD, str(path), str(weights), precision], env, ROOT)
        res[precision] = {**json.loads(out.strip().splitlines()[-1]), "process_wall_s": wall, "maxrss_mb": mb}
    if with_upstream:
        wall, mb, out = run_child([sys.executable, "-c", _LONG_UPSTREAM_CHILD, str(path), str(ckpt), str(HERE)],
                                  env, ROOT)
        res["upstream"] = {**json.loads(out.strip().splitlines()[-1]), "process_wall_s": wall, "maxrss_mb": mb}
    return res


def gpu(clip: Path, repeats: int, state_dict: dict, up) -> dict | None:
    """Encoder throughput on CUDA: upstream DataLoader recipe vs ours (None without a GPU)."""
    import torch

    if not torch.cuda.is_available():
        return None
    import synctalk_audio as sa
    from synctalk_audio.encoder import load_encoder
    from synctalk_audio.engines import run_engine
    from synctalk_audio.torch_engines import prepare_encoder

    windows = np.asarray(sa.window(sa.melspectrogram(sa.load_audio(clip)), 25))
    windows = np.concatenate([windows] * 16)  # 12 minutes of windows: enough work for a GPU
    n = windows.shape[0]
    dev = torch.device("cuda")
    model = up.load_model(state_dict, dev)
    enc = load_encoder(state_dict, device="cpu")
    prepared = {p: prepare_encoder(enc, precision=p, device="cuda") for p in ("exact", "fast")}
    x = torch.from_numpy(windows).unsqueeze(1)

    def run_upstream():
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=64, shuffle=False)
        outs = []
        with torch.no_grad():
            for (batch,) in loader:
                outs.append(model(batch.to(dev)))
        return torch.cat(outs).cpu()

    variants = {"upstream": run_upstream}
    for p in ("exact", "fast"):
        variants[p] = (lambda q: lambda: run_engine(prepared[q], n, lambda lo, hi: windows[lo:hi]))(p)
    for fn in variants.values():
        fn()
        torch.cuda.synchronize()
    times = time_alternately(variants, repeats, sync=torch.cuda.synchronize)
    res = {"device": torch.cuda.get_device_name(0), "n_windows": n}
    for name, t in times.items():
        res[name] = {**stats(t), "windows_per_s": n / min(t)}
        if name != "upstream":
            res[name]["ratio_best"] = min(times["upstream"]) / min(t)
    return res


# --------------------------------------------------------------------------- report


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return f"{'PASS' if ok else 'MISS'} (target {'>=' if higher_is_better else '<='} {target:g})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant (default 5)")
    parser.add_argument("--cold-repeats", type=int, default=3, help="fresh processes per variant (default 3)")
    parser.add_argument("--long", action="store_true", help="also run a 1-hour file end to end")
    parser.add_argument("--skip", default="", help="comma list of sections to skip: warm,encoder,cold,many,long")
    parser.add_argument("--json", metavar="OUT", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))

    env = ensure_pkg_resources()
    sys.path.insert(0, str(HERE))
    import torch

    import upstream_recipe as up
    from synctalk_audio.encoder import seeded_state_dict

    m = machine()
    results: dict = {"machine": m, "load_avg_start": load_avg(), "torch": torch.__version__}
    print(f"machine: {m['model']}, {m['cores']} cores @ {m['mhz']:.0f} MHz ({m['mhz_source']}), torch "
          f"{torch.__version__}, {torch.get_num_threads()} torch threads, Python {m['python']}")
    print(f"float32 peak assumed: {m['cores']} cores x {m['mhz'] / 1000:.2f} GHz x {m['flops_per_cycle']} FLOP/cycle "
          f"({m['simd']}) = {m['peak_gflops']:.1f} GFLOP/s; bf16 units: {', '.join(m['bf16']) or 'none'}")
    print(f"load average at start: {results['load_avg_start']} (other processes on these cores inflate timings)")
    print("weights: seeded_state_dict(0) (untrained; same shapes and FLOPs as audio_visual_encoder.pth)\n")

    state_dict = seeded_state_dict(0)
    work = Path(tempfile.mkdtemp(prefix="synctalk-bench-"))
    ckpt = work / "seeded.pth"
    torch.save(state_dict, ckpt)
    onnx_path = export_onnx_model(state_dict, work)
    ours = ours_variants(onnx_path)
    if onnx_path is None:
        print("(onnx/onnxruntime not installed: the 'onnx' rows, --checkpoint X.onnx without torch, are skipped)\n")
    try:
        if "warm" not in skip:
            w = warm(CLIP, args.repeats, state_dict, up, onnx_path)
            results["warm"] = w
            print(f"[1] warm end to end, {CLIP.name} (45 s, {w['n_frames']} frames), {args.repeats} alternating runs")
            print(f"    {'':10s} {'median':>9s} {'best':>9s} {'x median':>9s} {'x best':>8s}  max|diff| vs upstream")
            print(f"    {'upstream':10s} {fmt_s(w['upstream']['median'])} {fmt_s(w['upstream']['best'])}")
            for p in ours:
                r = w[p]
                print(f"    {p:10s} {fmt_s(r['median'])} {fmt_s(r['best'])} {r['ratio_median']:8.2f}x "
                      f"{r['ratio_best']:7.2f}x  {r['max_abs_vs_upstream']:.3g} ({r['max_rel_vs_upstream']:.2g} of max)")
            for p in ours:
                print(f"    {p + ':':6s} {w['compute'][p]}")
            print(f"    exact {verdict(w['exact']['ratio_best'], TARGETS['warm_exact'])} (best-run ratio); "
                  f"fast {verdict(w['fast']['ratio_best'], TARGETS['warm_fast'])}\n")
        if "encoder" not in skip:
            e = encoder_only(CLIP, args.repeats, state_dict, up, m["peak_gflops"], onnx_path)
            results["encoder"] = e
            print(f"[2] encoder only, {e['n_windows']} windows x {e['gflop_per_window']:.4f} GFLOP "
                  f"(exact count of the 13 convs) = {e['gflop_total']:.1f} GFLOP")
            print(f"    {'':10s} {'median':>9s} {'best':>9s} {'windows/s':>10s} {'GFLOP/s':>8s} {'of peak':>8s} "
                  f"{'x best':>7s}")
            for name in ("upstream", *ours):
                r = e[name]
                ratio = f"{r['ratio_best']:6.2f}x" if "ratio_best" in r else ""
                print(f"    {name:10s} {fmt_s(r['median'])} {fmt_s(r['best'])} {r['windows_per_s']:10.0f} "
                      f"{r['gflops_best']:8.1f} {r['peak_fraction_best']:8.1%} {ratio:>7s}")
            print("    (fast runs bfloat16; its 'of peak' is against the float32 peak)\n")
        if "cold" not in skip:
            c = cold(CLIP, args.cold_repeats, ckpt, env, work, onnx_path)
            results["cold"] = c
            print(f"[3] cold start, fresh processes, {args.cold_repeats} alternating runs each: "
                  f"`{c['command']}` vs `python benchmarks/upstream_recipe.py CLIP --checkpoint CKPT -o OUT.npy`")
            print(f"    {'':10s} {'median':>9s} {'best':>9s} {'x median':>9s} {'x best':>8s} {'peak RSS':>9s}")
            for name in ("upstream", *ours):
                r = c[name]
                ratios = f"{r['ratio_median']:8.2f}x {r['ratio_best']:7.2f}x" if name != "upstream" else " " * 17
                print(f"    {name:10s} {fmt_s(r['median'])} {fmt_s(r['best'])} {ratios} {r['peak_rss_mb']:6.0f} MB")
            print("    output vs upstream script: " + ", ".join(
                f"{p} max|diff| {c[p]['max_abs_vs_upstream']:.3g} ({c[p]['max_rel_vs_upstream']:.2g} of max)"
                for p in ours))
            print("    " + ", ".join(f"{p} {verdict(c[p]['ratio_best'], TARGETS['cold'])}" for p in ours) + "\n")
        if "many" not in skip:
            mc = many_clips(12, 3.0, ckpt, env, work, onnx_path)
            results["many"] = mc
            print(f"[3b] a folder of {mc['n_clips']} clips of {mc['seconds_each']:g} s: one fresh process per clip vs "
                  "`synctalk-audio features CLIP1 CLIP2 … -o OUT` (one process, encoder loaded once)")
            print(f"    {'upstream script, a process per clip':44s} {mc['upstream_per_clip']:7.2f} s")
            print(f"    {'synctalk-audio exact, a process per clip':44s} {mc['exact_per_clip']:7.2f} s "
                  f"{mc['ratios']['exact_per_clip']:6.1f}x")
            for p in ours:
                key = f"{p}_one_process"
                print(f"    {'synctalk-audio ' + p + ', all clips in one process':44s} {mc[key]:7.2f} s "
                      f"{mc['ratios'][key]:6.1f}x")
            print()
        if "long" not in skip:
            lengths = [10.0] + ([60.0] if args.long else [])
            results["long"] = []
            for minutes in lengths:
                # upstream's AudDataset copies the whole mel for every window: quadratic in the
                # length (10 min already takes ~90 s here, 1 hour would take ~50 min), so the
                # 1-hour run is ours only.
                r = long_audio(minutes, ckpt, env, work, with_upstream=minutes <= 10, onnx_path=onnx_path)
                results["long"].append(r)
                print(f"[4] long audio: {minutes:g} min ({r['file_mb']:.1f} MB FLAC) end to end in a child process"
                      f"{'' if 'upstream' in r else ' (upstream skipped: quadratic in length)'}")
                for name in ("upstream", *ours):
                    if name in r:
                        q = r[name]
                        print(f"    {name:10s} {q['wall_s']:8.1f} s  ({q['n_frames']} frames)  peak RSS "
                              f"{q['maxrss_mb']:6.0f} MB")
                if minutes == 10.0:
                    print(f"    exact peak RSS {verdict(r['exact']['maxrss_mb'], TARGETS['rss_10min_mb'], False)}")
                print()
        g = gpu(CLIP, args.repeats, state_dict, up)
        results["gpu"] = g
        if g is None:
            print("[5] GPU: no CUDA device here; the CUDA paths (exact fp32 without TF32, fast fp16) are not measured")
        else:
            print(f"[5] GPU {g['device']}: encoder, {g['n_windows']} windows")
            for name in ("upstream", "exact", "fast"):
                r = g[name]
                ratio = f"{r['ratio_best']:.1f}x" if "ratio_best" in r else ""
                print(f"    {name:10s} {fmt_s(r['best'])} {r['windows_per_s']:10.0f} windows/s {ratio}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_avg_end"] = load_avg()
    print(f"load average at end: {results['load_avg_end']}; own peak RSS (this process, in-process runs): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
