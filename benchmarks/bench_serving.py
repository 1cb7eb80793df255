"""Serving benchmark: how many real-time users one StreamPool serves, exact and fast.

Simulates N users talking at once: each pushes 20 ms of real speech (benchmarks/data/
speech_45s.flac, a random offset per user) every 20 ms, starting at a random phase, and the
server runs one ``pool.push`` per 20 ms tick for all of them, paced in real time. A run passes
when the p99 wall time of a tick is under 20 ms and the process CPU time stays under the cores
available. The largest passing N is found by doubling, then bisection, with short runs.

Three pool modes are measured: ``overlap=0`` (a push encodes its windows before it returns),
``overlap=1`` (a push starts encoding its windows in the background and returns the previous
push's frames: one tick later) and ``overlap=2`` (two pushes in flight: a heavy tick's encoding
may run into the next tick; frames two ticks later). Beside the tick time, the delay of the
frames: from the start of the tick whose audio completed them (the stream's ``needed_samples``)
until the push that returned them ended (p99).

Beside it: the CPU time per output video frame of the pool, and the floor — the encoder's own
CPU cost per window in large batches (the engine's batch size, one thread), measured in the
same run — with their ratio (issue 14's target: <= 1.15).

    .venv/bin/python benchmarks/bench_serving.py                    # exact and fast, three pool modes, ~10 min
    .venv/bin/python benchmarks/bench_serving.py --precision exact --overlap 2
    .venv/bin/python benchmarks/bench_serving.py --checkpoint encoder.onnx   # onnxruntime

The machine (CPU model, cores, load average) is printed with every figure: other processes on
the same cores inflate them.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_args import checkpoint, existing_file, positive_float, positive_int, run  # noqa: E402
from bench_stream import cpu_model, upstream_ms_per_frame  # noqa: E402

DEFAULT_AUDIO = ROOT / "benchmarks" / "data" / "speech_45s.flac"
TICK = 320          # 20 ms at 16 kHz
TICK_S = 0.020
#: Issue 14's targets on the 2-core AMD EPYC (Zen 4): real-time streams, and pooled CPU / floor.
TARGETS = {"exact": 28, "fast": 64, "onnx": None}
RATIO_TARGET = 1.15


def steal_ticks() -> int:
    """CPU time the hypervisor gave to other guests (/proc/stat 'steal', all CPUs, in clock ticks; 0 if unknown)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        return int(fields[8]) if fields[0] == "cpu" and len(fields) > 8 else 0
    except (OSError, ValueError):
        return 0


def cpus_available() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def speech_windows(wav: np.ndarray, n_windows: int = 512) -> np.ndarray:
    """The floor's windows: the first ``n_windows`` mel windows of ``wav[:30 s]``, float32
    (n_windows, 80, 16); a short clip's windows again to fill them. The time of a float32
    convolution depends on the values (near-silent windows run slower): every figure set
    beside the floor uses these."""
    import synctalk_audio as sa

    windows = np.asarray(sa.window(sa.melspectrogram(wav[: 16000 * 30])), dtype=np.float32)[:n_windows]
    return windows if windows.shape[0] == n_windows else np.resize(windows, (n_windows, *windows.shape[1:]))


