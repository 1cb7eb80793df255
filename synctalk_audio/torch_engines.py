"""The PyTorch execution engines of the conv AudioEncoder: "exact" and "fast".

Both plug into the one encoder seam (:mod:`synctalk_audio.engines`): call one on float32
windows (B, 1, 80, 16) — a numpy array gives a numpy array, a tensor on its device a tensor —
to get (B, 512) float32 rows.
"""

from __future__ import annotations

import copy
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import FEATURE_DIM, WINDOW_SHAPE
from .encoder import AudioEncoder, fold_batchnorm
from .errors import ConfigError
from .flops import layer_shapes
from .runtime import unknown_device

__all__ = ["PreparedEncoder", "prepare_encoder", "ENCODER_PRECISIONS", "check_precision", "resolve_device",
           "cpu_has_bf16"]

# --------------------------------------------------------------------------- performance paths
#
# "exact": the very same float32 operations as upstream, in the same order, so the features are
# bit-identical to upstream's DataLoader recipe on the same CPU. Every convolution goes straight
# to oneDNN, whatever the batch size and thread count: PyTorch's module picks its own native
# kernels for a batch of one (and for the 1x1 layer with one thread and < 16 windows), which
# round differently (~3e-5), so upstream itself is not batch-invariant — we are, bit for bit.
# BatchNorm is PyTorch's own eval kernel on the conv output, *not* folded into the convs:
# folding changes the features by ~5e-5..1e-4 on magnitudes ~100, over the 1e-5 budget.
#
# "fast": BatchNorm folded, channels-last, each block one oneDNN call (prepacked weights, the
# residual add and ReLU as post-ops), bfloat16 on CPUs with AVX512-BF16/AMX (float32 elsewhere),
# float16 on CUDA. Its error bound is documented in ``pipeline.PRECISIONS``.

#: Precision names :func:`prepare_encoder` accepts (``pipeline.PRECISIONS`` documents the bounds).
ENCODER_PRECISIONS = ("exact", "fast")
#: Default windows per forward pass: per worker thread on CPU (measured on a 2-core Xeon with
#: 2 MB L2 per core: 24–48 are equally fast, 16 and 64+ slower), per pass on CUDA.
_DEFAULT_BATCH = {("cpu", "exact"): 32, ("cpu", "fast"): 32, ("cuda", "exact"): 1024, ("cuda", "fast"): 2048}


def resolve_device(device: "str | torch.device | None" = "auto") -> torch.device:
    """``"auto"``/None → CUDA when available, else CPU; anything else is checked and returned."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):  # torch's text lists backends this library does not run on
        raise unknown_device(device) from None
    if dev.type not in ("cpu", "cuda"):  # meta holds no data; other backends are untested here
        raise ConfigError(f"device {device!r} is not supported; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA "
                          "device(s), cuda:0 …")
    return dev


def cpu_has_bf16() -> bool:
    """True when this CPU runs bfloat16 convolutions natively (AVX512-BF16 or AMX-BF16)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # older/other torch builds: no fast bf16 claimed
        return False


