"""Two versions of the package, timed alternately in one run on this machine.

    git archive OLD synctalk_audio | tar -x -C /tmp/old     # the other version's package
    .venv/bin/python benchmarks/bench_versions.py /tmp/old   # vs this checkout

Each version runs in its own long-lived worker process (``PYTHONPATH`` = its folder; both are
imported as ``synctalk_audio``), and the parent asks the two workers in turn, so both see the
same load. Timed: the warm ave pipeline on the 45 s clip (exact and fast, the checkpoint given
as an ``AudioEncoder`` as ``bench.py`` does; every frame handed out), the same with a prepared
engine, and the cold start (``python -m synctalk_audio features CLIP --checkpoint X.pth``, a
fresh process each time). Ratio = new time / old time (> 1: the new version is slower).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLIP = HERE / "data" / "speech_45s.flac"
sys.path.insert(0, str(HERE))

from bench_args import existing_dir, positive_int  # noqa: E402


def package_dir(text: str) -> Path:
    """A folder holding a ``synctalk_audio/`` package (else the worker would import the installed one
    and time a version against itself)."""
    folder = existing_dir(text)
    if not (folder / "synctalk_audio" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{text!r} holds no synctalk_audio/__init__.py (expected a checkout's root)")
    return folder

_WORKER = r"""
import json, sys, time
import synctalk_audio as sa
import torch
from synctalk_audio.encoder import load_encoder
try:
    from synctalk_audio.torch_engines import prepare_encoder
except ImportError:
    from synctalk_audio.encoder import prepare_encoder
clip, ckpt = sys.argv[1], sys.argv[2]
module = load_encoder(torch.load(ckpt), device="cpu")
prepared = {p: prepare_encoder(module, precision=p, device="cpu") for p in ("exact", "fast")}

def run(kind, precision):
    source = module if kind == "module" else prepared[precision]
    res = sa.pipeline(clip, checkpoint=source, device="cpu", precision=precision)
    return sum(float(res.frames[i][0, 0, 0]) for i in range(res.frames.shape[0]))

print(json.dumps({"file": sa.__file__}), flush=True)
for line in sys.stdin:
    kind, precision = line.split()
    t0 = time.perf_counter()
    run(kind, precision)
    print(json.dumps({"s": time.perf_counter() - t0}), flush=True)
"""


class Worker:
    def __init__(self, package_parent: Path, ckpt: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(package_parent)}
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(CLIP), str(ckpt)], env=env, cwd="/",
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.file = json.loads(self.proc.stdout.readline())["file"]

    def time(self, kind: str, precision: str) -> float:
        self.proc.stdin.write(f"{kind} {precision}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["s"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def cold(package_parent: Path, ckpt: Path, precision: str, out: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "synctalk_audio", "features", str(CLIP), "--checkpoint", str(ckpt), "-o",
                    str(out), "--device", "cpu", "--precision", precision, "-q"], env=env, cwd="/", check=True,
                   capture_output=True)
    return time.perf_counter() - t0


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=package_dir, help="folder holding the other version's synctalk_audio/")
    parser.add_argument("--new", type=package_dir, default=ROOT,
                        help="folder holding this version's (default: the checkout)")
    parser.add_argument("--repeats", type=positive_int, default=7)
    parser.add_argument("--cold-repeats", type=positive_int, default=5)
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    from synctalk_audio.seeded import seeded_state_dict

    work = Path(tempfile.mkdtemp(prefix="synctalk-versions-"))
    ckpt = work / "seeded.pth"
    torch.save(seeded_state_dict(0), ckpt)
    model = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in model.splitlines() if ln.startswith("Model name")), "?")
    print(f"{model}; load average at start {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    versions = {"new": args.new.resolve(), "old": args.old.resolve()}
    results: dict = {"cpu": model, "versions": {k: str(v) for k, v in versions.items()}}
    try:
        workers = {name: Worker(path, ckpt) for name, path in versions.items()}
        for name, w in workers.items():
            print(f"  {name}: {w.file}")
        cases = [(kind, p) for kind in ("module", "prepared") for p in ("exact", "fast")]
        times = {(name, kind, p): [] for name in workers for kind, p in cases}
        for kind, p in cases:  # warm-up
            for w in workers.values():
                w.time(kind, p)
        for r in range(args.repeats):
            order = list(workers.items()) if r % 2 == 0 else list(workers.items())[::-1]
            for kind, p in cases:
                for name, w in order:
                    times[(name, kind, p)].append(w.time(kind, p))
        for w in workers.values():
            w.close()
        for r in range(args.cold_repeats):
            names = list(versions) if r % 2 == 0 else list(versions)[::-1]
            for p in ("exact", "fast"):
                for name in names:
                    times.setdefault((name, "cold", p), []).append(
                        cold(versions[name], ckpt, p, work / f"cold_{name}_{p}_{r}"))
        print(f"load average at end {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"  {'':18s} {'old best':>9s} {'new best':>9s} {'new/old':>8s} {'old med':>9s} {'new med':>9s} "
              f"{'new/old':>8s}")
        for kind, p in cases + [("cold", "exact"), ("cold", "fast")]:
            old, new = times[("old", kind, p)], times[("new", kind, p)]
            row = {"old_best": min(old), "new_best": min(new), "old_median": statistics.median(old),
                   "new_median": statistics.median(new)}
            row["ratio_best"] = row["new_best"] / row["old_best"]
            row["ratio_median"] = row["new_median"] / row["old_median"]
            results[f"{kind}_{p}"] = row
            label = {"module": "warm", "prepared": "warm, prepared", "cold": "cold start"}[kind] + f" {p}"
            print(f"  {label:18s} {row['old_best']:8.3f}s {row['new_best']:8.3f}s {row['ratio_best']:7.3f}x "
                  f"{row['old_median']:8.3f}s {row['new_median']:8.3f}s {row['ratio_median']:7.3f}x")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
