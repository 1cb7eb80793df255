"""The conv AudioEncoder (the library's only ``torch.nn.Module``), BatchNorm folding and
checkpoint loading.

Layout and parameter names follow SyncTalk_2D's ``AudioEncoder`` exactly (2,812,672
parameters), so upstream checkpoints load unchanged. The engines that run it live in
:mod:`synctalk_audio.torch_engines`; seeded stand-in weights in :mod:`synctalk_audio.seeded`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import warnings
import zipfile
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from ._io import check_input_file
from .config import ENCODER_LAYOUT, FEATURE_DIM
from .errors import CheckpointError
from .seeded import seeded_state_dict  # re-exported: stand-in weights in the checkpoint layout

__all__ = ["ENCODER_LAYOUT", "FEATURE_DIM", "AudioEncoder", "fold_batchnorm", "state_dict_sha256",
           "normalize_state_dict", "load_encoder", "seeded_state_dict"]

_PREFIX = "audio_encoder."


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


@lru_cache(maxsize=1)
def _expected_dtypes() -> Mapping[str, torch.dtype]:
    with torch.device("meta"):
        model = AudioEncoder()
    return MappingProxyType({k[len(_PREFIX):]: v.dtype for k, v in model.state_dict().items()})


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
        Not a mapping of tensors, empty, missing/unexpected keys, wrong shapes, NaN/Inf, sparse or
        meta tensors, or integer/bool tensors where the encoder has float weights.
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
    expected_dtypes = _expected_dtypes()
    for name, value in clean.items():
        if value.layout != torch.strided:
            raise CheckpointError(f"{source}: {name} is a {str(value.layout).replace('torch.', '')} tensor, "
                                  "expected a dense (strided) tensor; save it with tensor.to_dense()")
        if value.is_meta or value.device.type == "meta":
            raise CheckpointError(f"{source}: {name} is a meta tensor (a shape without data), expected weights")
        want = expected_dtypes.get(name)  # weights and statistics are float; num_batches_tracked is not used
        if want is not None and want.is_floating_point and not value.is_floating_point():
            raise CheckpointError(f"{source}: {name} has dtype {str(value.dtype).replace('torch.', '')}, "
                                  "expected a floating-point tensor (float32)")
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


# Files people hand over as a checkpoint, by their first bytes, and what they most likely are.
_FILE_KINDS = ((b"RIFF", "an audio file"), (b"fLaC", "an audio file"), (b"OggS", "an audio file"),
               (b"ID3", "an audio file"), (b"\x93NUMPY", "a NumPy .npy array"), (b"\x89HDF", "an HDF5 file"),
               (b"\x1f\x8b", "a gzip archive"), (b"version https://git-lfs", "a Git LFS pointer, not the file"),
               (b"<", "an HTML page (a failed download)"))
# torch's legacy (non-zip) format opens with this magic number, pickled as LONG1: after the
# protocol header (2 bytes, or 11 with a protocol-4 frame).
_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_NOT_STATE_DICT = "not a PyTorch state dict"
_PLAIN_PICKLE = f"{_NOT_STATE_DICT} (a plain pickle, not a torch.save file)"
#: Pickle opcodes that import or call something: what makes unpickling run code.
_CODE_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD"})
_TORCHSCRIPT = ("it is a TorchScript archive; give the state dict (audio_visual_encoder.pth) "
                "or an exported .onnx")


def _shown(head: bytes) -> str:
    """The start of a file for a message: its leading printable word (up to 8 characters) or hex bytes."""
    n = next((i for i, c in enumerate(head[:8]) if not 32 < c < 127), min(len(head), 8))
    return head[:n].decode("ascii") if n >= 2 else "bytes " + head[:4].hex(" ")


def _is_text(head: bytes) -> bool:
    text = head.decode("utf-8", errors="replace").rstrip("\ufffd")  # a cut multi-byte character at the end
    return bool(text) and "\ufffd" not in text and all(c.isprintable() or c.isspace() for c in text)


def _not_torch_save(head: bytes) -> "str | None":
    """Why a file starting with ``head`` cannot be a torch.save file; None for a zip or torch's legacy pickle."""
    if head.startswith(b"PK") or (head.startswith(b"\x80") and _LEGACY_MAGIC in head[:32]):
        return None
    if head.startswith(b"\x80"):
        return _PLAIN_PICKLE
    guess = next((what for magic, what in _FILE_KINDS if head.startswith(magic)), None)
    guess = guess or ("a text file" if _is_text(head) else None)
    return f"{_NOT_STATE_DICT} (not a torch.save file; starts with {_shown(head)}" + (f": {guess}?)" if guess else ")")


