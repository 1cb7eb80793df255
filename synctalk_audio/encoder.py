"""The conv AudioEncoder (the library's only ``torch.nn.Module``), checkpoint loading and
batched encoding.

Layout and parameter names follow SyncTalk_2D's ``AudioEncoder`` exactly (2,812,672
parameters), so upstream checkpoints load unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import os
import pickle
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .batches import check_positive_int, encode_in_batches
from .config import FEATURE_DIM
from .errors import CheckpointError, ConfigError, ShapeError

__all__ = [
    "ENCODER_LAYOUT",
    "FEATURE_DIM",
    "AudioEncoder",
    "fold_batchnorm",
    "seeded_state_dict",
    "state_dict_sha256",
    "normalize_state_dict",
    "load_encoder",
    "resolve_device",
    "encode_batch",
    "encode_windows",
    "prepare_encoder",
    "PreparedEncoder",
    "ENCODER_PRECISIONS",
    "check_precision",
    "layer_shapes",
    "encoder_flops",
    "cpu_has_bf16",
]

#: (in_channels, out_channels, kernel, stride, padding, residual) of the 13 blocks.
ENCODER_LAYOUT: tuple[tuple[int, int, int, tuple[int, int], int, bool], ...] = (
    (1, 32, 3, (1, 1), 1, False),
    (32, 32, 3, (1, 1), 1, True),
    (32, 32, 3, (1, 1), 1, True),
    (32, 64, 3, (3, 1), 1, False),
    (64, 64, 3, (1, 1), 1, True),
    (64, 64, 3, (1, 1), 1, True),
    (64, 128, 3, (3, 3), 1, False),
    (128, 128, 3, (1, 1), 1, True),
    (128, 128, 3, (1, 1), 1, True),
    (128, 256, 3, (3, 2), 1, False),
    (256, 256, 3, (1, 1), 1, True),
    (256, 512, 3, (1, 1), 0, False),
    (512, 512, 1, (1, 1), 0, False),
)
_PREFIX = "audio_encoder."
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class _ConvBlock(nn.Module):
    """Conv2d(bias) → BatchNorm2d → optional residual add of the input → ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: tuple[int, int], padding: int, residual: bool):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class AudioEncoder(nn.Module):
    """SyncTalk_2D's audio encoder: (B, 1, 80, 16) mel windows → (B, 512) features.

    State-dict keys are ``audio_encoder.{i}.conv_block.{0,1}.*`` like upstream; use
    :func:`load_encoder` to read a checkpoint in any of its usual spellings.

    Examples
    --------
    >>> enc = AudioEncoder().eval()
    >>> enc(torch.zeros(2, 1, 80, 16)).shape
    torch.Size([2, 512])
    """

    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = nn.Sequential(*(_ConvBlock(*spec) for spec in ENCODER_LAYOUT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.audio_encoder(x)
        return out.squeeze(3).squeeze(2)


class _FoldedBlock(nn.Module):
    def __init__(self, conv: nn.Conv2d, residual: bool):
        super().__init__()
        self.conv = conv
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.residual:
            out = out + x
        return torch.relu(out)


class _FoldedEncoder(nn.Module):
    def __init__(self, blocks: Iterable[nn.Module]):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).flatten(1)


def fold_batchnorm(encoder: AudioEncoder) -> nn.Module:
    """Return an equivalent eval-only encoder with every BatchNorm folded into its conv.

    ``w' = w·γ/√(var+ε)``, ``b' = (b − mean)·γ/√(var+ε) + β``, computed in float64 and stored
    in the encoder's dtype. Outputs match the unfolded encoder to float32 round-off only:
    ~5e-5..1.2e-4 absolute on the seeded weights' features of magnitude ~100, which is over the
    "exact" budget (1e-5), so the exact path never folds; "fast" precision and the exports do.

    Returns
    -------
    nn.Module mapping (B, 1, 80, 16) → (B, 512)
    """
    blocks = []
    for block in encoder.audio_encoder:
        conv, bn = block.conv_block[0], block.conv_block[1]
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        with torch.device("meta"):  # no random initialisation: both parameters are assigned below
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
        with torch.no_grad():
            fused.weight = nn.Parameter((conv.weight.double() * scale[:, None, None, None]).to(conv.weight.dtype))
            fused.bias = nn.Parameter(((conv.bias.double() - bn.running_mean.double()) * scale + bn.bias.double())
                                      .to(conv.bias.dtype))
        blocks.append(_FoldedBlock(fused, block.residual))
    folded = _FoldedEncoder(blocks).to(next(encoder.parameters()).device).eval()
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded


def seeded_state_dict(seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """Deterministic *untrained* weights in the upstream checkpoint layout (no prefix).

    For tests, demos and reference datasets when the real ``audio_visual_encoder.pth`` is not
    at hand. Recipe (shared with ``golden/make_golden.py``): ``rng = default_rng(seed)``; per
    block draw conv weight ``N(0,1)·√(2/fan_in)``, bias ``0.01·N``, BN γ ``1+0.1·N``,
    β ``0.1·N``, mean ``0.1·N``, var ``1+0.5·U[0,1)``, each cast to float32.

    Returns
    -------
    OrderedDict of 91 tensors, keys ``0.conv_block.0.weight`` … ``12.conv_block.1.num_batches_tracked``
    """
    rng = np.random.default_rng(seed)
    sd: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for i, (cin, cout, k, _stride, _pad, _res) in enumerate(ENCODER_LAYOUT):
        fan_in = cin * k * k
        draws = {
            "0.weight": rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / fan_in),
            "0.bias": rng.standard_normal(cout) * 0.01,
            "1.weight": 1.0 + 0.1 * rng.standard_normal(cout),
            "1.bias": 0.1 * rng.standard_normal(cout),
            "1.running_mean": 0.1 * rng.standard_normal(cout),
            "1.running_var": 1.0 + 0.5 * rng.random(cout),
        }
        for name, value in draws.items():
            sd[f"{i}.conv_block.{name}"] = torch.from_numpy(value.astype(np.float32))
        sd[f"{i}.conv_block.1.num_batches_tracked"] = torch.tensor(0, dtype=torch.int64)
    return sd


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over ``key bytes + tensor bytes`` in key order (the golden manifest's weight hash)."""
    h = hashlib.sha256()
    for key, value in state_dict.items():
        h.update(key.encode())
        h.update(np.ascontiguousarray(value.detach().cpu().numpy()).tobytes())
    return h.hexdigest()


@lru_cache(maxsize=1)
def _expected_shapes() -> Mapping[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: no weight initialisation (saves ~20 ms per load)
        model = AudioEncoder()
    return MappingProxyType({k[len(_PREFIX):]: tuple(v.shape) for k, v in model.state_dict().items()})


def _unwrap(obj: Any) -> Any:
    for _ in range(3):
        if isinstance(obj, Mapping):
            for key in ("state_dict", "model", "audio_encoder"):
                inner = obj.get(key)
                if isinstance(inner, Mapping):
                    obj = inner
                    break
            else:
                return obj
    return obj


def normalize_state_dict(obj: Any, *, source: str = "checkpoint") -> "OrderedDict[str, torch.Tensor]":
    """Check and canonicalise a loaded checkpoint to upstream keys without prefix.

    Accepts plain state dicts, keys with ``audio_encoder.`` / ``module.`` prefixes, and the
    ``{"state_dict": …}`` / ``{"model": …}`` wrappers.

    Raises
    ------
    CheckpointError
        Not a mapping of tensors, empty, missing/unexpected keys, wrong shapes, NaN/Inf.
    """
    obj = _unwrap(obj)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} is not a state dict (got {type(obj).__name__})")
    if len(obj) == 0:
        raise CheckpointError(f"{source} is an empty state dict")
    clean: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in obj.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{source} has a non-string key {key!r}")
        name = key
        for prefix in ("module.", _PREFIX):
            if name.startswith(prefix):
                name = name[len(prefix):]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: value of {key!r} is {type(value).__name__}, expected a tensor")
        clean[name] = value
    expected = _expected_shapes()
    missing = [k for k in expected if k not in clean]
    unexpected = [k for k in clean if k not in expected]
    if missing or unexpected:
        def _few(keys: list[str]) -> str:
            return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_few(unexpected)}")
        raise CheckpointError(f"{source} does not match the AudioEncoder layout: " + "; ".join(parts))
    for key, shape in expected.items():
        got = tuple(clean[key].shape)
        if got != shape:
            raise CheckpointError(f"{source}: {key} has shape {got}, expected {shape}")
        t = clean[key]
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{source}: {key} contains NaN or Inf weights")
    return OrderedDict((k, clean[k]) for k in expected)


def _read_checkpoint(path: Path) -> Any:
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint path is a directory, expected a .pth file: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file is empty (0 bytes): {path}")
    if path.suffix.lower() == ".onnx":
        raise CheckpointError(f"{path} is an ONNX model, not PyTorch weights: this step needs the .pth "
                              "checkpoint (pipeline(), StreamingPipeline and the CLI take the .onnx as it is)")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Weights only load failed" in str(exc):
            first = "it holds Python objects that would run code when unpickled (refused; only tensors are allowed)"
        raise CheckpointError(f"cannot load checkpoint {path}: {first}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError, KeyError,
            TypeError, IndexError, UnicodeDecodeError, MemoryError, OverflowError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise CheckpointError(f"cannot load checkpoint {path}: not a PyTorch state dict ({text[:160]})") from None


def load_encoder(
    checkpoint: "str | os.PathLike | Mapping[str, torch.Tensor]",
    *,
    device: "str | torch.device" = "cpu",
) -> AudioEncoder:
    """Build an :class:`AudioEncoder` in eval mode from a checkpoint file or a state dict.

    The file is read with ``torch.load(weights_only=True)``: pickles that would run code are
    refused. Keys may carry the ``audio_encoder.`` prefix or not.

    Parameters
    ----------
    checkpoint : path or mapping
        ``audio_visual_encoder.pth`` or an in-memory state dict (e.g. :func:`seeded_state_dict`).
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"auto"``…

    Returns
    -------
    AudioEncoder (eval mode, gradients off)

    Raises
    ------
    CheckpointError
    """
    if isinstance(checkpoint, Mapping):
        raw, source = checkpoint, "state dict"
    else:
        path = Path(checkpoint)
        raw, source = _read_checkpoint(path), f"checkpoint {path}"
    state = normalize_state_dict(raw, source=source)
    with torch.device("meta"):  # no random initialisation: every tensor comes from ``state``
        model = AudioEncoder()
    own = OrderedDict((k, v.detach().to(dtype=torch.float32 if v.is_floating_point() else v.dtype, device="cpu",
                                         copy=True).contiguous()) for k, v in state.items())
    model.audio_encoder.load_state_dict(own, assign=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(resolve_device(device))


def resolve_device(device: "str | torch.device | None" = "auto") -> torch.device:
    """``"auto"``/None → CUDA when available, else CPU; anything else is checked and returned."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


def _numpy(windows: "np.ndarray | torch.Tensor") -> np.ndarray:
    return windows.detach().cpu().numpy() if isinstance(windows, torch.Tensor) else windows


def _as_input(windows: Any) -> torch.Tensor:
    t = windows if isinstance(windows, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(windows))
    if t.ndim == 3:
        t = t.unsqueeze(1)
    if t.ndim != 4 or tuple(t.shape[1:]) != (1, 80, 16):
        raise ShapeError(f"windows must have shape (N, 80, 16) or (N, 1, 80, 16), got {tuple(windows.shape)}")
    if not t.is_floating_point():
        raise ShapeError(f"windows must be float32, got {t.dtype}")
    return t.to(torch.float32)


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


def layer_shapes(height: int = 80, width: int = 16) -> tuple[tuple[int, int, int], ...]:
    """Output ``(channels, height, width)`` of each of the 13 blocks for one (1, height, width) window.

    Examples
    --------
    >>> layer_shapes()[-1]
    (512, 1, 1)
    """
    shapes = []
    h, w = height, width
    for _cin, cout, k, (sh, sw), pad, _res in ENCODER_LAYOUT:
        h = (h + 2 * pad - k) // sh + 1
        w = (w + 2 * pad - k) // sw + 1
        shapes.append((cout, h, w))
    return tuple(shapes)


def encoder_flops(height: int = 80, width: int = 16) -> int:
    """Floating-point operations of the 13 convolutions for one window: 2 × multiply-adds.

    BatchNorm, residual adds and ReLU (about 0.2 % more) are not counted.

    Examples
    --------
    >>> encoder_flops()
    186171392
    """
    total = 0
    for (cin, _cout, k, _s, _p, _r), (cout, h, w) in zip(ENCODER_LAYOUT, layer_shapes(height, width)):
        total += 2 * cin * k * k * cout * h * w
    return total


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

    Call it on a float32 tensor (B, 1, 80, 16) on :attr:`device` to get (B, 512) float32. The
    weights are copied, so later changes to the source encoder do not reach it.

    Attributes
    ----------
    precision : "exact" or "fast"
    device : torch.device
    compute : str
        What actually runs, e.g. ``"float32 oneDNN convolutions, BatchNorm unfolded"``.
    batch_size : int
        Default windows per forward pass (per worker thread on CPU).
    batch_invariant : bool
        True when a window's features do not depend on the batch it runs in (bit for bit for
        exact on oneDNN; within the bound for fast), so identical windows may be run once.
    """

    precision: str = "exact"
    compute: str = ""
    batch_invariant: bool = False

    def __init__(self, device: torch.device, batch_size: int) -> None:
        self.device = device
        self.batch_size = batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(precision={self.precision!r}, device={str(self.device)!r}, "
                f"compute={self.compute!r}, batch_size={self.batch_size})")


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
        self.compute = "float32 oneDNN convolutions (any batch size), BatchNorm unfolded"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self._layers:
            y = self._conv(x, layer.weight, layer.bias, layer.padding, layer.stride, (1, 1), 1)
            mean, var, gamma, shift, eps = layer.bn
            y = F.batch_norm(y, mean, var, gamma, shift, False, 0.0, eps)
            if layer.residual:
                y.add_(x)
            x = y.relu_()
        return x.reshape(x.shape[0], -1)


class _IEEEFloat32:
    """Context: no TF32 in cuDNN convolutions / CUDA matmuls (restored on exit)."""

    def __enter__(self) -> None:
        self._saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc: Any) -> None:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self._saved


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
        if self.device.type == "cuda":
            with _IEEEFloat32():
                out = self.module(x)
        else:
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
            in_shape = (1, 80, 16)
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
        return _Fast(encoder, dev, batch)
    conv = _onednn_conv() if dev.type == "cpu" else None
    if conv is not None and isinstance(encoder, AudioEncoder):
        return _ExactOneDNN(encoder, conv, batch)
    return _ModuleExact(encoder, dev, batch)


def encode_windows(
    n_windows: int,
    get_windows: Callable[[int, int], "np.ndarray | torch.Tensor"],
    encoder: "nn.Module | PreparedEncoder",
    *,
    batch_size: "int | None" = None,
    device: "str | torch.device" = "auto",
    precision: "str | None" = None,
    threads: "int | None" = None,
    out: "np.ndarray | None" = None,
    progress: "Callable[[int], Any] | None" = None,
    rows: "np.ndarray | None" = None,
) -> np.ndarray:
    """Encode ``n_windows`` mel windows that ``get_windows(lo, hi)`` cuts batch by batch.

    Only the batches in flight exist at any time, so memory does not grow with the audio.
    On CPU the batches run on ``threads`` worker threads with one torch thread each (oneDNN's
    results do not depend on it; torch's thread setting is restored on return); on CUDA
    one after another.

    Parameters
    ----------
    n_windows : int
    get_windows : callable (lo, hi) → float32 (hi − lo, 80, 16) or (hi − lo, 1, 80, 16)
    encoder : AudioEncoder, PreparedEncoder or OnnxEncoder (then onnxruntime runs the batches)
    batch_size : int, optional
        Windows per forward pass; default the prepared encoder's (32 per CPU thread,
        1024/2048 on CUDA). The features do not depend on it (exact: bit for bit).
    device : "auto", "cpu", "cuda", …
    precision : "exact" (default) or "fast"; a PreparedEncoder brings its own
    threads : int, optional
        CPU worker threads; default ``torch.get_num_threads()``.
    out : float32 ndarray (M, 512), optional
        Written in place (e.g. a slice of a larger buffer); M = n_windows unless ``rows``.
    progress : callable(int), optional
        Called with the number of windows each finished batch held.
    rows : int ndarray (n_windows,), optional
        Row of ``out`` for each window (default ``0 … n_windows − 1``); other rows are left alone.

    Returns
    -------
    ndarray, float32, shape (M, 512) (``out`` when given)

    Raises
    ------
    ConfigError, ShapeError (encoder output overflowed to NaN/Inf)
    """
    from .runtime import OnnxEncoder, encode_windows_onnx

    if isinstance(encoder, OnnxEncoder):
        if precision not in (None, "onnx"):
            raise ConfigError(f"precision {precision!r} needs the PyTorch encoder; an OnnxEncoder runs 'onnx'")
        check_positive_int("threads", threads)
        return encode_windows_onnx(
            n_windows, lambda lo, hi: _numpy(get_windows(lo, hi)), encoder, batch_size=batch_size, out=out,
            rows=rows, progress=progress)
    if isinstance(encoder, PreparedEncoder):
        prepared = encoder if precision is None else prepare_encoder(encoder, precision=precision,
                                                                     device=encoder.device if device == "auto" else device)
    else:
        prepared = prepare_encoder(encoder, precision=precision or "exact", device=device)
    bs = check_positive_int("batch_size", batch_size) or prepared.batch_size
    check_positive_int("threads", threads)
    dev = prepared.device

    def run(win: "np.ndarray | torch.Tensor") -> np.ndarray:
        x = win if isinstance(win, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(win, dtype=np.float32))
        x = x.reshape(x.shape[0], 1, 80, 16)
        with torch.inference_mode():
            return prepared(x.to(dev, dtype=torch.float32, non_blocking=True)).cpu().numpy()

    cpu = dev.type == "cpu"
    saved = torch.get_num_threads()
    total = int(threads) if threads is not None else saved
    workers = total if cpu else 1
    try:
        if cpu and workers > 1 and int(n_windows) > bs:
            torch.set_num_threads(1)  # one torch thread per worker; restored below
        elif cpu and total != saved:
            torch.set_num_threads(total)
        return encode_in_batches(n_windows, get_windows, run, batch_size=bs, workers=workers, out=out, rows=rows,
                                 progress=progress)
    finally:
        if torch.get_num_threads() != saved:
            torch.set_num_threads(saved)


def encode_batch(
    windows: "np.ndarray | torch.Tensor",
    encoder: "nn.Module | PreparedEncoder",
    *,
    batch_size: "int | None" = None,
    device: "str | torch.device" = "auto",
    precision: "str | None" = None,
    threads: "int | None" = None,
) -> np.ndarray:
    """Run mel windows through the encoder in batches (eval mode, no autograd).

    Parameters
    ----------
    windows : ndarray or Tensor, float32, shape (N, 80, 16) or (N, 1, 80, 16)
    encoder : AudioEncoder, an OnnxEncoder (:func:`load_onnx_encoder`), or a
        :func:`prepare_encoder` result (any other module, e.g. the
        :func:`fold_batchnorm` form, runs as is)
    batch_size : int, optional
        Windows per forward pass (default: the device's best). Exact results are bit-identical
        for every batch size and thread count on CPU.
    device : "auto", "cpu", "cuda", …
    precision : "exact" (default) or "fast" (see ``pipeline.PRECISIONS``)
    threads : int, optional
        CPU worker threads (default ``torch.get_num_threads()``).

    Returns
    -------
    ndarray, float32, shape (N, 512)

    Examples
    --------
    >>> enc = load_encoder(seeded_state_dict())
    >>> encode_batch(np.zeros((3, 80, 16), np.float32), enc).shape
    (3, 512)
    """
    check_positive_int("batch_size", batch_size)
    x = _as_input(windows)
    if x.shape[0] and not bool(torch.isfinite(x).all()):
        raise ShapeError("windows contain NaN or Inf values")
    try:
        return encode_windows(x.shape[0], lambda lo, hi: x[lo:hi], encoder, batch_size=batch_size, device=device,
                              precision=precision, threads=threads)
    except ShapeError as exc:
        if "overflowed" not in str(exc):
            raise
        peak = float(x.abs().max())
        raise ShapeError(
            f"encoder output overflowed to NaN/Inf (window values up to {peak:.3g}); "
            "expected normalised mel windows in [-4, 4]"
        ) from None
