"""SVHN multi-digit models (Table 2): the 11-hidden-layer CNN of Goodfellow et al. and its ST-CNN versions.

Every model maps images ``(B, 3, H, W)`` in ``[0, 1]`` to ``(length_logits, digit_logits)``: ``(B, max_digits)``
over sequence lengths ``1..max_digits`` and ``(B, max_digits, 11)`` over the digit at each position, class 10 being
"no digit" (:data:`stn_repro.data.svhn_preprocess.BLANK`).

Architecture (Goodfellow et al. 2014, as the STN paper uses it): eight 5×5 conv layers of 48, 64, 128, 160, 192,
192, 192, 192 channels ("same" padding, ReLU), each followed by a 2×2 max-pool whose stride alternates 2, 1, 2, 1,
...; then three fully connected layers of 3,072 units (Goodfellow's locally connected layer is replaced by a dense
one, which makes the STN paper's "11 hidden layers"); dropout after every hidden layer but the first.
ST-CNN Single puts one affine transformer at the input (conv localisation 32@5 → pool → 32@5 → FC 32 → FC 32);
ST-CNN Multi puts one before each of the first four conv layers, warping feature maps (FC localisation 32 → 32).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from stn_repro.transformers import SpatialTransformer, conv_localisation, fc_localisation, get_family

CONV_CHANNELS = (48, 64, 128, 160, 192, 192, 192, 192)
FC_UNITS = (3072, 3072, 3072)
DIGIT_CLASSES = 11  # 0-9 and "no digit"
SVHN_MODEL_KINDS = ("cnn", "st_single", "st_multi")


class ConvBlock(nn.Module):
    """5×5 conv ("same") → [batch norm] → ReLU → 2×2 max-pool of ``stride`` (1 keeps the size) → [dropout].

    Shapes: ``(B, C_in, H, W)`` → ``(B, C_out, ⌈H / stride⌉, ⌈W / stride⌉)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float, batch_norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 5, padding=2, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        # stride 2: ceil_mode keeps odd sizes' last row; stride 1: pad right/bottom by one to keep the size
        layers += (
            [nn.MaxPool2d(2, 2, ceil_mode=True)] if stride == 2 else [nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(2, 1)]
        )
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class SequenceHeads(nn.Module):
    """A length head and ``max_digits`` digit heads on shared features.

    Shapes: ``(B, F)`` → ``((B, max_digits), (B, max_digits, 11))``.
    """

    def __init__(self, in_features: int, max_digits: int) -> None:
        super().__init__()
        self.max_digits = max_digits
        self.length = nn.Linear(in_features, max_digits)
        self.digits = nn.Linear(in_features, max_digits * DIGIT_CLASSES)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        digits = self.digits(features).view(-1, self.max_digits, DIGIT_CLASSES)
        return self.length(features), digits


