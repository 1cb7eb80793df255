"""Performance against the upstream recipes, measured side by side on this machine.

    make bench                                   # set-up, then this script and benchmarks/bench_jobs.py
    .venv/bin/python benchmarks/bench.py --long  # + a 1-hour file end to end (a few minutes)
    .venv/bin/python benchmarks/bench.py --only hubert --hubert-layers 6   # one section, a smaller model

First it prints the CPU (lscpu model name, vendor and family), the flags it found (AMX,
AVX512-BF16, AVX-512, AVX2, FMA), the cores, and the float32 and bfloat16 peaks it assumes from
them: peak = cores x GHz x FLOP/cycle per core for the ISA (``ISA_FLOPS``: 64 float32 for
AVX-512 with two FMA units, 32 for AVX-512 on AMD Zen 4 and for AVX2+FMA; bfloat16 1024 with
AMX, 2x the float32 rate with AVX512-BF16), and beside them what ``torch.mm`` measures here.

Sections (each prints medians, best runs and ratios; ratio = upstream time / our time):

1. warm, 45 s speech clip, in one process: the upstream recipe (``upstream_recipe.py``:
   librosa 0.10.1, ``AudDataset`` through a ``DataLoader`` in batches of 64, the encoder
   forward, one ``get_audio_features(...).reshape(32, 16, 16)`` materialised per frame) and
   ``synctalk_audio.pipeline`` (exact, fast, and onnx — the same weights exported to ONNX and
   run by onnxruntime; then every frame handed out), run alternately on the same clip with the
   same weights; the outputs are compared.
2. encoder only, same windows: upstream ``model(batch of 64)`` vs our exact, fast and onnx paths:
   windows/s, GFLOP/s and the fraction of this CPU's peak (bfloat16 peak for the bfloat16 rows);
   on a bfloat16 CPU also the fast engine's float32 kernels, to check that bfloat16 is the
   faster choice here.
3. cold start: ``synctalk-audio features`` as a fresh process (``--checkpoint X.pth`` for exact
   and fast, ``--checkpoint X.onnx`` for onnx: no torch import) vs ``upstream_recipe.py`` as a
   fresh process (wall time and peak RSS of each child).
3b. many clips: 12 clips of 3 s, a fresh process per clip (upstream's script; our CLI) vs our
   CLI given all of them at once (``features A B C … -o OUT``: one process, encoder loaded once).
4. long audio: a 10-minute file (the clip tiled) end to end in a child process, peak RSS
   (``ru_maxrss``); ``--long`` adds a 1-hour file.
5. GPU (CUDA only).
6. the one-line call ``pipeline(path, checkpoint="x.pth", precision=p)`` in a fresh process:
   its first call, later calls (the engine cache), a prepared engine, and the cache cleared
   before every call, against upstream.
7. wenet: upstream's ``wenet_infer.py`` statements (``upstream_wenet.py``: torchaudio's
   ``kaldi.fbank`` + one ``session.run`` per window) vs ``pipeline(mode="wenet")`` on the same
   stand-in ``encoder.onnx``; the fbank alone against torchaudio's and kaldi-native-fbank's.
8. hubert: upstream's ``data_utils/hubert.py`` loop (``upstream_hubert.py``) vs
   ``pipeline(mode="hubert")`` exact and fast, the same random hubert-large-shaped weights
   (``--hubert-layers``, default 24 as large; a few minutes on 2 cores).

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

import bench_args  # noqa: E402
from bench_args import positive_float, positive_int  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
CLIP = HERE / "data" / "speech_45s.flac"
BENCH_SITE = Path(sys.prefix) / "bench-site"  # setuptools 69's pkg_resources, for librosa 0.10.1 (make bench)
TARGETS = {"warm_exact": 1.3, "warm_fast": 3.0, "cold": 3.0, "rss_10min_mb": 600.0, "hubert_exact": 1.0,
           "hubert_fast": 2.0}
SECTIONS = ("warm", "encoder", "cold", "many", "long", "hubert", "wenet", "oneline", "gpu")


# --------------------------------------------------------------------------- machine


def lscpu() -> dict[str, str]:
    """``lscpu`` as a dict (empty when it is not there)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True,
                              env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


