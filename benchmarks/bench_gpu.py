"""GPU benchmark: every CUDA path against the upstream recipe run on the same GPU in the same run.

Sections (ratio = upstream time / ours; the weights are untrained stand-ins, same shapes and
FLOPs as the real checkpoints):

1. ave encoder only: upstream's DataLoader loop (batches of 64, float32, cuDNN defaults) vs our
   ``exact`` (float32, TF32 off, batches of 1024) and ``fast`` (float16, BatchNorm folded,
   channels-last), 12 minutes of speech windows; rows compared with the CPU's exact rows.
2. ave end to end on the 45 s clip: ``upstream_recipe.features(clip, model, device="cuda")``
   (librosa mel on the CPU, encoder on the GPU) vs ``pipeline(clip, checkpoint=prepared)``,
   and ours on a 10-minute file.
3. hubert: a random hubert-large-shaped model (24 layers), upstream's loop on the GPU vs ours
   ``exact`` (float32, TF32 off) and ``fast`` (float16); rows compared with upstream on the CPU,
   which says what cuDNN's TF32 default does to upstream's own GPU rows.
4. One stream on the GPU (20 ms chunks): ms per frame, and its rows against offline.
5. ``StreamPool`` on the GPU: the largest number of real-time users (20 ms ticks paced in real
   time, p99 tick < 20 ms), bench_serving's search.
6. Several pools on one GPU, one process each (a pool's tick runs on one CPU thread, which is
   what limits one pool): P processes of N users each started together, each paced in real
   time; P × N users are served when every process passes.

    python benchmarks/bench_gpu.py                     # all sections, ~5 min on an H200
    python benchmarks/bench_gpu.py --only pool --json gpu.json

Without a CUDA device it says so and exits 0. The machine (GPU, CPU model, cores) is printed first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_args import positive_float, positive_int  # noqa: E402

SECTIONS = ("encoder", "e2e", "hubert", "stream", "pool", "processes")


def rel(a: np.ndarray, ref: np.ndarray) -> float:
    """max|a − ref| / max|ref| in float64."""
    assert a.shape == ref.shape, (a.shape, ref.shape)
    return float(np.abs(a.astype(np.float64) - ref).max() / max(float(np.abs(ref).max()), 1e-30))


def timed(variants: dict, repeats: int, device: str) -> dict[str, list[float]]:
    """bench.py's alternating rounds, synchronised on CUDA: wall seconds per variant."""
    import bench
    import torch

    return bench.time_alternately(variants, repeats, sync=torch.cuda.synchronize if device.startswith("cuda") else None)


def summary(times: dict[str, list[float]], base: str = "upstream") -> dict:
    out = {k: {"best_s": min(t), "median_s": statistics.median(t)} for k, t in times.items()}
    if base in times:
        for k in times:
            if k != base:
                out[k]["ratio_best"] = min(times[base]) / min(times[k])
    return out


def encoder_section(state_dict, up, repeats: int, device: str = "cuda", copies: int = 16) -> dict:
    """ave encoder only, 12 minutes of speech windows: upstream's DataLoader loop vs exact/fast."""
    import bench
    import torch

    import synctalk_audio as sa
    from synctalk_audio.engines import run_engine
    from synctalk_audio.torch_engines import prepare_encoder

    clip_windows = np.asarray(sa.window(sa.melspectrogram(sa.load_audio(bench.CLIP)), 25))
    windows = np.concatenate([clip_windows] * copies)  # 16: 12 minutes of windows, enough work for a GPU
    n = windows.shape[0]
    dev = torch.device(device)
    model = up.load_model(state_dict, dev)
    prepared = {p: prepare_encoder(sa.load_encoder(state_dict, device="cpu"), precision=p, device=device)
                for p in ("exact", "fast")}
    x = torch.from_numpy(windows).unsqueeze(1)

    def run_upstream() -> np.ndarray:
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=64, shuffle=False)
        with torch.no_grad():
            return torch.cat([model(batch.to(dev)) for (batch,) in loader]).cpu().numpy()

    variants = {"upstream": run_upstream,
                **{p: (lambda q: lambda: run_engine(prepared[q], n, lambda lo, hi: windows[lo:hi]))(p)
                   for p in ("exact", "fast")}}
    outs = {k: fn() for k, fn in variants.items()}  # warm-up, and the rows compared
    cpu = sa.encode_batch(clip_windows, sa.load_encoder(state_dict, device="cpu"), device="cpu")
    times = timed(variants, repeats, device)
    res = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "n_windows": n,
           **summary(times)}
    for k, t in times.items():
        res[k]["windows_per_s"] = n / min(t)
        res[k]["max_rel_vs_cpu_exact"] = rel(np.asarray(outs[k])[: clip_windows.shape[0]].reshape(cpu.shape), cpu)
    return res


