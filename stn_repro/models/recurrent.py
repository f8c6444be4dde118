"""Models of the recurrent spatial transformer experiment (Sønderby et al. 2015, arXiv:1509.05329): 3-digit
cluttered MNIST sequences on a 100×100 canvas, one softmax over the 10 digits per position.

Every model maps canvases ``(B, 1, 100, 100)`` in ``[0, 1]`` to logits ``(B, L, 10)`` (``L = 3`` positions, left to
right). Layer sizes follow the authors' public Lasagne code (github.com/skaae/recurrent-spatial-transformer-code,
marked [code]); the rest is marked [guess]. Every conv layer is 3×3 without padding followed by a ReLU; "pool"
is a 2×2 max-pool.

* **CNN** [guess: no code published]: the CNN+SPN without its transformer, i.e. the canvas resized to
  ``size``² (bilinear, the same samples as the CNN+SPN's transformer at the identity) → the CNN+SPN's classifier.
* **CNN+SPN** (the authors' FFN-SPN) [code]: one affine transformer at the input with a ``size``² output (50: ×2
  downsampling); localisation pool → conv 20 → pool → conv 20 → pool → conv 20 → FC 200 → θ; classifier conv 96 →
  pool → conv 96 → pool → conv 96 → FC 400 → 3 heads of 10 (one linear layer of 3·10 outputs).
* **RNN-SPN** [code]: the same conv encoder (pool → conv 20 → pool → conv 20 → pool → conv 20) reads the canvas
  once; its features are fed to a GRU of 256 units at every one of the ``L`` steps; each step's hidden state → a
  linear head (zero weights, identity bias) → one affine θ → a ``size``² glimpse of the canvas (33: the authors'
  ×3 downsampling) → a classifier shared by all steps (conv 32 → pool → conv 32 → pool → conv 32 → FC 400 → 10)
  → the logits of that position.

The RNN-SPN's recurrent localisation net lives inside a
:class:`~stn_repro.transformers.SharedLocalisationTransformers` (``model.transformers``), so the optimiser's
localisation parameter group (encoder, GRU and θ head) and the systems' θ diagnostics find it; its ``theta`` holds
the ``(B, L, 6)`` parameters of the last forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stn_repro.transformers import (
    ALIGN_CORNERS,
    SharedLocalisationTransformers,
    SpatialTransformer,
    TransformFamily,
    get_family,
    init_identity_head,
)

SEQ_MODEL_KINDS = ("cnn", "cnn_spn", "rnn_spn")
DIGIT_CLASSES = 10
KERNEL = 3


def classifier_output_size(size: int, layers: int) -> int:
    """Side of the last feature map of :class:`ConvClassifier` on a ``size``² input with ``layers`` conv layers
    (≤ 0: the input is too small)."""
    for i in range(layers):
        size -= KERNEL - 1
        if i < layers - 1:
            size //= 2
    return size


def encoder_output_size(size: int, layers: int) -> int:
    """Side of the last feature map of :func:`conv_encoder` on a ``size``² input (≤ 0: too small)."""
    for _ in range(layers):
        size = size // 2 - (KERNEL - 1)
    return size


def conv_encoder(in_channels: int, channels: Sequence[int]) -> nn.Sequential:
    """pool → conv → ReLU, once per entry of ``channels``, then flatten: ``(B, C, H, W)`` → ``(B, F)``."""
    layers: list[nn.Module] = []
    for out_channels in channels:
        layers += [nn.MaxPool2d(2), nn.Conv2d(in_channels, out_channels, KERNEL), nn.ReLU(inplace=True)]
        in_channels = out_channels
    return nn.Sequential(*layers, nn.Flatten())


class ConvClassifier(nn.Module):
    """conv → ReLU layers with a 2×2 max-pool between them → FC ``hidden`` → ReLU → ``heads`` softmax heads.

    Shapes: ``(B, C, S, S)`` → logits ``(B, heads, num_classes)``.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        channels: Sequence[int],
        hidden: int,
        heads: int,
        num_classes: int = DIGIT_CLASSES,
    ) -> None:
        super().__init__()
        side = classifier_output_size(min(in_shape[1:]), len(channels))
        if side <= 0:
            raise ValueError(f"a {tuple(in_shape)} input is too small for {len(channels)} conv layers")
        layers: list[nn.Module] = []
        in_channels = in_shape[0]
        for i, out_channels in enumerate(channels):
            layers += [nn.Conv2d(in_channels, out_channels, KERNEL), nn.ReLU(inplace=True)]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            in_channels = out_channels
        self.features = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            width = self.features(torch.zeros(1, *in_shape)).shape[1]
        self.hidden = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(inplace=True))
        self.heads = nn.Linear(hidden, heads * num_classes)
        self.shape = (heads, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.heads(self.hidden(self.features(x))).view(len(x), *self.shape)


class SequenceCNN(nn.Module):
    """The CNN (``transformer=None``) and the CNN+SPN: an optional input transformer, then one classifier with a
    head per position.

    Args:
        in_shape: ``(C, H, W)`` of the canvas.
        positions: digits per canvas (``L``).
        size: side of the classifier's input: the transformer's output, or the canvas resized (the CNN).
        channels, hidden: the classifier's conv channels and FC width.
        transformer: the input transformer (its ``out_size`` must be ``size``), or ``None``.

    Shapes: ``(B, C, H, W)`` → logits ``(B, L, 10)``.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        positions: int,
        size: int,
        channels: Sequence[int],
        hidden: int,
        transformer: SpatialTransformer | None = None,
    ) -> None:
        super().__init__()
        self.size = size
        self.transformer = transformer
        self.classifier = ConvClassifier((in_shape[0], size, size), channels, hidden, heads=positions)

    def forward(self, x: Tensor) -> Tensor:
        if self.transformer is not None:
            x = self.transformer(x)
        else:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=ALIGN_CORNERS)
        return self.classifier(x)


class RecurrentLocalisation(nn.Module):
    """Canvas → conv encoder → a GRU run for ``steps`` steps on the same features → per-step θ.

    The GRU's input is the encoder's output at every step (the authors repeat it [code]); its initial state is 0.

    Shapes: ``(B, C, H, W)`` → ``(B, steps · P)``, step-major (``P``: the family's parameter count).
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        family: TransformFamily,
        steps: int,
        channels: Sequence[int],
        units: int,
    ) -> None:
        super().__init__()
        if encoder_output_size(min(in_shape[1:]), len(channels)) <= 0:
            raise ValueError(f"a {tuple(in_shape)} input is too small for {len(channels)} encoder layers")
        self.steps = steps
        self.encoder = conv_encoder(in_shape[0], channels)
        with torch.no_grad():
            width = self.encoder(torch.zeros(1, *in_shape)).shape[1]
        self.gru = nn.GRU(width, units, batch_first=True)
        self.head = init_identity_head(nn.Linear(units, family.num_params), family)

    def forward(self, x: Tensor) -> Tensor:
        features = self.encoder(x)
        states, _ = self.gru(features[:, None].expand(-1, self.steps, -1))
        return self.head(states).flatten(1)


class RecurrentSPN(nn.Module):
    """RNN-SPN: ``L`` glimpses placed by a recurrent localisation net, each classified by one shared classifier.

    Args:
        in_shape: ``(C, H, W)`` of the canvas.
        family: transform family of the glimpses (the paper's: affine).
        positions: digits per canvas (``L``, the GRU's steps).
        size: side of each glimpse.
        channels, hidden: the shared classifier's conv channels and FC width.
        loc_channels, loc_units: the encoder's conv channels and the GRU's width.

    Shapes: ``(B, C, H, W)`` → logits ``(B, L, 10)``; :meth:`glimpses` → ``(B, L, C, size, size)``.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        family: TransformFamily,
        positions: int,
        size: int,
        channels: Sequence[int],
        hidden: int,
        loc_channels: Sequence[int],
        loc_units: int,
    ) -> None:
        super().__init__()
        localisation = RecurrentLocalisation(in_shape, family, positions, loc_channels, loc_units)
        self.transformers = SharedLocalisationTransformers(localisation, family, positions, out_size=size)
        self.classifier = ConvClassifier((in_shape[0], size, size), channels, hidden, heads=1)

    def glimpses(self, x: Tensor) -> Tensor:
        return torch.stack(self.transformers(x), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        glimpses = self.glimpses(x)
        return self.classifier(glimpses.flatten(0, 1)).view(len(x), glimpses.shape[1], -1)


def build_sequence_model(
    kind: str,
    in_shape: Sequence[int],
    positions: int = 3,
    family: str | TransformFamily | None = "affine",
    family_options: dict | None = None,
    size: int = 50,
    channels: Sequence[int] = (96, 96, 96),
    hidden: int = 400,
    loc_channels: Sequence[int] = (20, 20, 20),
    loc_hidden: int = 200,
) -> nn.Module:
    """One of :data:`SEQ_MODEL_KINDS` for canvases of ``in_shape`` ``(C, H, W)``.

    ``loc_hidden`` is the localisation's FC width (``cnn_spn``) or the GRU's width (``rnn_spn``); the localisation
    arguments and ``family`` are unused by ``cnn``. See the module docstring for the architectures.
    """
    if kind not in SEQ_MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(SEQ_MODEL_KINDS)}")
    if kind == "cnn":
        return SequenceCNN(in_shape, positions, size, channels, hidden)
    if family is None:
        raise ValueError(f"model kind {kind!r} needs a transform family")
    family = get_family(family, **(family_options or {}))
    if kind == "rnn_spn":
        return RecurrentSPN(in_shape, family, positions, size, channels, hidden, loc_channels, loc_hidden)
    if encoder_output_size(min(in_shape[1:]), len(loc_channels)) <= 0:
        raise ValueError(f"a {tuple(in_shape)} input is too small for {len(loc_channels)} localisation layers")
    encoder = conv_encoder(in_shape[0], loc_channels)
    with torch.no_grad():
        width = encoder(torch.zeros(1, *in_shape)).shape[1]
    localisation = nn.Sequential(
        encoder,
        nn.Linear(width, loc_hidden),
        nn.ReLU(inplace=True),
        init_identity_head(nn.Linear(loc_hidden, family.num_params), family),
    )
    transformer = SpatialTransformer(localisation, family, out_size=size)
    return SequenceCNN(in_shape, positions, size, channels, hidden, transformer)