#: FLOP per cycle per core, by instruction set (a fused multiply-add counts 2):
#:   float32 AVX-512, two 512-bit FMA units (Xeon Scalable Gold/Platinum, Sapphire Rapids,
#:           AMD Zen 5 server):                              16 lanes x 2 x 2 units =   64
#:   float32 AVX-512 on AMD Zen 4 (family 0x19: each 512-bit op runs as two 256-bit halves
#:           on its two 256-bit FMA pipes):                   8 lanes x 2 x 2 units =   32
#:   float32 AVX2 + FMA, two 256-bit units:                   8 lanes x 2 x 2 units =   32
#:   float32 SSE (no FMA), one add + one multiply pipe:       4 lanes x 2           =    8
#:   bfloat16 AMX (TDPBF16PS: 16x16x32 multiply-adds per 16 cycles per core):     = 1024
#:   bfloat16 AVX512-BF16 (VDPBF16PS: 2 products per float32 lane): 2 x the float32 AVX-512 rate
#:   bfloat16 without either: converted to float32, so the float32 rate.
#: Peak GFLOP/s = cores x GHz x FLOP/cycle. The clock is lscpu's max or /proc/cpuinfo's (a VM
#: shows the nominal clock, no turbo), so the fractions of peak are upper bounds.
ISA_FLOPS = {"avx512_2fma": 64, "avx512_zen4": 32, "avx2_fma": 32, "sse": 8, "amx_bf16": 1024}


def cpu_flags(info: dict[str, str]) -> set[str]:
    flags = set(info.get("Flags", "").split())
    if not flags and Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return flags


def peaks(flags: set[str], vendor: str, family: "int | None") -> dict:
    """float32 and bfloat16 FLOP/cycle/core this benchmark assumes from the CPU flags (see ISA_FLOPS)."""
    zen4 = vendor == "AuthenticAMD" and family == 0x19
    if "avx512f" in flags:
        key = "avx512_zen4" if zen4 else "avx512_2fma"
        fp32, how = ISA_FLOPS[key], ("AVX-512 on Zen 4 (2 x 256-bit FMA pipes): 8 lanes x 2 x 2" if zen4
                                     else "AVX-512, 2 FMA units: 16 lanes x 2 x 2")
    elif "avx2" in flags and "fma" in flags:
        fp32, how = ISA_FLOPS["avx2_fma"], "AVX2 FMA, 2 units: 8 lanes x 2 x 2"
    else:
        fp32, how = ISA_FLOPS["sse"], "SSE, no FMA: 4 lanes x 2"
    if "amx_bf16" in flags:
        bf16, bhow = ISA_FLOPS["amx_bf16"], "AMX-BF16 tiles: 1024"
    elif "avx512_bf16" in flags:
        bf16, bhow = 2 * fp32, f"AVX512-BF16 dot products: 2 x {fp32}"
    else:
        bf16, bhow = fp32, "no bfloat16 unit: the float32 rate"
    return {"fp32": fp32, "fp32_how": how, "bf16": bf16, "bf16_how": bhow}


def machine() -> dict:
    """CPU model, vendor, cores, clock, SIMD flags and the float32/bfloat16 peaks this benchmark assumes."""
    info = lscpu()
    flags = cpu_flags(info)
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
    vendor = info.get("Vendor ID", "")
    try:
        family = int(info.get("CPU family", ""))
    except ValueError:
        family = None
    fpc = peaks(flags, vendor, family)
    hz = (mhz or 0.0) * 1e6
    shown = [("AMX", "amx_bf16"), ("AVX512-BF16", "avx512_bf16"), ("AVX-512", "avx512f"), ("AVX2", "avx2"),
             ("FMA", "fma")]
    return {
        "model": info.get("Model name") or platform.processor() or platform.machine(),
        "vendor": vendor,
        "family": family,
        "cores": cores,
        "mhz": mhz,
        "mhz_source": mhz_src,
        "flags": {name: flag in flags for name, flag in shown},
        "flops_per_cycle": fpc["fp32"],
        "simd": fpc["fp32_how"],
        "bf16_flops_per_cycle": fpc["bf16"],
        "bf16_how": fpc["bf16_how"],
        "peak_gflops": cores * hz * fpc["fp32"] / 1e9,
        "peak_bf16_gflops": cores * hz * fpc["bf16"] / 1e9,
        "python": platform.python_version(),
    }


