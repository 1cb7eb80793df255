"""Deterministic *untrained* AudioEncoder weights, for tests, demos and reference datasets.

They are random: features computed with them have the right shapes and the recipe's exact
arithmetic, but mean nothing. Everything that shows them says UNTRAINED.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from .config import ENCODER_LAYOUT

__all__ = ["seeded_state_dict"]


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