def _onednn_conv() -> Any:
    """PyTorch's direct oneDNN convolution, or None when this build/setting cannot use it."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return None
    return getattr(torch, "mkldnn_convolution", None) or getattr(torch.ops.aten, "mkldnn_convolution", None)


class PreparedEncoder:
    """An :class:`AudioEncoder` made ready for one precision on one device (see :func:`prepare_encoder`).

    An engine of the encoder seam (:class:`synctalk_audio.engines.Engine`): call it on float32
    windows (B, 1, 80, 16) — a numpy array gives a numpy (B, 512) float32 array, a tensor on
    :attr:`device` a tensor. The weights are copied, so later changes to the source encoder do
    not reach it.

    Attributes
    ----------
    mode : "ave"
    row_shape : (512,)
    precision : "exact" or "fast"
    device : torch.device (``str()`` names it)
    compute : str
        What actually runs, e.g. ``"float32 oneDNN convolutions, BatchNorm unfolded"``.
    batch_size : int
        Default windows per forward pass (per worker thread on CPU).
    batch_invariant : bool
        True when a window's features do not depend on the batch it runs in (bit for bit for
        exact on oneDNN; within the bound for fast), so identical windows may be run once.
    """

    mode = "ave"
    row_shape = (FEATURE_DIM,)
    precision: str = "exact"
    compute: str = ""
    batch_invariant: bool = False
    provenance: Mapping[str, Any] = MappingProxyType({})

    def __init__(self, device: torch.device, batch_size: int) -> None:
        self.device = device
        self.batch_size = batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: "np.ndarray | torch.Tensor") -> "np.ndarray | torch.Tensor":
        if isinstance(x, torch.Tensor):
            if x.shape[0] == 0:  # no windows: no rows (the convolutions reject an empty batch)
                return x.new_empty((0, *self.row_shape), dtype=torch.float32)
            return self.forward(x)
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(-1, *WINDOW_SHAPE)
        if t.shape[0] == 0:
            return np.empty((0, *self.row_shape), np.float32)
        with torch.inference_mode():
            return self.forward(t.to(self.device, non_blocking=True)).cpu().numpy()

    @contextmanager
    def running(self, n_items: int, batch_size: int, threads: "int | None" = None) -> Iterator[int]:
        """Set torch's threads for a run of ``n_items`` windows; yield the worker-thread count.

        On CPU the batches run on ``threads`` worker threads (default ``torch.get_num_threads()``)
        with one torch thread each — oneDNN's results do not depend on it; the setting is
        restored on exit. On CUDA one worker.
        """
        cpu = self.device.type == "cpu"
        saved = torch.get_num_threads()
        total = int(threads) if threads is not None else saved
        workers = total if cpu else 1
        try:
            if cpu and workers > 1 and n_items > batch_size:
                torch.set_num_threads(1)  # one torch thread per worker
            elif cpu and total != saved:
                torch.set_num_threads(total)
            yield workers
        finally:
            if torch.get_num_threads() != saved:
                torch.set_num_threads(saved)

    def worker_threads(self, n: int, name: str) -> ThreadPoolExecutor:
        """``n`` started worker threads that run this engine on one torch thread each.

        For callers that run batches side by side on their own threads (a
        :class:`~synctalk_audio.StreamPool`): torch's thread count is per thread once a thread
        has run its first op, so each worker sets its own to 1 when it starts, and the setting
        every other thread starts from is put back. No later call needs to set or restore it.
        torch's ``set_num_threads`` also sets what threads *starting* torch work take: a thread
        whose first torch op falls in the moment while the workers start gets 1 thread. Two
        callers at once are serialised (one's 1 was once restored as the other's setting).
        """
        with _WORKERS_STARTING:
            return self._start_workers(n, name)

    def _start_workers(self, n: int, name: str) -> ThreadPoolExecutor:
        saved = torch.get_num_threads()
        started = threading.Barrier(n, timeout=60)

        def one_thread() -> None:
            torch.get_num_threads()  # torch's lazy per-thread set-up from the process setting, now …
            torch.set_num_threads(1)  # … so that this thread's 1 is not overwritten by it later

        executor = ThreadPoolExecutor(max_workers=n, thread_name_prefix=name, initializer=one_thread)
        try:  # every thread started (each waits for the others), then the process setting restored
            for f in [executor.submit(started.wait) for _ in range(n)]:
                f.result()
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            torch.set_num_threads(saved)
        return executor

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(precision={self.precision!r}, device={str(self.device)!r}, "
                f"compute={self.compute!r}, batch_size={self.batch_size})")


#: Serialises :meth:`PreparedEncoder.worker_threads` across the process: torch's thread setting
#: that new threads start from is process-wide, and each start sets it to 1 for a moment.
_WORKERS_STARTING = threading.Lock()


@dataclass(frozen=True)
class _Layer:
    weight: torch.Tensor
    bias: torch.Tensor
    padding: tuple[int, int]
    stride: tuple[int, int]
    residual: bool
    bn: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]  # mean, var, gamma, shift, eps


class _ExactOneDNN(PreparedEncoder):
    """exact on CPU: oneDNN convolutions for every batch size, then PyTorch's own eval
    BatchNorm kernel, the residual add and ReLU in place — upstream's arithmetic exactly."""

    precision = "exact"
    batch_invariant = True

    def __init__(self, encoder: AudioEncoder, conv: Any, batch_size: int) -> None:
        super().__init__(torch.device("cpu"), batch_size)
        self._conv = conv
        layers = []
        with torch.no_grad():
            for block in encoder.audio_encoder:
                c, bn = block.conv_block[0], block.conv_block[1]

                def own(t: "torch.Tensor | None", fill: float) -> torch.Tensor:
                    if t is None:
                        return torch.full((c.out_channels,), fill)
                    return t.detach().to(device="cpu", dtype=torch.float32, copy=True).contiguous()

                layers.append(_Layer(
                    weight=own(c.weight, 0.0), bias=own(c.bias, 0.0),
                    padding=tuple(c.padding), stride=tuple(c.stride), residual=bool(block.residual),
                    bn=(own(bn.running_mean, 0.0), own(bn.running_var, 1.0), own(bn.weight, 1.0),
                        own(bn.bias, 0.0), float(bn.eps)),
                ))
        self._layers = tuple(layers)
        self._packed: "tuple[tuple | None] | None" = None  # built on the first small batch (streams)
        self.compute = "float32 oneDNN convolutions (any batch size), BatchNorm unfolded"

    def _prepack(self) -> "tuple | None":
        """Each weight reordered once into oneDNN's blocked layout (``mkldnn_prepacked``), or None.

        The plain call reorders every weight on every call: for one window that is ~40 % of the
        forward. The prepacked op runs the same oneDNN primitive on the same layouts, so its rows
        are bit-identical — checked here on a probe (1 and 4 windows), else it is not used.
        Built lazily by the first batch of at most :data:`_PACKED_MAX_BATCH` windows (a stream's
        tick): offline batches amortise the reorder and never pay the probe's kernel set-up.
        """
        ops = getattr(torch.ops, "mkldnn_prepacked", None)
        try:
            shapes = (WINDOW_SHAPE, *layer_shapes()[:-1])
            packed = tuple(ops.conv2d_prepack(layer.weight, layer.bias, list(layer.stride), list(layer.padding),
                                              [1, 1], 1, [1, *shape], "none")
                           for layer, shape in zip(self._layers, shapes))
            probe = torch.randn(_PACKED_MAX_BATCH, *WINDOW_SHAPE,
                                generator=torch.Generator().manual_seed(0)).clamp_(-4, 4)
            with torch.inference_mode():
                same = all(torch.equal(self._forward(probe[:n], packed), self._forward(probe[:n], None))
                           for n in (1, 4, _PACKED_MAX_BATCH))
            return packed if same else None
        except (AttributeError, RuntimeError, TypeError):
            return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > _PACKED_MAX_BATCH:
            return self._forward(x, None)
        if self._packed is None:  # two threads may both build it: same result, last one kept
            # ``compute`` is left as it is: the rows are the same bits either way, and metadata.json
            # must not depend on what the process ran before (a resumed dataset run once differed)
            self._packed = (self._prepack(),)
        return self._forward(x, self._packed[0])

    def _forward(self, x: torch.Tensor, packed: "tuple | None", clock: "list[float] | None" = None) -> torch.Tensor:
        """The 13 blocks; ``clock`` (benchmarks/bench_stream.py --layers): gets the thread's CPU
        time before the first block and after each."""
        if packed is not None:
            x = x.contiguous()  # NCHW: the layouts the plain call uses
        if clock is not None:
            clock.append(time.thread_time())
        for i, layer in enumerate(self._layers):
            y = (self._conv(x, layer.weight, layer.bias, layer.padding, layer.stride, (1, 1), 1) if packed is None
                 else torch.ops.mkldnn_prepacked.conv2d_run(x, packed[i]))
            mean, var, gamma, shift, eps = layer.bn
            y = F.batch_norm(y, mean, var, gamma, shift, False, 0.0, eps)
            if layer.residual:
                y.add_(x)
            x = y.relu_()
            if clock is not None:
                clock.append(time.thread_time())
        return x.reshape(x.shape[0], -1)

    def layer_cpu_ms(self, windows: torch.Tensor, repeats: int = 20) -> "list[float]":
        """CPU ms per window of each block on ``windows`` (B, 1, 80, 16) in one call, one torch
        thread, best of ``repeats`` per block: where a batch's time goes (benchmarks)."""
        with self.running(1, 1, 1), torch.inference_mode():
            self.forward(windows)  # builds the prepacked weights for a small batch
            packed = self._packed[0] if windows.shape[0] <= _PACKED_MAX_BATCH and self._packed else None
            best = [float("inf")] * len(self._layers)
            for _ in range(repeats):
                clock: list[float] = []
                self._forward(windows, packed, clock)
                best = [min(b, 1000.0 * (t1 - t0) / windows.shape[0]) for b, t0, t1 in zip(best, clock, clock[1:])]
        return best