def gemm_rate(repeats: int = 8, n: int = 2048) -> dict:
    """What this CPU reaches on a large matrix product (torch.mm, all threads): float32 and bfloat16
    GFLOP/s, best of ``repeats`` alternating runs — a measured ceiling beside the assumed peak
    (best-of, so other load on the cores lowers it less than a mean would)."""
    import torch

    mats = {name: (torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype))
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    best = {name: float("inf") for name in mats}
    for name, (a, b) in mats.items():
        torch.mm(a, b)
    for _ in range(repeats):
        for name, (a, b) in mats.items():
            t0 = time.perf_counter()
            torch.mm(a, b)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: 2 * n ** 3 / t / 1e9 for name, t in best.items()}


# --------------------------------------------------------------------------- helpers


def ensure_pkg_resources(required: bool = True) -> "dict[str, str] | None":
    """Make ``import librosa`` (0.10.1 imports pkg_resources) work; return the env for children
    (``required=False``: None when it cannot, instead of exiting)."""
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
    if not required:
        return None
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


def fast_float32(enc):
    """The fast engine with its float32 kernels (BatchNorm folded, fused, channels-last) even on a
    bfloat16 CPU: what ``prepare_encoder`` would pick without AVX512-BF16/AMX."""
    from synctalk_audio import torch_engines

    saved = torch_engines.cpu_has_bf16
    torch_engines.cpu_has_bf16 = lambda: False
    try:
        return torch_engines.prepare_encoder(enc, precision="fast", device="cpu")
    finally:
        torch_engines.cpu_has_bf16 = saved


def encoder_only(clip: Path, repeats: int, state_dict: dict, up, m: dict, gemm: dict,
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
    bf16 = "bfloat16" in prepared["fast"].compute
    if bf16:  # measure the other kernel too: is bfloat16 really the faster one on this CPU?
        prepared["fast-fp32"] = fast_float32(enc)

    def run_upstream():
        with torch.no_grad():
            return torch.cat([model(x[i:i + 64]) for i in range(0, n, 64)])

    def run_ours(p):
        return lambda: run_engine(prepared[p], n, lambda lo, hi: windows[lo:hi])

    variants = {"upstream": run_upstream, **{p: run_ours(p) for p in prepared}}
    if onnx_path is not None:
        from synctalk_audio.runtime import load_onnx_encoder

        onnx_encoder = load_onnx_encoder(onnx_path, device="cpu")
        variants["onnx"] = lambda: run_engine(onnx_encoder, n, lambda lo, hi: windows[lo:hi])
    outputs = {name: fn() for name, fn in variants.items()}
    times = time_alternately(variants, repeats)
    flops = encoder_flops() * n
    exact = np.asarray(outputs["exact"])
    scale = float(np.abs(exact).max())
    res = {"n_windows": n, "gflop_per_window": encoder_flops() / 1e9, "gflop_total": flops / 1e9,
           "fast_compute": prepared["fast"].compute}
    for name, t in times.items():
        s = stats(t)
        half = name == "fast" and bf16
        peak = m["peak_bf16_gflops"] if half else m["peak_gflops"]
        ceiling = gemm.get("bf16" if half else "fp32")
        s["dtype"] = "bf16" if half else "fp32"
        s["windows_per_s"] = n / s["best"]
        s["gflops_best"] = flops / s["best"] / 1e9
        s["gflops_median"] = flops / s["median"] / 1e9
        s["peak_fraction_best"] = s["gflops_best"] / peak if peak else float("nan")
        s["peak_fraction_median"] = s["gflops_median"] / peak if peak else float("nan")
        s["gemm_fraction_best"] = s["gflops_best"] / ceiling if ceiling else float("nan")
        s["max_rel_vs_exact"] = float(np.abs(np.asarray(outputs[name]) - exact).max()) / scale
        if name != "upstream":
            s["ratio_median"] = statistics.median(times["upstream"]) / s["median"]
            s["ratio_best"] = min(times["upstream"]) / s["best"]
        res[name] = s
    if bf16:
        res["fast_kernel_speedup"] = res["fast-fp32"]["best"] / res["fast"]["best"]
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


def gpu(repeats: int, state_dict: dict, up) -> dict | None:
    """Encoder throughput on CUDA: upstream DataLoader recipe vs ours (None without a GPU).
    The same measurement as ``bench_gpu.py``'s first section, which has the other CUDA paths."""
    import torch

    if not torch.cuda.is_available():
        return None
    from bench_gpu import encoder_section

    return encoder_section(state_dict, up, repeats)


def write_large_hubert(path: Path, num_layers: int, seed: int = 0) -> Path:
    """A random HubertModel with facebook/hubert-large-ls960-ft's geometry (1024 hidden, 16 heads,
    4096 intermediate, conv_dim 512, 128-tap positional conv, stable layer norm), ``num_layers``
    layers (large: 24), saved with ``save_pretrained``. Untrained: same FLOPs, meaningless rows."""
    import torch
    from transformers import HubertConfig, HubertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" / "Loading weights" bars in the report
    config = HubertConfig(
        hidden_size=1024, num_hidden_layers=num_layers, num_attention_heads=16, intermediate_size=4096,
        conv_dim=[512] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2], conv_bias=True,
        feat_extract_norm="layer", feat_extract_activation="gelu", do_stable_layer_norm=True, hidden_act="gelu",
        layer_norm_eps=1e-5, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, vocab_size=32)
    torch.manual_seed(seed)
    HubertModel(config).eval().save_pretrained(path)
    return path


