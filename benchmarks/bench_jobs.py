"""Dataset benchmark: files/hour of ``synctalk-audio dataset`` serial vs ``--workers 2`` vs Ray.

The 12-clip set: the nine decodable golden inputs (golden/inputs/, every rate, format and
channel layout; the deliberately too-short clip is left out: it fails by design) and the bundled
demo clip three times; ``--repeat K`` makes it 12·K files. Each backend runs
:func:`synctalk_audio.jobs.extract_dataset` into a fresh OUT in its own Python process (torch
import and engine loads included in the wall time, as a user sees them). For Ray the local
instance is started first and not timed (a cluster is normally up already); its actors'
start-up is timed. The outputs of the three runs are then compared byte for byte.

    .venv/bin/python benchmarks/bench_jobs.py               # 12 clips, seeded ave weights
    .venv/bin/python benchmarks/bench_jobs.py --repeat 10   # 120 files: start-up amortised
    .venv/bin/python benchmarks/bench_jobs.py --no-ray      # without the [ray] extra

The machine (CPU model, usable cores, load average before and after) is printed with the
result: other processes on the same cores change the figures, and on 2 cores two workers can
at best halve the per-file time while each pays its own start-up.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_args import checkpoint, positive_int, run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_INPUTS = ROOT / "golden" / "inputs"
DEMO = ROOT / "synctalk_audio" / "data" / "demo_speech.wav"
SKIP = {"too_short_0p15s_16k.wav"}

_RUN = textwrap.dedent("""
    import json, sys
    from synctalk_audio.jobs import extract_dataset
    src, out, backend, ckpt = sys.argv[1:5]
    kw = {"serial": {}, "workers2": {"workers": 2}, "ray": {"ray": True}}[backend]
    if backend == "ray":
        import ray
        ray.init(include_dashboard=False, log_to_driver=False)   # not timed: a cluster is up already
    s = extract_dataset(src, out, checkpoint=ckpt, device="cpu", progress=False, **kw)
    print(json.dumps(s.to_dict()))
""")


def cpu_model() -> str:
    """``lscpu``'s model name (or platform.processor())."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10).stdout
        for line in text.splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def clip_set(repeat: int) -> list[Path]:
    """The 12 clips (× repeat)."""
    golden = sorted(p for p in GOLDEN_INPUTS.iterdir() if p.is_file() and p.name not in SKIP)
    one = golden + [DEMO] * (12 - len(golden))
    return one * repeat


def make_src(root: Path, clips: list[Path]) -> Path:
    for i, clip in enumerate(clips):
        dest = root / f"batch{i // 12:03d}" / f"{i:04d}_{clip.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip, dest)
    return root


def digest_tree(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith(("_", ".")):
            h.update(rel.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def run_backend(backend: str, src: Path, out: Path, checkpoint: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _RUN, str(src), str(out), backend, checkpoint],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"{backend} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=checkpoint, default="seeded", help="encoder checkpoint (default: seeded ave weights)")
    parser.add_argument("--repeat", type=positive_int, default=1, help="use the 12-clip set this many times (default 1)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    backends = ["serial", "workers2"] + ([] if args.no_ray else ["ray"])
    if "ray" in backends:
        try:
            import ray  # noqa: F401
        except ImportError:
            print("ray is not installed (pip install -e '.[ray]'): Ray run skipped", file=sys.stderr)
            backends.remove("ray")
    clips = clip_set(args.repeat)
    from synctalk_audio.jobs import usable_cores

    machine = {"cpu": cpu_model(), "usable_cores": usable_cores(), "python": platform.python_version(),
               "load_before": loadavg()}
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_jobs_") as tmp:
        src = make_src(Path(tmp) / "src", clips)
        digests = {}
        for backend in backends:
            out = Path(tmp) / f"out_{backend}"
            s = run_backend(backend, src, out, args.checkpoint)
            if s["done"] != len(clips) or s["n_failed"]:
                raise SystemExit(f"{backend}: {s['done']} of {len(clips)} files done, {s['n_failed']} failed")
            results[backend] = {"files": s["done"], "workers": s["workers"], "wall_s": round(s["wall_s"], 2),
                                "files_per_hour": round(s["files_per_hour"]),
                                "audio_hours_per_hour": round(s["audio_hours_per_hour"], 3)}
            digests[backend] = digest_tree(out)
    machine["load_after"] = loadavg()
    identical = len(set(digests.values())) == 1
    if args.json:
        print(json.dumps({"machine": machine, "results": results, "identical_outputs": identical}, indent=2))
        return 0 if identical else 1
    audio_s = sum(_duration(c) for c in clips)
    print(f"CPU: {machine['cpu']} ({machine['usable_cores']} usable cores), load average "
          f"{machine['load_before']} before, {machine['load_after']} after")
    print(f"{len(clips)} files, {audio_s:.1f} s of audio, checkpoint {args.checkpoint}, device cpu")
    print(f"  {'backend':10s} {'workers':>7s} {'wall s':>8s} {'files/h':>9s} {'audio-h/h':>10s} {'vs serial':>9s}")
    base = results["serial"]["files_per_hour"]
    for backend, r in results.items():
        print(f"  {backend:10s} {r['workers']:7d} {r['wall_s']:8.2f} {r['files_per_hour']:9d} "
              f"{r['audio_hours_per_hour']:10.3f} {r['files_per_hour'] / base:8.2f}x")
    print(f"outputs identical across backends: {'yes' if identical else 'NO'}")
    return 0 if identical else 1


def _duration(path: Path) -> float:
    import soundfile as sf

    return float(sf.info(str(path)).duration)


if __name__ == "__main__":
    sys.exit(run(main, "bench_jobs"))