def floor_ms(engine, wav: np.ndarray, n_windows: int = 512, batch_size: "int | None" = None) -> float:
    """The encoder's CPU ms per window on real speech windows, one thread, best of 3.

    ``batch_size`` None: the engine's own batches (the floor); 1: one window per call, as a
    single stream runs it.
    """
    from synctalk_audio.engines import run_engine

    windows = speech_windows(wav, n_windows)
    if batch_size == 1:
        windows = windows[: n_windows // 4]
    threads = None if engine.precision == "onnx" else 1
    opts = dict(batch_size=batch_size, threads=threads)
    run_engine(engine, 64, lambda lo, hi: windows[lo:hi], **opts)  # warm-up
    best = float("inf")
    for _ in range(3):
        c = time.process_time()
        run_engine(engine, windows.shape[0], lambda lo, hi: windows[lo:hi], **opts)
        best = min(best, (time.process_time() - c) * 1000 / windows.shape[0])
    return best


def simulate(pool, wav: np.ndarray, n_users: int, seconds: float, rng: np.random.Generator,
             warmup: float = 0.8, pace: bool = True) -> dict:
    """N users through ``pool``, one tick per 20 ms (``pace``: in real time, else back to back);
    tick timings over ``seconds`` of audio after a warm-up."""
    offsets = rng.integers(0, wav.shape[0], n_users)
    phases = rng.integers(0, 2 * TICK, n_users)  # first chunk 0 … 39 ms: windows land on both tick parities
    looped = np.concatenate([wav, wav])
    pos = [0] * n_users
    keys = [f"user{i}" for i in range(n_users)]
    n_warm, n_ticks = int(round(warmup / TICK_S)), int(round(seconds / TICK_S))
    walls, frames, delays = [], 0, []
    cpu0 = wall0 = None
    # frame delay: frame j of a user is complete once its input reaches needed_samples(j); the
    # delay runs from the start of the tick that brought that sample to the end of the push that
    # returned the frame (whatever the pool mode)
    needed = pool._geo.needed_samples
    pushed: list[list[int]] = [[] for _ in range(n_users)]  # each user's samples after each tick
    received = [0] * n_users
    starts: list[float] = []
    next_tick = time.perf_counter()
    for t in range(n_warm + n_ticks):
        chunks = {}
        for i, key in enumerate(keys):
            n = int(phases[i]) if t == 0 else TICK
            lo = (int(offsets[i]) + pos[i]) % wav.shape[0]
            chunks[key] = looped[lo:lo + n]
            pos[i] += n
        if t == n_warm:
            cpu0, wall0, steal0 = time.process_time(), time.perf_counter(), steal_ticks()
        for i in range(n_users):
            pushed[i].append(pos[i])
        start = time.perf_counter()
        out = pool.push(chunks)
        end = time.perf_counter()
        starts.append(start)
        for i, key in enumerate(keys):
            k = out[key].shape[0] if key in out else 0
            for j in range(received[i], received[i] + k):
                if t >= n_warm:
                    delays.append(end - starts[bisect.bisect_left(pushed[i], needed(j))])
            received[i] += k
            frames += k if t >= n_warm else 0
        if t >= n_warm:
            walls.append(end - start)
        next_tick += TICK_S
        delay = next_tick - time.perf_counter()
        if delay > 0 and pace:
            time.sleep(delay)
        elif delay <= 0:
            next_tick = time.perf_counter()  # behind: no catching up in a burst
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    steal = (steal_ticks() - steal0) / os.sysconf("SC_CLK_TCK") / (wall * cpus_available())
    for key in keys:
        pool.reset(key)
    walls_ms = 1000.0 * np.asarray(walls)
    return {"users": n_users, "ticks": n_ticks, "p50_ms": float(np.percentile(walls_ms, 50)),
            "p99_ms": float(np.percentile(walls_ms, 99)), "max_ms": float(walls_ms.max()),
            "delay_p99_ms": float(np.percentile(1000.0 * np.asarray(delays), 99)) if delays else 0.0,
            "cpu_cores": cpu / wall, "steal": steal, "frames": frames, "cpu_ms_per_frame": 1000.0 * cpu / max(frames, 1)}


def passes(run: dict, cores: int) -> bool:
    return run["p99_ms"] < 1000 * TICK_S and run["cpu_cores"] < cores


def users_rng(seed: int, n_users: int) -> np.random.Generator:
    """The draw of N users' offsets and start phases: the same for every pool mode and encoder
    at the same N, so that modes are compared on the same users (how the phases split the users
    between even and odd ticks moves a result more than most code changes)."""
    return np.random.default_rng([seed, n_users])


def search(pool, wav: np.ndarray, seconds: float, cores: int, seed: int, *, start: int = 8,
           limit: int = 1024, log=print) -> tuple["dict | None", list[dict]]:
    """Largest passing N: doubling from ``start``, then bisection to within ~6 %."""
    runs: list[dict] = []

    def trial(n: int) -> bool:
        run = simulate(pool, wav, n, seconds, users_rng(seed, n))
        run["pass"] = passes(run, cores)
        run["load"] = os.getloadavg()[0]
        runs.append(run)
        log(f"    N={n:4d}: tick p50 {run['p50_ms']:6.2f}  p99 {run['p99_ms']:6.2f} ms, frame delay p99 "
            f"{run['delay_p99_ms']:6.2f} ms, CPU {run['cpu_cores']:.2f} cores, "
            f"{run['cpu_ms_per_frame']:.3f} CPU-ms/frame, load {run['load']:.2f}, steal {100 * run['steal']:.0f} % "
            f"→ {'pass' if run['pass'] else 'FAIL'}")
        return run["pass"]

    good, bad = 0, None
    n = start
    while n <= limit:
        if trial(n):
            good, n = n, 2 * n
        else:
            bad = n
            break
    if good == 0:
        return None, runs
    while bad is not None and bad - good > max(2, good // 16):
        mid = (good + bad) // 2
        if trial(mid):
            good = mid
        else:
            bad = mid
    best = max((r for r in runs if r["pass"] and r["users"] == good), key=lambda r: r["ticks"])
    return best, runs


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=existing_file, default=str(DEFAULT_AUDIO))
    parser.add_argument("--checkpoint", type=checkpoint, default="seeded",
                        help="'seeded' (default), a .pth, or an exported .onnx (runs the onnx engine only)")
    parser.add_argument("--precision", action="append", choices=["exact", "fast"],
                        help="repeatable; default exact and fast")
    parser.add_argument("--seconds", type=positive_float, default=5.0,
                        help="measured seconds per trial (default 5: 250 ticks, so the p99 is not one stray tick)")
    parser.add_argument("--threads", type=positive_int, default=None, help="pool threads (default: the cores available)")
    parser.add_argument("--overlap", type=int, action="append", choices=range(5),
                        help="StreamPool(overlap=N): pushes in flight (repeatable; default 0, 1 and 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import synctalk_audio as sa
    from synctalk_audio.engines import resolve_encoder
    from synctalk_audio.runtime import is_onnx_model

    cores = cpus_available()
    threads = args.threads or cores
    wav = sa.load_audio(args.audio)
    say = (lambda *a, **k: None) if args.json else print
    say(f"machine: {cpu_model()}, {cores} CPUs available, load average {os.getloadavg()[0]:.2f}; "
        f"pool threads {threads}; ticks of 20 ms paced in real time, {args.seconds:g} s measured per trial")
    if is_onnx_model(args.checkpoint):
        engines = {"onnx": resolve_encoder(args.checkpoint, device="cpu", threads=threads)}
        floor_engines = {"onnx": resolve_encoder(args.checkpoint, device="cpu", threads=1)}
    else:
        from synctalk_audio.encoder import load_encoder, seeded_state_dict

        weights = seeded_state_dict(0) if args.checkpoint == "seeded" else args.checkpoint
        module = load_encoder(weights, device="cpu")
        engines = {p: resolve_encoder(module, precision=p, device="cpu") for p in (args.precision or ["exact", "fast"])}
        floor_engines = engines
    results = {}
    modes = args.overlap or [0, 1, 2]
    # upstream's own recipe, offline on 30 s of the same speech: the per-frame CPU a server pays with
    # its code at best (it cannot stream), measured in this run
    upstream = upstream_ms_per_frame(wav[: 16000 * 30], args.checkpoint)
    upstream_users = int(cores * 1000 / (25 * upstream)) if upstream else None
    say("upstream's recipe, offline (cannot stream): " + (f"{upstream:.3f} CPU-ms per frame; its CPU cost would "
        f"allow {upstream_users} users" if upstream else "not measured (an .onnx, or no librosa 0.10.1: make bench)"))
    for name, engine in engines.items():
        floor = floor_ms(floor_engines[name], wav)
        say(f"{name}: encoder floor {floor:.3f} CPU-ms per window (batches of {floor_engines[name].batch_size}, "
            f"1 thread; {engine.compute})")
        for overlap in modes:
            label = f"{name} overlap={overlap}"
            say(f"  StreamPool(precision={name!r}, overlap={overlap}):")
            pool = sa.StreamPool(checkpoint=engine, device="cpu", threads=None if name == "onnx" else threads,
                                 overlap=overlap)
            # CPU cost at a load near the target, ticks back to back: what the pool costs per frame
            n_probe = 2 * (TARGETS[name] or 32)
            probe = simulate(pool, wav, n_probe, min(args.seconds, 1.0), users_rng(args.seed, n_probe), pace=False)
            say(f"    N={n_probe:4d}, ticks back to back: {probe['cpu_ms_per_frame']:.3f} CPU-ms per frame")
            best, runs = search(pool, wav, args.seconds, cores, args.seed, log=say)
            pool.close()
            floor = min(floor, floor_ms(floor_engines[name], wav))
            per_frame = probe["cpu_ms_per_frame"]
            results[label] = {"precision": name, "overlap": overlap, "floor_ms_per_window": floor,
                              "best": best,
                              "runs": runs, "target_users": TARGETS[name], "probe": probe, "ratio": per_frame / floor,
                              # users whose frames (25 per second each) the cores can compute: cores·1000 / (25·ms)
                              "cpu_capacity_users": int(cores * 1000 / (25 * per_frame))}
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"cpu_model": cpu_model(), "cpus": cores, "threads": threads, "load_average": load,
                          "upstream_offline_cpu_ms_per_frame": upstream, "upstream_cpu_capacity_users": upstream_users,
                          "results": results}, indent=2))
        return 0
    print(f"\nresult on {cpu_model()} ({cores} CPUs, load average now {load:.2f}; other processes on these "
          f"cores lower every figure):")
    print(f"  {'encoder':22s} {'real-time users':>15s} {'p99 tick':>9s} {'frame delay':>11s} {'CPU-ms/frame':>13s} "
          f"{'floor':>7s} {'ratio':>6s} {'CPU capacity':>13s}  targets")
    for name, r in results.items():
        b = r["best"]
        users = b["users"] if b else 0
        p99 = f"{b['p99_ms']:7.2f}ms" if b else "      -  "
        delay = f"{b['delay_p99_ms']:9.2f}ms" if b else "        -  "
        target = (f">= {r['target_users']} users" if r["target_users"] else "")
        ratio_ok = r["ratio"] <= RATIO_TARGET
        users_ok = r["target_users"] is None or users >= r["target_users"]
        print(f"  {name:22s} {users:15d} {p99:>9s} {delay:>11s} {r['probe']['cpu_ms_per_frame']:13.3f} "
              f"{r['floor_ms_per_window']:7.3f} "
              f"{r['ratio']:6.2f} {r['cpu_capacity_users']:8d} users  ratio <= {RATIO_TARGET}: "
              f"{'met' if ratio_ok else 'NOT met'}" + (f"; {target}: {'met' if users_ok else 'NOT met'}" if target else ""))
    print("  real-time users: largest N with p99 tick < 20 ms and CPU < cores, ticks paced in real time; frame delay: "
          "p99 from the start of the tick that completed a frame's audio (needed_samples) to the end of the push "
          "returning it; "
          f"CPU-ms/frame at N = 2 × target, ticks back to back; CPU capacity = {cores} cores / that cost")
    if upstream:
        print(f"  upstream's recipe (offline on 30 s of the same speech; it cannot stream): {upstream:.3f} CPU-ms per "
              f"frame, so at best {upstream_users} users' worth of CPU; real-time users ÷ that: "
              + ", ".join(f"{name} {(r['best']['users'] if r['best'] else 0) / upstream_users:.2f}×"
                          for name, r in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "bench_serving"))