def hubert_section(clip: Path, repeats: int, num_layers: int, work: Path) -> dict:
    """hubert on the clip: upstream's loop (upstream_hubert.py) vs ours exact and fast, same weights."""
    import torch
    from transformers import HubertModel

    import synctalk_audio as sa
    import upstream_hubert as uh
    from synctalk_audio.engines import resolve_encoder

    t0 = time.perf_counter()
    model_dir = write_large_hubert(work / "hubert-large-shaped", num_layers)
    upstream_model = HubertModel.from_pretrained(model_dir, local_files_only=True).eval()
    engines = {p: resolve_encoder(str(model_dir), mode="hubert", precision=p, device="cpu") for p in ("exact", "fast")}
    setup_s = time.perf_counter() - t0
    processor = uh.make_processor()
    params = sum(p.numel() for p in upstream_model.parameters())

    short = work / "hubert_warmup.flac"  # first calls (library set-up) on 2 s, not on the clip
    tile_clip(clip, 2.0, short)
    uh.aud_hu(str(short), processor, upstream_model)
    for e in engines.values():
        sa.pipeline(short, mode="hubert", checkpoint=e)

    variants = {"upstream": lambda: uh.aud_hu(str(clip), processor, upstream_model),
                **{p: (lambda e: lambda: sa.pipeline(clip, mode="hubert", checkpoint=e).features)(e)
                   for p, e in engines.items()}}
    outputs: dict = {}
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            t1 = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - t1)
    ref = outputs["upstream"]
    scale = float(np.abs(ref).max())
    res = {"num_layers": num_layers, "params_m": params / 1e6, "setup_s": setup_s, "rows": list(ref.shape),
           "torch_threads": torch.get_num_threads(), "compute": {p: e.compute for p, e in engines.items()}}
    for name, t in times.items():
        res[name] = stats(t)
        if name != "upstream":
            res[name]["ratio_median"] = statistics.median(times["upstream"]) / res[name]["median"]
            res[name]["ratio_best"] = min(times["upstream"]) / res[name]["best"]
            res[name]["max_rel_vs_upstream"] = float(np.abs(outputs[name] - ref).max()) / scale
    exact = outputs["exact"]
    res["fast"]["max_rel_vs_exact"] = float(np.abs(outputs["fast"] - exact).max()) / float(np.abs(exact).max())
    return res


def upstream_site() -> Path:
    """Where ``make bench`` installs upstream's extra packages (never on sys.path as a whole)."""
    return Path(sys.prefix) / "bench-upstream"