#: Largest batch that runs on the prepacked weights: a stream's tick, and a pool worker's share
#: of a tick (per window at 7–8 windows: 1.99 ms prepacked against 2.07 plain on an AMD EPYC;
#: even at 14–16, slower from 32 on, where the per-call weight reorder is amortised).
_PACKED_MAX_BATCH = 8


@contextmanager
def ieee_float32(device: "torch.device | str") -> Iterator[None]:
    """Context: on CUDA, no TF32 in cuDNN convolutions / CUDA matmuls (flags restored on exit);
    elsewhere nothing. What ``exact`` means on a GPU: float32 arithmetic, not TF32's 10-bit
    mantissa (cuDNN's default for convolutions)."""
    if torch.device(device).type != "cuda":
        yield
        return
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class _ModuleExact(PreparedEncoder):
    """exact where oneDNN is not used (CUDA, builds without oneDNN, other modules): the module
    itself in float32, TF32 off on CUDA."""

    precision = "exact"

    def __init__(self, module: nn.Module, device: torch.device, batch_size: int) -> None:
        super().__init__(device, batch_size)
        self.module = copy.deepcopy(module).to(device).float().eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.compute = ("float32 cuDNN (TF32 off), BatchNorm unfolded" if device.type == "cuda"
                        else "float32 PyTorch module (its own kernel choice), BatchNorm unfolded")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with ieee_float32(self.device):
            out = self.module(x)
        return out.reshape(out.shape[0], -1).float()


