"""Encoder geometry and arithmetic cost (torch-free): layer output shapes and FLOPs per window.

Used by the benchmarks to state the fraction of a CPU's peak that the encoder reaches.
"""

from __future__ import annotations

from .config import ENCODER_LAYOUT

__all__ = ["layer_shapes", "encoder_flops"]


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