def knf_fbank(pcm: np.ndarray) -> np.ndarray:
    """kaldi-native-fbank (Kaldi's C++ fbank) with upstream's options, one call over the whole signal."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = 16000
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = 80
    opts.energy_floor = 0.0
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(16000, pcm)
    fb.input_finished()
    return np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)]).astype(np.float32)


def wenet_section(clip: Path, repeats: int, work: Path) -> dict:
    """wenet on the clip: upstream's statements (torchaudio kaldi.fbank + a session.run per window)
    vs ours (numpy fbank + the same onnxruntime graph), and the fbank alone."""
    import onnxruntime as ort
    import torch

    import synctalk_audio as sa
    import upstream_wenet as uw
    from synctalk_audio.engines import resolve_encoder
    from synctalk_audio.kaldi_fbank import fbank
    from synctalk_audio.wenet import load_wenet_audio, wenet_features, wenet_pcm, write_standin_wenet_onnx

    site = upstream_site()
    res: dict = {}
    model = write_standin_wenet_onnx(work / "wenet_encoder.onnx")
    engine = resolve_encoder(str(model), mode="wenet", device="cpu")
    pcm = wenet_pcm(load_wenet_audio(clip))
    fbanks = {"ours": lambda: fbank(pcm)}
    variants = {"ours": lambda: wenet_features(load_wenet_audio(clip), engine),
                "ours+frames": lambda: sa.pipeline(clip, mode="wenet", checkpoint=engine).features}
    try:
        kaldi = uw.load_kaldi(site / "torchaudio")
    except FileNotFoundError as exc:
        kaldi, res["torchaudio_missing"] = None, str(exc)
    if kaldi is not None:
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        wave = torch.from_numpy(pcm).unsqueeze(0)
        fbanks["torchaudio"] = lambda: uw.fbank(wave, kaldi)[0].numpy()
        variants = {"upstream": lambda: uw.aud_wenet(str(clip), session, kaldi), **variants}
    if (site / "knf" / "kaldi_native_fbank").is_dir():
        sys.path.append(str(site / "knf"))
    try:
        import kaldi_native_fbank  # noqa: F401

        fbanks["kaldi-native-fbank"] = lambda: knf_fbank(pcm)
    except ImportError:
        res["knf_missing"] = True
    fb_out = {name: fn() for name, fn in fbanks.items()}
    outputs = {name: fn() for name, fn in variants.items()}
    fb_times = time_alternately(fbanks, repeats)
    times = time_alternately(variants, repeats)
    ref_fb = fb_out.get("torchaudio", fb_out["ours"])
    res["n_fbank_frames"] = int(fb_out["ours"].shape[0])
    res["n_rows"] = int(outputs["ours"].shape[0])
    res["fbank"] = {name: {**stats(t), "max_abs_vs_torchaudio": float(np.abs(fb_out[name] - ref_fb).max())}
                    for name, t in fb_times.items()}
    res["features"] = {name: stats(t) for name, t in times.items()}
    if "upstream" in outputs:
        ref = outputs["upstream"]
        for ours_key in ("ours", "ours+frames"):
            res["features"][ours_key]["max_rel_vs_upstream"] = float(np.abs(outputs[ours_key] - ref).max()) / float(
                np.abs(ref).max())
        for key, ours_key in (("fbank", "ours"), ("features", "ours"), ("features", "ours+frames")):
            base = "torchaudio" if key == "fbank" else "upstream"
            r = res[key][ours_key]
            r["ratio_best"] = res[key][base]["best"] / r["best"]
            r["ratio_median"] = res[key][base]["median"] / r["median"]
    if "kaldi-native-fbank" in res["fbank"]:
        r = res["fbank"]["ours"]
        r["ratio_vs_knf_best"] = res["fbank"]["kaldi-native-fbank"]["best"] / r["best"]
    res["encoder"] = engine.compute
    return res


_ONELINE_CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[4])
t0 = time.perf_counter()
import synctalk_audio as sa
from synctalk_audio.encoder import load_encoder
from synctalk_audio.engines import _cached_file_engine
from synctalk_audio.torch_engines import prepare_encoder
clip, ckpt, precision, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[5])

def frames(res):
    return sum(float(res.frames[i][0, 0, 0]) for i in range(res.frames.shape[0]))

t1 = time.perf_counter()
frames(sa.pipeline(clip, checkpoint=ckpt, device="cpu", precision=precision))
out = {"import_s": t1 - t0, "first_call_s": time.perf_counter() - t1}
prepared = prepare_encoder(load_encoder(ckpt, device="cpu"), precision=precision, device="cpu")
import upstream_recipe as up, torch
model = up.load_model(torch.load(ckpt))
def uncached():
    _cached_file_engine.cache_clear()
    frames(sa.pipeline(clip, checkpoint=ckpt, device="cpu", precision=precision))
variants = {
    "upstream": lambda: up.frames(up.features(clip, model)),
    "one-line": lambda: frames(sa.pipeline(clip, checkpoint=ckpt, device="cpu", precision=precision)),
    "prepared": lambda: frames(sa.pipeline(clip, checkpoint=prepared, device="cpu")),
    "uncached": uncached,
}
variants["upstream"]()
variants["prepared"]()
times = {k: [] for k in variants}
for _ in range(repeats):
    for k, fn in variants.items():
        t = time.perf_counter(); fn(); times[k].append(time.perf_counter() - t)
out["times"] = times
print(json.dumps(out))
"""