def e2e_section(state_dict, up, repeats: int, work: Path, device: str = "cuda", minutes: float = 10.0,
                clip_s: float = 45.0) -> dict:
    import bench

    import synctalk_audio as sa
    from synctalk_audio.torch_engines import prepare_encoder

    model = up.load_model(state_dict, device)
    prepared = {p: prepare_encoder(sa.load_encoder(state_dict, device="cpu"), precision=p, device=device)
                for p in ("exact", "fast")}
    clip = str(bench.CLIP if clip_s >= 45.0 else bench.tile_clip(bench.CLIP, clip_s, work / "clip.flac"))
    variants = {"upstream": lambda: up.features(clip, model, device=device),
                **{p: (lambda e: lambda: sa.pipeline(clip, checkpoint=e).padded)(e) for p, e in prepared.items()}}
    outs = {k: fn() for k, fn in variants.items()}  # warm-up, and the rows compared
    res = {"clip_s": min(clip_s, 45.0), **summary(timed(variants, repeats, device))}
    for p in prepared:
        res[p]["max_rel_vs_upstream"] = rel(outs[p], outs["upstream"])
    long = bench.tile_clip(bench.CLIP, 60.0 * minutes, work / "long.flac")
    long_times = timed({p: (lambda e: lambda: sa.pipeline(long, checkpoint=e))(e) for p, e in prepared.items()},
                       max(1, repeats // 2), device)
    res["long"] = {p: {"minutes": minutes, "best_s": min(t), "x_real_time": 60.0 * minutes / min(t)}
                   for p, t in long_times.items()}
    return res


def hubert_section(repeats: int, num_layers: int, work: Path, device: str = "cuda") -> dict:
    import bench
    import torch
    import upstream_hubert as uh
    from transformers import HubertModel

    import synctalk_audio as sa
    from synctalk_audio.engines import resolve_encoder

    model_dir = bench.write_large_hubert(work / "hubert-large-shaped", num_layers)
    clip = str(bench.CLIP)
    processor = uh.make_processor()
    cpu_model = HubertModel.from_pretrained(model_dir, local_files_only=True).eval()
    t = time.perf_counter()
    on_cpu = uh.aud_hu(clip, processor, cpu_model, device="cpu")
    cpu_s = time.perf_counter() - t
    gpu_model = HubertModel.from_pretrained(model_dir, local_files_only=True).eval()
    engines = {p: resolve_encoder(str(model_dir), mode="hubert", precision=p, device=device) for p in ("exact", "fast")}
    variants = {"upstream": lambda: uh.aud_hu(clip, processor, gpu_model, device=device),
                **{p: (lambda e: lambda: sa.pipeline(clip, mode="hubert", checkpoint=e).features)(e)
                   for p, e in engines.items()}}
    outs = {k: fn() for k, fn in variants.items()}
    res = {"num_layers": num_layers, "upstream_cpu_s": cpu_s, "tf32_default": torch.backends.cudnn.allow_tf32,
           **summary(timed(variants, repeats, device))}
    for k in variants:
        res[k]["max_rel_vs_upstream_cpu"] = rel(outs[k], on_cpu)
    for p in engines:
        res[p]["max_rel_vs_upstream_gpu"] = rel(outs[p], outs["upstream"])
        res[p]["compute"] = engines[p].compute
    return res


def stream_section(state_dict, device: str = "cuda", seconds: float = 45.0) -> dict:
    import bench

    import synctalk_audio as sa
    from synctalk_audio.torch_engines import prepare_encoder

    wav = sa.load_audio(bench.CLIP)[: int(16000 * seconds)]
    res = {}
    for p in ("exact", "fast"):
        engine = prepare_encoder(sa.load_encoder(state_dict, device="cpu"), precision=p, device=device)
        offline = sa.pipeline(wav, checkpoint=engine, device=device).frames
        for _ in range(2):  # the second pass is timed
            sp = sa.StreamingPipeline(checkpoint=engine, device=device)
            t, c = time.perf_counter(), time.process_time()
            parts = [sp.push(wav[i:i + 320]) for i in range(0, wav.shape[0], 320)] + [sp.flush()]
            wall, cpu = time.perf_counter() - t, time.process_time() - c
        frames = np.concatenate(parts)
        res[p] = {"frames": int(frames.shape[0]), "wall_ms_per_frame": 1000 * wall / frames.shape[0],
                  "cpu_ms_per_frame": 1000 * cpu / frames.shape[0], "max_rel_vs_offline": rel(frames, offline),
                  "bit_identical": bool(np.array_equal(frames, offline))}
    return res


def pool_section(state_dict, seconds: float, device: str = "cuda", start: int = 64, limit: int = 4096) -> dict:
    import bench_serving as bs

    import synctalk_audio as sa
    from synctalk_audio.torch_engines import prepare_encoder

    wav = sa.load_audio(bs.DEFAULT_AUDIO)
    cores = bs.cpus_available()
    res = {}
    for p in ("exact", "fast"):
        engine = prepare_encoder(sa.load_encoder(state_dict, device="cpu"), precision=p, device=device)
        for overlap in (0, 1):
            print(f"  StreamPool(precision={p!r}, overlap={overlap}, device={device!r}):", flush=True)
            with sa.StreamPool(checkpoint=engine, device=device, overlap=overlap) as pool:
                best, runs = bs.search(pool, wav, seconds, cores, 0, start=start, limit=limit,
                                       log=lambda s: print(s, flush=True))
            res[f"{p} overlap={overlap}"] = {"best": best, "runs": runs}
    return res


def processes_section(device: str, plan: "list[tuple[int, int]]", seconds: float,
                      precision: str = "exact", overlap: int = 1) -> dict:
    """For each (P, N) of ``plan``: P pool processes of N users each on one GPU, started together
    (a barrier on their stdin once all are set up), each its own users (seed = its index)."""
    import subprocess

    res = {"precision": precision, "overlap": overlap}
    for count, users in plan:
        cmd = [sys.executable, __file__, "--child", json.dumps({"device": device, "users": users, "seconds": seconds,
                                                                "precision": precision, "overlap": overlap})]
        kids = [subprocess.Popen(cmd + [str(i)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for i in range(count)]
        for kid in kids:
            assert kid.stdout.readline().strip() == "ready"
        for kid in kids:
            kid.stdin.write("go\n")
            kid.stdin.flush()
        runs = [json.loads(kid.communicate(timeout=300)[0]) for kid in kids]
        import bench_serving as bs

        ok = all(bs.passes(r, bs.cpus_available()) for r in runs)
        res[f"{count}x{users}"] = {"processes": count, "users": users, "all_pass": ok,
                                   "users_total": count * users if ok else 0,
                                   "p99_ms": [round(r["p99_ms"], 2) for r in runs],
                                   "cpu_ms_per_frame": [round(r["cpu_ms_per_frame"], 3) for r in runs]}
        print(f"  {count} processes x {users} users ({precision}, overlap={overlap}): p99 ticks "
              f"{res[f'{count}x{users}']['p99_ms']} ms -> {'all pass' if ok else 'FAIL'}", flush=True)
    return res


def _child(spec: dict, index: int) -> None:
    """One pool process of :func:`processes_section`: set up, wait for "go", simulate, print JSON."""
    import bench_serving as bs

    import synctalk_audio as sa
    from synctalk_audio.encoder import seeded_state_dict
    from synctalk_audio.torch_engines import prepare_encoder

    wav = sa.load_audio(bs.DEFAULT_AUDIO)
    engine = prepare_encoder(sa.load_encoder(seeded_state_dict(0), device="cpu"), precision=spec["precision"],
                             device=spec["device"])
    with sa.StreamPool(checkpoint=engine, device=spec["device"], overlap=spec["overlap"]) as pool:
        bs.simulate(pool, wav, 8, 0.2, bs.users_rng(index, 8), warmup=0.2)  # kernels loaded before the barrier
        print("ready", flush=True)
        sys.stdin.readline()
        run = bs.simulate(pool, wav, spec["users"], spec["seconds"], bs.users_rng(index, spec["users"]))
    print(json.dumps(run), flush=True)


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma list of sections: " + ",".join(SECTIONS))
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--hubert-layers", type=positive_int, default=24,
                        help="transformer layers of the random hubert-large-shaped model (default 24; --smoke-cpu: 2)")
    parser.add_argument("--pool-seconds", type=positive_float, default=2.0, help="measured seconds per pool trial")
    parser.add_argument("--json", metavar="OUT", help="also write every figure to this JSON file")
    parser.add_argument("--processes", default="1x224,2x112,4x56,8x28",
                        help="section 6: comma list of PxN (P pool processes of N users each)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--smoke-cpu", action="store_true",
                        help="run every section on the CPU at toy sizes (checks the script, measures nothing)")
    args = parser.parse_args(argv)
    if args.child:
        _child(json.loads(args.child[0]), int(args.child[1]))
        return 0
    only = [s for s in args.only.split(",") if s] or list(SECTIONS)
    try:
        plan = [tuple(int(v) for v in item.split("x")) for item in args.processes.split(",") if item]
        assert all(len(t) == 2 and min(t) > 0 for t in plan)
    except (ValueError, AssertionError):
        parser.error(f"--processes: expected a comma list of PxN (e.g. 2x112,4x56), got {args.processes!r}")
    if set(only) - set(SECTIONS):
        parser.error(f"unknown section(s) {sorted(set(only) - set(SECTIONS))}; expected {', '.join(SECTIONS)}")

    import torch

    from bench_stream import cpu_model

    if not torch.cuda.is_available() and not args.smoke_cpu:
        print(f"bench_gpu: no CUDA device here ({cpu_model()}); nothing measured")
        return 0
    device = "cpu" if args.smoke_cpu else "cuda"
    smoke = args.smoke_cpu
    up = None
    if {"encoder", "e2e"} & set(only):  # the upstream ave recipe needs librosa 0.10.1 (make bench)
        import bench

        bench.ensure_pkg_resources()
        import upstream_recipe as up

    from synctalk_audio.encoder import seeded_state_dict

    results: dict = {"gpu": torch.cuda.get_device_name(0) if not smoke else "none (CPU smoke run)",
                     "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if not smoke else 0.0,
                     "cpu": cpu_model(), "cpus": len(os.sched_getaffinity(0)), "torch": torch.__version__,
                     "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    print(f"machine: {results['gpu']} ({results['gpu_memory_gib']:.0f} GiB), host CPU {results['cpu']} "
          f"({results['cpus']} CPUs), torch {results['torch']}, CUDA {results['cuda']}, cuDNN {results['cudnn']}; "
          "weights: untrained stand-ins (seeded ave, random hubert-large-shaped)", flush=True)
    state_dict = seeded_state_dict(0)
    with tempfile.TemporaryDirectory(prefix="synctalk-gpu-") as tmp:  # the hubert model alone is 1.2 GB
        run_sections(args, only, plan, results, state_dict, up, device, Path(tmp))
    print_table(results)
    return 0


def run_sections(args, only: list, plan: list, results: dict, state_dict, up, device: str, work: Path) -> None:
    """Run the sections in ``only`` into ``results`` (saved to ``--json`` after each); ``--smoke-cpu``
    shrinks every size (2 hubert layers, 5 s clips, a few users)."""
    smoke = args.smoke_cpu

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str))

    runs = {"encoder": lambda: encoder_section(state_dict, up, args.repeats, device, 1 if smoke else 16),
            "e2e": lambda: e2e_section(state_dict, up, args.repeats, work, device, 0.1 if smoke else 10.0,
                                       5.0 if smoke else 45.0),
            "hubert": lambda: hubert_section(max(2, args.repeats // 2), 2 if smoke else args.hubert_layers, work,
                                             device),
            "stream": lambda: stream_section(state_dict, device, 3.0 if smoke else 45.0),
            "pool": lambda: pool_section(state_dict, args.pool_seconds, device, 2 if smoke else 64, 4 if smoke else 4096),
            "processes": lambda: processes_section(device, plan, 3.0)}
    for name in only:
        print(f"[{name}]", flush=True)
        t = time.perf_counter()
        try:
            results[name] = runs[name]()
        except Exception:  # one section's failure must not lose the others' figures
            results[name] = {"error": traceback.format_exc(limit=4)}
            print(results[name]["error"], flush=True)
        print(f"  ({time.perf_counter() - t:.0f} s)", flush=True)
        print(json.dumps(results[name], indent=1, default=str)[:3000], flush=True)
        save()


def print_table(r: dict) -> None:
    print(f"\nsummary on {r['gpu']} (host CPU {r['cpu']}):")
    if "windows_per_s" in r.get("encoder", {}).get("exact", {}):
        e = r["encoder"]
        print(f"  ave encoder, {e['n_windows']} windows: upstream {e['upstream']['windows_per_s']:.0f} windows/s; "
              + "; ".join(f"{p} {e[p]['windows_per_s']:.0f} ({e[p]['ratio_best']:.1f}x, rows {e[p]['max_rel_vs_cpu_exact']:.2g} "
                          f"of max off the CPU's exact)" for p in ("exact", "fast"))
              + f"; upstream rows {e['upstream']['max_rel_vs_cpu_exact']:.2g} off")
    if "upstream" in r.get("e2e", {}):
        e = r["e2e"]
        print(f"  ave end to end, {e['clip_s']:g} s: upstream {e['upstream']['best_s']:.3f} s; "
              + "; ".join(f"{p} {e[p]['best_s']:.3f} s ({e[p]['ratio_best']:.1f}x)" for p in ("exact", "fast"))
              + "; long file: " + ", ".join(f"{p} {v['minutes']:g} min in {v['best_s']:.2f} s "
                                            f"({v['x_real_time']:.0f}x real time)" for p, v in e["long"].items()))
    if "upstream" in r.get("hubert", {}):
        h = r["hubert"]
        print(f"  hubert ({h['num_layers']} layers), 45 s: upstream GPU {h['upstream']['best_s']:.3f} s (CPU "
              f"{h['upstream_cpu_s']:.1f} s, rows {h['upstream']['max_rel_vs_upstream_cpu']:.2g} off its CPU rows); "
              + "; ".join(f"{p} {h[p]['best_s']:.3f} s ({h[p]['ratio_best']:.1f}x, {h[p]['max_rel_vs_upstream_cpu']:.2g} "
                          f"off upstream CPU)" for p in ("exact", "fast")))
    if "exact" in r.get("stream", {}):
        parts = []
        for p, v in r["stream"].items():
            same = "bit-identical to" if v["bit_identical"] else f"{v['max_rel_vs_offline']:.2g} of max off"
            parts.append(f"{p} {v['wall_ms_per_frame']:.2f} ms/frame wall, {v['cpu_ms_per_frame']:.2f} CPU, "
                         f"{same} offline")
        print("  one stream, 20 ms chunks: " + "; ".join(parts))
    p = r.get("processes", {})
    for v in [v for v in p.values() if isinstance(v, dict) and "processes" in v]:
        print(f"  {v['processes']} pool processes x {v['users']} users ({p['precision']}, overlap={p['overlap']}): "
              f"{'all pass: ' + str(v['users_total']) + ' real-time users' if v['all_pass'] else 'not all pass'} "
              f"(p99 ticks {v['p99_ms']} ms)")
    for k, v in r.get("pool", {}).items():
        if isinstance(v, dict) and "best" in v:
            b = v["best"]
            print(f"  StreamPool {k}: " + (f"{b['users']} real-time users (p99 tick {b['p99_ms']:.2f} ms, frame delay "
                                           f"p99 {b['delay_p99_ms']:.1f} ms, CPU {b['cpu_cores']:.2f} cores)"
                                           if b else "none passed"))


if __name__ == "__main__":
    sys.exit(main())
