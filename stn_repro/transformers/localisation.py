"""Localisation networks: image → transform parameters, starting at the identity transform.

The last layer of every builder is a :class:`torch.nn.Linear` whose weights are zero and whose bias is the
family's identity, so a fresh transformer passes its input through unchanged (the paper's initialisation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stn_repro.transformers.families import TransformFamily


def init_identity_head(head: nn.Linear, family: TransformFamily, weight_std: float = 0.0) -> nn.Linear:
    """Set ``head`` to emit ``family``'s identity: bias = identity, weights = 0 (or ``N(0, weight_std²)``).

    A small ``weight_std`` makes the initial transform depend slightly on the input while staying the identity
    on average (useful to break the symmetry of parallel transformers).
    """
    if head.out_features != family.num_params:
        raise ValueError(
            f"localisation head has {head.out_features} outputs, the {family.name} family needs {family.num_params}"
        )
    with torch.no_grad():
        if weight_std > 0:
            head.weight.normal_(0.0, weight_std)
        else:
            head.weight.zero_()
        head.bias.copy_(family.identity(1, dtype=head.bias.dtype)[0])
    return head


def _flat_features(body: nn.Module, in_shape: Sequence[int]) -> int:
    try:
        with torch.no_grad():
            return body(torch.zeros(1, *in_shape)).flatten(1).shape[1]
    except RuntimeError as error:
        raise ValueError(f"input shape {tuple(in_shape)} is too small for this localisation net: {error}") from None


def _with_fc_head(
    features: list[nn.Module],
    in_shape: Sequence[int],
    hidden: Sequence[int],
    family: TransformFamily,
    weight_std: float,
) -> nn.Sequential:
    """``features`` → flatten → ReLU FC layers of widths ``hidden`` → identity-initialised head."""
    layers = [*features, nn.Flatten()]
    width = _flat_features(nn.Sequential(*layers), in_shape)
    for units in hidden:
        layers += [nn.Linear(width, units), nn.ReLU(inplace=True)]
        width = units
    layers.append(init_identity_head(nn.Linear(width, family.num_params), family, weight_std))
    return nn.Sequential(*layers)


def fc_localisation(
    in_shape: Sequence[int],
    family: TransformFamily,
    hidden: Sequence[int] = (32, 32),
    downsample: int = 1,
    weight_std: float = 0.0,
) -> nn.Sequential:
    """Fully connected localisation net (the paper's ST-FCN: 32-unit ReLU layers).

    Args:
        in_shape: input shape without the batch, ``(C, H, W)`` or ``(C, D, H, W)``.
        family: the transform family whose parameters the net emits.
        hidden: widths of the hidden ReLU layers.
        downsample: max-pool factor applied to the input first (1: none); keeps the first layer small on large
            canvases.
        weight_std: see :func:`init_identity_head`.

    Returns:
        ``nn.Sequential`` mapping ``(B, *in_shape)`` to ``(B, P)``; its last module is the identity head.
    """
    pool = {3: nn.MaxPool2d, 4: nn.MaxPool3d}[len(in_shape)]
    layers: list[nn.Module] = [pool(downsample)] if downsample > 1 else []
    return _with_fc_head(layers, in_shape, hidden, family, weight_std)


def conv_localisation(
    in_shape: Sequence[int],
    family: TransformFamily,
    channels: Sequence[int] = (20, 20),
    kernel_size: int = 5,
    downsample: int = 2,
    hidden: Sequence[int] = (20,),
    weight_std: float = 0.0,
) -> nn.Sequential:
    """Convolutional localisation net (the paper's ST-CNN: ×2 downsampling, conv 20@5×5 → max-pool 2 →
    conv 20@5×5 → FC 20 → θ; ReLU after every layer but the head).

    Args:
        in_shape: ``(C, H, W)`` (2D families) or ``(C, D, H, W)`` (3D families).
        family: the transform family whose parameters the net emits.
        channels: output channels of each conv layer; a max-pool of 2 follows every conv layer but the last.
        kernel_size: conv kernel size (no padding).
        downsample: max-pool factor applied to the input first (1: none).
        hidden: widths of the FC ReLU layers before the head.
        weight_std: see :func:`init_identity_head`.

    Returns:
        ``nn.Sequential`` mapping ``(B, *in_shape)`` to ``(B, P)``; its last module is the identity head.
    """
    dims = len(in_shape) - 1
    conv = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
    pool = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims]
    body: list[nn.Module] = [pool(downsample)] if downsample > 1 else []
    in_channels = in_shape[0]
    for i, out_channels in enumerate(channels):
        body += [conv(in_channels, out_channels, kernel_size), nn.ReLU(inplace=True)]
        if i < len(channels) - 1:
            body.append(pool(2))
        in_channels = out_channels
    return _with_fc_head(body, in_shape, hidden, family, weight_std)