def oneline_section(clip: Path, ckpt: Path, env: dict[str, str], repeats: int) -> dict:
    """``pipeline(path, checkpoint="x.pth", precision=p)`` as a user calls it once per file, in a fresh
    process: its first call, its later calls (the engine cache), a prepared engine, the cache cleared
    before each call (load + fold + re-pack + probe every time), and upstream, alternately."""
    res = {}
    for precision in ("exact", "fast"):
        _, _, out = run_child([sys.executable, "-c", _ONELINE_CHILD, str(clip), str(ckpt), precision, str(HERE),
                               str(repeats)], env, ROOT)
        info = json.loads(out.strip().splitlines()[-1])
        times = info.pop("times")
        r = {**info, **{k: stats(t) for k, t in times.items()}}
        for k in ("one-line", "prepared", "uncached"):
            r[k]["ratio_best"] = min(times["upstream"]) / r[k]["best"]
            r[k]["ratio_median"] = statistics.median(times["upstream"]) / r[k]["median"]
        r["first_call_ratio"] = min(times["upstream"]) / info["first_call_s"]
        res[precision] = r
    return res


# --------------------------------------------------------------------------- report


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return f"{'PASS' if ok else 'MISS'} (target {'>=' if higher_is_better else '<='} {target:g})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed runs per variant (default 5)")
    parser.add_argument("--cold-repeats", type=positive_int, default=3, help="fresh processes per variant (default 3)")
    parser.add_argument("--long", action="store_true", help="also run a 1-hour file end to end")
    parser.add_argument("--skip", default="",
                        help="comma list of sections to skip: " + ",".join(SECTIONS))
    parser.add_argument("--only", default="", help="comma list of the only sections to run")
    parser.add_argument("--hubert-layers", type=positive_int, default=24,
                        help="transformer layers of the hubert-large-shaped random model (default 24, as large)")
    parser.add_argument("--hubert-repeats", type=positive_int, default=2,
                        help="alternating timed runs per hubert variant on the 45 s clip (default 2)")
    parser.add_argument("--ghz", type=positive_float, help="clock for the peak (default lscpu's max or /proc/cpuinfo's MHz; "
                        "a VM shows the nominal clock, not the turbo one)")
    parser.add_argument("--json", metavar="OUT", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    only = set(filter(None, args.only.split(",")))
    if only:
        skip |= set(SECTIONS) - only
    unknown = (skip | only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; expected {', '.join(SECTIONS)}")

    env = ensure_pkg_resources()
    sys.path.insert(0, str(HERE))
    import torch

    import upstream_recipe as up
    from synctalk_audio.encoder import seeded_state_dict

    m = machine()

    def head(text: str) -> None:
        """A section's first line, with the CPU it ran on (every figure names its machine)."""
        print(f"{text}  [{m['model']}]")

    if args.ghz:
        m["mhz"], m["mhz_source"] = args.ghz * 1000, "--ghz"
        m["peak_gflops"] = m["cores"] * args.ghz * m["flops_per_cycle"]
        m["peak_bf16_gflops"] = m["cores"] * args.ghz * m["bf16_flops_per_cycle"]
    gemm = gemm_rate()
    results: dict = {"machine": m, "gemm_gflops": gemm, "load_avg_start": load_avg(), "torch": torch.__version__}
    found = [name for name, ok in m["flags"].items() if ok]
    print(f"machine: {m['model']} ({m['vendor']}, family {m['family']}), {m['cores']} cores @ {m['mhz']:.0f} MHz "
          f"({m['mhz_source']}), torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"Python {m['python']}")
    print(f"flags found: {', '.join(found) or 'none'}; not found: "
          f"{', '.join(n for n, ok in m['flags'].items() if not ok) or 'none'}")
    ghz = m["mhz"] / 1000
    print(f"peak assumed = cores x GHz x FLOP/cycle: float32 {m['cores']} x {ghz:.2f} x {m['flops_per_cycle']} "
          f"({m['simd']}) = {m['peak_gflops']:.1f} GFLOP/s; bfloat16 {m['cores']} x {ghz:.2f} x "
          f"{m['bf16_flops_per_cycle']} ({m['bf16_how']}) = {m['peak_bf16_gflops']:.1f} GFLOP/s")
    print(f"measured torch.mm 2048^3 (best of 8): float32 {gemm['fp32']:.1f} GFLOP/s "
          f"({gemm['fp32'] / m['peak_gflops']:.0%} of its peak), bfloat16 {gemm['bf16']:.1f} GFLOP/s "
          f"({gemm['bf16'] / m['peak_bf16_gflops']:.0%} of its peak)"
          )
    print("fractions of peak above 100 % below mean the cores run above the clock shown (turbo; a VM shows the "
          "nominal clock): read them as upper bounds, or give the real clock with --ghz")
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
            head(f"[1] warm end to end, {CLIP.name} (45 s, {w['n_frames']} frames), {args.repeats} alternating runs")
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
            e = encoder_only(CLIP, args.repeats, state_dict, up, m, gemm, onnx_path)
            results["encoder"] = e
            head(f"[2] encoder only, {e['n_windows']} windows x {e['gflop_per_window']:.4f} GFLOP "
                  f"(exact count of the 13 convs) = {e['gflop_total']:.1f} GFLOP; load {load_avg()}")
            print(f"    {'':10s} {'median':>9s} {'best':>9s} {'windows/s':>10s} {'GFLOP/s':>8s} {'of peak':>8s} "
                  f"{'of GEMM':>8s} {'x best':>7s}  rel. diff vs exact")
            names = ["upstream", "exact", "fast"] + [k for k in ("fast-fp32", "onnx") if k in e]
            for name in names:
                r = e[name]
                ratio = f"{r['ratio_best']:6.2f}x" if "ratio_best" in r else ""
                print(f"    {name:10s} {fmt_s(r['median'])} {fmt_s(r['best'])} {r['windows_per_s']:10.0f} "
                      f"{r['gflops_best']:8.1f} {r['peak_fraction_best']:8.1%} {r['gemm_fraction_best']:8.1%} "
                      f"{ratio:>7s}  {r['max_rel_vs_exact']:.2g}  ({r['dtype']})")
            print("    'of peak': of the assumed float32 peak, for bf16 rows of the bfloat16 peak; 'of GEMM': of "
                  "the measured torch.mm rate in that dtype")
            if "fast_kernel_speedup" in e:
                print(f"    fast kernel on this CPU: bfloat16 is {e['fast_kernel_speedup']:.2f}x its float32 kernels "
                      f"(BatchNorm folded, fused) -> prepare_encoder's bfloat16 choice "
                      f"{'holds' if e['fast_kernel_speedup'] > 1 else 'is WRONG here'}")
            print()
        if "cold" not in skip:
            c = cold(CLIP, args.cold_repeats, ckpt, env, work, onnx_path)
            results["cold"] = c
            head(f"[3] cold start, fresh processes, {args.cold_repeats} alternating runs each: "
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
            head(f"[3b] a folder of {mc['n_clips']} clips of {mc['seconds_each']:g} s: one fresh process per clip vs "
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
                head(f"[4] long audio: {minutes:g} min ({r['file_mb']:.1f} MB FLAC) end to end in a child process"
                      f"{'' if 'upstream' in r else ' (upstream skipped: quadratic in length)'}")
                for name in ("upstream", *ours):
                    if name in r:
                        q = r[name]
                        print(f"    {name:10s} {q['wall_s']:8.1f} s  ({q['n_frames']} frames)  peak RSS "
                              f"{q['maxrss_mb']:6.0f} MB")
                if minutes == 10.0:
                    print(f"    exact peak RSS {verdict(r['exact']['maxrss_mb'], TARGETS['rss_10min_mb'], False)}")
                print()
        if "oneline" not in skip:
            o = oneline_section(CLIP, ckpt, env, args.repeats)
            results["oneline"] = o
            head(f"[6] the one-line call `pipeline(CLIP, checkpoint=\"x.pth\", precision=P)` in a fresh process, "
                  f"{args.repeats} alternating runs; load {load_avg()}")
            print(f"    {'':22s} {'median':>9s} {'best':>9s} {'x median':>9s} {'x best':>8s}  (x = upstream / it)")
            for p, r in o.items():
                print(f"    {p + ' first call':22s} {fmt_s(r['first_call_s'])} {'':9s} {'':9s} {r['first_call_ratio']:7.2f}x"
                      f"  (after import {r['import_s']:.2f} s: load, prepare, kernel set-up)")
                for k, label in (("one-line", "one-line, later calls"), ("prepared", "prepared engine"),
                                 ("uncached", "cache cleared each call")):
                    q = r[k]
                    print(f"    {p + ' ' + label:22s} {fmt_s(q['median'])} {fmt_s(q['best'])} "
                          f"{q['ratio_median']:8.2f}x {q['ratio_best']:7.2f}x")
                print(f"    {'upstream':22s} {fmt_s(r['upstream']['median'])} {fmt_s(r['upstream']['best'])}")
            print()
        if "wenet" not in skip:
            wn = wenet_section(CLIP, args.repeats, work)
            results["wenet"] = wn
            head(f"[7] wenet, {CLIP.name}: {wn['n_fbank_frames']} fbank frames, {wn['n_rows']} rows; encoder: the "
                  f"UNTRAINED stand-in encoder.onnx ({wn['encoder']}); load {load_avg()}")
            if "torchaudio_missing" in wn:
                print(f"    (upstream skipped: {wn['torchaudio_missing']})")
            print(f"    {'':34s} {'median':>9s} {'best':>9s} {'x median':>9s} {'x best':>8s}  max|diff|")
            for name, r in wn["fbank"].items():
                ratio = (f"{r['ratio_median']:8.2f}x {r['ratio_best']:7.2f}x" if "ratio_best" in r else " " * 17)
                print(f"    {'fbank, ' + name:34s} {fmt_s(r['median'])} {fmt_s(r['best'])} {ratio}  "
                      f"{r['max_abs_vs_torchaudio']:.3g}")
            for name, r in wn["features"].items():
                label = {"upstream": "aud_wenet, upstream wenet_infer.py", "ours": "aud_wenet, ours (wenet_features)",
                         "ours+frames": "ours, pipeline() (+ per-frame views)"}[name]
                ratio = (f"{r['ratio_median']:8.2f}x {r['ratio_best']:7.2f}x" if "ratio_best" in r else " " * 17)
                diff = f"{r['max_rel_vs_upstream']:.2g} of max" if "max_rel_vs_upstream" in r else ""
                print(f"    {label:34s} {fmt_s(r['median'])} {fmt_s(r['best'])} {ratio}  {diff}")
            print("    (the encoder is the same onnxruntime graph, one window per run, on both sides: with the real\n"
                  "     encoder.onnx its time adds equally to both and the ratio moves toward 1)\n")
        if "hubert" not in skip:
            h = hubert_section(CLIP, args.hubert_repeats, args.hubert_layers, work)
            results["hubert"] = h
            head(f"[8] hubert, {CLIP.name}: random hubert-large-shaped HubertModel, {h['num_layers']} layers "
                  f"({h['params_m']:.0f} M parameters; large has 24), rows {tuple(h['rows'])}, "
                  f"{args.hubert_repeats} alternating runs; load {load_avg()}")
            print(f"    {'':10s} {'median':>9s} {'best':>9s} {'x median':>9s} {'x best':>8s}  max|diff| / max|upstream|")
            print(f"    {'upstream':10s} {fmt_s(h['upstream']['median'])} {fmt_s(h['upstream']['best'])}")
            for p in ("exact", "fast"):
                r = h[p]
                print(f"    {p:10s} {fmt_s(r['median'])} {fmt_s(r['best'])} {r['ratio_median']:8.2f}x "
                      f"{r['ratio_best']:7.2f}x  {r['max_rel_vs_upstream']:.2g}")
            for p in ("exact", "fast"):
                print(f"    {p + ':':6s} {h['compute'][p]}")
            print(f"    max|fast - exact| / max|exact| = {h['fast']['max_rel_vs_exact']:.3g}")
            print(f"    exact {verdict(h['exact']['ratio_best'], TARGETS['hubert_exact'])}; fast "
                  f"{verdict(h['fast']['ratio_best'], TARGETS['hubert_fast'])} (best-run ratios)\n")
        g = gpu(args.repeats, state_dict, up) if "gpu" not in skip else None
        results["gpu"] = g
        if "gpu" in skip:
            pass
        elif g is None:
            print("[5] GPU: no CUDA device here; the CUDA paths (exact fp32 without TF32, fast fp16) are not measured")
        else:
            head(f"[5] GPU {g['device']}: encoder, {g['n_windows']} windows (more in benchmarks/bench_gpu.py)")
            for name in ("upstream", "exact", "fast"):
                r = g[name]
                ratio = f"{r['ratio_best']:.1f}x" if "ratio_best" in r else ""
                print(f"    {name:10s} {fmt_s(r['best_s'])} {r['windows_per_s']:10.0f} windows/s {ratio:>6s}  rows "
                      f"{r['max_rel_vs_cpu_exact']:.2g} of max off the CPU's exact")
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
    sys.exit(bench_args.run(main, "bench"))