class _Fast(PreparedEncoder):
    """fast: BatchNorm folded, channels-last; bfloat16 (CPU with BF16/AMX) or float16 (CUDA).

    On CPU each block is one oneDNN call — prepacked weights, the residual add and the ReLU
    fused as post-ops (``torch.ops.mkldnn._convolution_pointwise``, what torch.compile uses);
    if that private API is missing or disagrees with the plain module, the module runs.
    """

    precision = "fast"
    batch_invariant = True  # within its error bound

    def __init__(self, encoder: AudioEncoder, device: torch.device, batch_size: int) -> None:
        super().__init__(device, batch_size)
        if device.type == "cuda":
            self.dtype, what = torch.float16, "float16 cuDNN"
        elif device.type == "cpu" and cpu_has_bf16():
            self.dtype, what = torch.bfloat16, "bfloat16 oneDNN (AVX512-BF16/AMX)"
        else:
            self.dtype, what = torch.float32, "float32 (no native bfloat16 on this CPU)"
        source = encoder if next(encoder.parameters()).device.type == "cpu" else copy.deepcopy(encoder).cpu()
        folded = fold_batchnorm(source.float() if next(source.parameters()).dtype != torch.float32 else source)
        self.model = folded.to(device=device, dtype=self.dtype).to(memory_format=torch.channels_last).eval()
        self._fused = self._fuse(folded) if device.type == "cpu" and _onednn_conv() is not None else None
        self.compute = f"{what}, BatchNorm folded, channels-last" + (
            ", conv+residual+ReLU fused in oneDNN with prepacked weights" if self._fused else "")

    def _fuse(self, folded: nn.Module) -> "tuple | None":
        ops = getattr(torch.ops, "mkldnn", None)
        try:
            unary, binary = ops._convolution_pointwise.default, ops._convolution_pointwise.binary
            layers = []
            in_shape = WINDOW_SHAPE
            for block, out_shape in zip(folded.blocks, layer_shapes()):
                conv = block.conv
                pad, stride = list(conv.padding), list(conv.stride)
                weight = conv.weight.detach().to(self.dtype)
                packed = ops._reorder_convolution_weight(weight, pad, stride, [1, 1], 1,
                                                         [self.batch_size, *in_shape])
                layers.append((packed, conv.bias.detach().to(self.dtype), pad, stride, bool(block.residual)))
                in_shape = out_shape
            fused = (unary, binary, tuple(layers))
            probe = torch.randn(3, 1, 80, 16, generator=torch.Generator().manual_seed(0)).clamp_(-4, 4)
            with torch.inference_mode():
                plain = self._module_forward(probe)
                got = self._fused_forward(probe, fused)
            scale = float(plain.abs().max())
            if not torch.isfinite(got).all() or float((got - plain).abs().max()) > 0.02 * max(scale, 1e-6):
                return None
            return fused
        except (AttributeError, RuntimeError, TypeError):
            return None

    def _fused_forward(self, x: torch.Tensor, fused: tuple) -> torch.Tensor:
        unary, binary, layers = fused
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        for packed, bias, pad, stride, residual in layers:
            if residual:
                x = binary(x, x, packed, bias, pad, stride, [1, 1], 1, "add", None, "relu", [], "")
            else:
                x = unary(x, packed, bias, pad, stride, [1, 1], 1, "relu", [], "")
        return x.reshape(x.shape[0], -1).float()

    def _module_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype).contiguous(memory_format=torch.channels_last)).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused is not None:
            return self._fused_forward(x, self._fused)
        return self._module_forward(x)