def _pickle_runs_code(path: Path, limit: int = 1 << 24) -> bool:
    """True if the pickle in ``path`` (its first ``limit`` bytes) imports or calls anything, read
    with :mod:`pickletools` (nothing is unpickled)."""
    import io
    import pickletools

    with open(path, "rb") as fh:
        data = fh.read(limit)
    ops = pickletools.genops(io.BytesIO(data))
    try:
        for op, _, _ in ops:
            if op.name in _CODE_OPCODES:
                return True
    except Exception:  # a cut or damaged pickle: what was read before the damage named nothing
        pass
    return False


def _zip_members_problem(names: "list[str]") -> "str | None":
    """Why a zip with these members is not a torch.save state dict; None when it has torch.save's records."""
    base = {name.rpartition("/")[2] for name in names}
    if "constants.pkl" in base:
        return _TORCHSCRIPT
    if not {"data.pkl", "version"} <= base:
        return f"{_NOT_STATE_DICT} (a zip archive without torch.save's data.pkl and version records)"
    return None


def _sniff_checkpoint(path: Path) -> "str | None":
    """Why the file cannot be a torch.save state dict, judged from its bytes before torch.load; None to try."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    problem = _not_torch_save(head)
    if problem == _PLAIN_PICKLE and _pickle_runs_code(path):
        return (f"{_NOT_STATE_DICT}: a plain pickle (not torch.save) naming Python objects, which would run "
                "code when unpickled — refused, never unpickled; save state dicts with torch.save")
    if problem is not None or not head.startswith(b"PK"):
        return problem
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, OverflowError):
        return f"{_NOT_STATE_DICT} (a truncated or corrupt torch.save zip)"
    return _zip_members_problem(names)


def _short_detail(exc: BaseException) -> str:
    """torch's text for a message when it is one short complete sentence; "" otherwise (long paragraphs
    cut mid-sentence, or the bare key/index of a KeyError or IndexError, say nothing to the user)."""
    if isinstance(exc, (KeyError, IndexError, AttributeError, TypeError)):
        return ""
    text = " ".join(str(exc).split())
    return f": {text}" if 0 < len(text) <= 80 and " " in text else ""


def _unpickling_reason(exc: pickle.UnpicklingError) -> str:
    """Our words for torch's weights-only refusal (naming the first refused object) or a broken pickle."""
    text = str(exc)
    if "Weights only load failed" not in text:
        return f"{_NOT_STATE_DICT} (a truncated or damaged torch.save file{_short_detail(exc)})"
    found = re.search(r"GLOBAL ([\w.]+)", text)
    what = f" ({found.group(1)})" if found else ""
    return (f"{_NOT_STATE_DICT}: it holds Python objects{what} that would run code when unpickled "
            "(refused; only tensors are allowed)")


def _read_checkpoint(checkpoint: "str | os.PathLike") -> tuple[Path, Any]:
    """Check and ``torch.load`` (weights only) a checkpoint file: (its path, the loaded object)."""
    path, _ = check_input_file(checkpoint, what="checkpoint", error=CheckpointError, expected="a .pth file")
    if path.suffix.lower() == ".onnx":
        raise CheckpointError(f"{path} is an ONNX model, not PyTorch weights: this step needs the .pth "
                              "checkpoint (pipeline(), StreamingPipeline and the CLI take the .onnx as it is)")
    problem = _sniff_checkpoint(path)
    if problem is not None:
        raise CheckpointError(f"cannot load checkpoint {path}: {problem}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            return path, torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"cannot load checkpoint {path}: {_unpickling_reason(exc)}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError, KeyError,
            TypeError, IndexError, UnicodeDecodeError, MemoryError, OverflowError) as exc:
        raise CheckpointError(f"cannot load checkpoint {path}: {_NOT_STATE_DICT} "
                              f"(a truncated or damaged torch.save file{_short_detail(exc)})") from None


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
        path, raw = _read_checkpoint(checkpoint)
        source = f"checkpoint {path}"
    state = normalize_state_dict(raw, source=source)
    with torch.device("meta"):  # no random initialisation: every tensor comes from ``state``
        model = AudioEncoder()
    own = OrderedDict((k, v.detach().to(dtype=torch.float32 if v.is_floating_point() else v.dtype, device="cpu",
                                         copy=True).contiguous()) for k, v in state.items())
    model.audio_encoder.load_state_dict(own, assign=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    from .torch_engines import resolve_device

    return model.to(resolve_device(device))


def __getattr__(name: str) -> Any:
    """``resolve_device`` lives with the engines (:mod:`synctalk_audio.torch_engines`)."""
    if name == "resolve_device":
        from .torch_engines import resolve_device

        return resolve_device
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
