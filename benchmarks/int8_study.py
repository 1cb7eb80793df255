"""Would static int8 make a usable torch-free "fast"? Speed and error of an int8 encoder.

    .venv/bin/python benchmarks/int8_study.py      # needs the export extra (onnx, onnxruntime)

Exports the seeded weights to ONNX (float32, BatchNorm folded), quantizes a copy with
onnxruntime's static quantizer (QDQ, per-channel int8 weights, uint8 activations) calibrated on
the first 35 s of the 45 s speech clip, then runs both on every window of the clip and prints
the int8 speed-up over float32 and its error relative to max|features| — on all windows and on
the held-out last 10 s — against the 2 % bound of ``PRECISIONS["fast"]``. A study, not a
feature: the library ships no int8 path while the error is over that bound.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CLIP = HERE / "data" / "speech_45s.flac"
sys.path.insert(0, str(HERE))


class _Windows:
    """onnxruntime's CalibrationDataReader protocol over an array of windows, 16 at a time."""

    def __init__(self, windows: np.ndarray, name: str) -> None:
        self.windows, self.name, self.at = windows, name, 0

    def get_next(self):
        if self.at >= len(self.windows):
            return None
        batch = self.windows[self.at:self.at + 16, None]
        self.at += 16
        return {self.name: batch}


def _best_time(fn, repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: "list[str] | None" = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0],
                            epilog="Takes about a minute; prints the CPU model with the figures.").parse_args(argv)
    from bench_stream import cpu_model
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import synctalk_audio as sa
    from synctalk_audio.export import export_onnx
    from synctalk_audio.engines import PRECISIONS
    from synctalk_audio.engines import run_engine
    from synctalk_audio.runtime import load_onnx_encoder

    windows = sa.window(sa.melspectrogram(sa.load_audio(CLIP)))
    n = len(windows)
    held_out = int(35 * 25)  # windows after 35 s were not seen by the calibration
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(sa.seeded_state_dict(0), Path(tmp) / "fp32.onnx").path
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre))
        runs = {"float32": load_onnx_encoder(fp32, device="cpu")}
        calibration = windows[:held_out:4]
        calibration = calibration[: len(calibration) // 16 * 16].copy()  # whole batches (histogram calibrators)
        for method in (CalibrationMethod.MinMax, CalibrationMethod.Entropy):
            out = Path(tmp) / f"int8_{method.name}.onnx"
            quantize_static(str(pre), str(out), _Windows(calibration, "mel_input"),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=method)
            runs[f"int8 {method.name}"] = load_onnx_encoder(out, device="cpu")
        results = {}
        for name, enc in runs.items():
            def go(enc=enc):
                return run_engine(enc, n, lambda lo, hi: windows[lo:hi])
            results[name] = (_best_time(go), go())
    t_ref, ref = results["float32"]
    scale = float(np.abs(ref).max())
    bound = PRECISIONS["fast"].max_rel
    print(f"machine: {cpu_model()}, {len(os.sched_getaffinity(0))} CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"onnxruntime's default threads")
    print(f"{CLIP.name}: {n} windows; calibration: windows 0..{held_out} (every 4th); bound {bound:.0%} of max|x|")
    for name, (t, out) in results.items():
        err_all = float(np.abs(out - ref).max()) / scale
        err_tail = float(np.abs(out[held_out:] - ref[held_out:]).max()) / scale
        verdict = "" if name == "float32" else ("within" if max(err_all, err_tail) <= bound else "OVER") + " the bound"
        print(f"  {name:14s} {t:6.3f} s  {t_ref / t:4.2f}x  error all {err_all:.2%}, held-out {err_tail:.2%}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