def check_precision(precision: str) -> str:
    """Validate a precision name ("exact" or "fast")."""
    if precision not in ENCODER_PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; expected one of {', '.join(ENCODER_PRECISIONS)}")
    return precision


def prepare_encoder(
    encoder: "nn.Module | PreparedEncoder",
    *,
    precision: str = "exact",
    device: "str | torch.device" = "auto",
) -> PreparedEncoder:
    """Make an encoder ready to run many batches at one precision on one device.

    Parameters
    ----------
    encoder : AudioEncoder (any other module runs as is, "exact" only), or an already prepared one
    precision : "exact" or "fast"
        "exact": bit-identical to upstream's recipe on this CPU for any batch size and thread
        count (float32, oneDNN, BatchNorm unfolded); on CUDA float32 with TF32 off.
        "fast": BatchNorm folded, bfloat16 on CPUs with AVX512-BF16/AMX, float16 on CUDA;
        error bound in ``pipeline.PRECISIONS``.
    device : "auto", "cpu", "cuda", …

    Returns
    -------
    PreparedEncoder: (B, 1, 80, 16) float32 tensor on its device → (B, 512) float32

    Examples
    --------
    >>> prepare_encoder(load_encoder(seeded_state_dict()), device="cpu").precision
    'exact'
    """
    check_precision(precision)
    dev = resolve_device(device)
    if isinstance(encoder, PreparedEncoder):
        if encoder.precision != precision or encoder.device != dev:
            raise ConfigError(f"encoder was prepared for {encoder.precision!r} on {encoder.device}, "
                              f"not {precision!r} on {dev}")
        return encoder
    if not isinstance(encoder, nn.Module):
        raise ConfigError(f"encoder must be an AudioEncoder, got {type(encoder).__name__}")
    batch = _DEFAULT_BATCH[("cuda" if dev.type == "cuda" else "cpu", precision)]
    if precision == "fast":
        if not isinstance(encoder, AudioEncoder):
            raise ConfigError(f"precision 'fast' needs an AudioEncoder (it folds BatchNorm), got {type(encoder).__name__}")
        prepared: PreparedEncoder = _Fast(encoder, dev, batch)
    else:
        conv = _onednn_conv() if dev.type == "cpu" else None
        prepared = (_ExactOneDNN(encoder, conv, batch) if conv is not None and isinstance(encoder, AudioEncoder)
                    else _ModuleExact(encoder, dev, batch))
    if isinstance(encoder, AudioEncoder):
        prepared.provenance = _weights_provenance(encoder)
    return prepared


def _weights_provenance(encoder: AudioEncoder) -> Mapping[str, Any]:
    """Which weights an engine holds: ``state_dict_sha256`` and whether they are the seeded ones."""
    from .dataset import SEEDED_STATE_DICT_SHA256
    from .encoder import state_dict_sha256

    digest = state_dict_sha256(encoder.audio_encoder.state_dict())
    return MappingProxyType({"state_dict_sha256": digest, "untrained_seeded": digest == SEEDED_STATE_DICT_SHA256})