class SVHNNet(nn.Module):
    """The SVHN CNN with an optional spatial transformer before any of its conv layers.

    Args:
        in_shape: ``(3, H, W)`` of the input crops (54×54 for the 64px set).
        transformers: ``{conv layer index: SpatialTransformer}``; a transformer before layer ``i`` warps that
            layer's input (the image for ``i = 0``, a feature map otherwise) and keeps its size.
        channels, fc_units: widths of the conv and fully connected layers.
        dropout: dropout rate after every hidden layer but the first (paper: 0.5).
        batch_norm: batch norm after every conv (a deviation that makes short schedules train; Goodfellow et al.
            used local contrast normalisation of the input instead).
        max_digits: number of digit heads (5).
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        transformers: dict[int, SpatialTransformer] | None = None,
        channels: Sequence[int] = CONV_CHANNELS,
        fc_units: Sequence[int] = FC_UNITS,
        dropout: float = 0.5,
        batch_norm: bool = True,
        max_digits: int = 5,
    ) -> None:
        super().__init__()
        transformers = dict(transformers or {})
        if any(not 0 <= i < len(channels) for i in transformers):
            raise ValueError(
                f"transformer positions {sorted(transformers)} must be conv layer indices < {len(channels)}"
            )
        self.transformers = nn.ModuleDict({str(i): t for i, t in sorted(transformers.items())})
        blocks, in_channels = [], in_shape[0]
        for i, out_channels in enumerate(channels):
            stride = 2 if i % 2 == 0 else 1
            blocks.append(ConvBlock(in_channels, out_channels, stride, dropout if i > 0 else 0.0, batch_norm))
            in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        with torch.device("cpu"), torch.no_grad():
            width = self._features(torch.zeros(1, *in_shape), use_transformers=False).shape[1]
        layers: list[nn.Module] = []
        for units in fc_units:
            layers += [nn.Linear(width, units), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = units
        self.fc = nn.Sequential(*layers)
        self.heads = SequenceHeads(width, max_digits)

    def _features(self, x: Tensor, use_transformers: bool = True) -> Tensor:
        for i, block in enumerate(self.blocks):
            if use_transformers and str(i) in self.transformers:
                x = self.transformers[str(i)](x)
            x = block(x)
        return x.flatten(1)

    @property
    def transformer(self) -> SpatialTransformer | None:
        """The transformer on the input image (layer 0), if any: its output is what the first conv sees."""
        return self.transformers["0"] if "0" in self.transformers else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.heads(self.fc(self._features(x)))


def layer_input_shapes(in_shape: Sequence[int], channels: Sequence[int] = CONV_CHANNELS) -> list[tuple[int, int, int]]:
    """``(C, H, W)`` of the input of every conv layer of :class:`SVHNNet` for images of ``in_shape``."""
    shapes, (c, h, w) = [], tuple(in_shape)
    for i, out_channels in enumerate(channels):
        shapes.append((c, h, w))
        if i % 2 == 0:
            h, w = -(-h // 2), -(-w // 2)
        c = out_channels
    return shapes


def build_svhn_model(
    kind: str,
    in_shape: Sequence[int],
    family: str | None = "affine",
    family_options: dict | None = None,
    multi_positions: Sequence[int] = (0, 1, 2, 3),
    loc_hidden: Sequence[int] = (32, 32),
    loc_channels: Sequence[int] = (32, 32),
    dropout: float = 0.5,
    batch_norm: bool = True,
    max_digits: int = 5,
) -> SVHNNet:
    """One model of Table 2: ``"cnn"``, ``"st_single"`` or ``"st_multi"``.

    Args:
        kind: the model.
        in_shape: ``(3, H, W)`` of the input crops.
        family, family_options: the transformers' family (paper: affine) and its options (unused by ``cnn``).
        multi_positions: conv layers preceded by a transformer in ST-CNN Multi (paper: the first four).
        loc_hidden: FC widths of every localisation net (paper: 32, 32).
        loc_channels: conv channels of ST-CNN Single's localisation net (paper: 32, 32; 5×5, one max-pool).
        dropout, batch_norm, max_digits: see :class:`SVHNNet`.
    """
    if kind not in SVHN_MODEL_KINDS:
        raise ValueError(f"unknown SVHN model {kind!r}; expected one of {SVHN_MODEL_KINDS}")
    transformers: dict[int, SpatialTransformer] = {}
    if kind != "cnn":
        if family is None:
            raise ValueError(f"SVHN model {kind!r} needs a transform family")
        transform = get_family(family, **(family_options or {}))
    if kind == "st_single":
        loc = conv_localisation(in_shape, transform, loc_channels, kernel_size=5, downsample=1, hidden=loc_hidden)
        transformers[0] = SpatialTransformer(loc, transform)
    elif kind == "st_multi":
        shapes = layer_input_shapes(in_shape)
        for i in multi_positions:
            transformers[i] = SpatialTransformer(fc_localisation(shapes[i], transform, hidden=loc_hidden), transform)
    return SVHNNet(in_shape, transformers, dropout=dropout, batch_norm=batch_norm, max_digits=max_digits)
