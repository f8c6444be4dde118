"""CUB-200-2011 models (Table 3): an ImageNet Inception baseline and N×ST-CNN part models.

Backbone: torchvision's GoogLeNet (Inception v1 with batch norm; 6.6M parameters, 1,024 features, ImageNet top-1
error 30.2% in torchvision's weights). The paper used BN-Inception (Ioffe & Szegedy, 27.1% error), which
torchvision does not ship; GoogLeNet is the closest architecture it has (Inception-v3 needs 299 px inputs and is 4×
larger). Pretrained weights come from a local file only (torchvision's ``googlenet-1378be20.pth``), never
downloaded.

- ``cnn``: backbone → global average pool → dropout → linear (200 classes).
- ``st``: N attention transformers at a fixed scale (:class:`~stn_repro.transformers.TranslationFamily`) share one
  localisation net (backbone features → conv 1×1 128 → adaptive pool 7×7 → FC 128 → FC 2N, its head initialised
  so the N crops tile the image); each crop goes through its own backbone (part net); the N pooled feature vectors
  are concatenated → dropout → linear.

Inputs: ImageNet-normalised images ``(B, 3, S, S)``; outputs: logits ``(B, num_classes)``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import GoogLeNet

from stn_repro.transformers import SharedLocalisationTransformers, TranslationFamily

CUB_MODEL_KINDS = ("cnn", "st")
BACKBONE_FEATURES = 1024
WEIGHTS_URL = "https://download.pytorch.org/models/googlenet-1378be20.pth"


class PretrainedWeightsError(FileNotFoundError):
    """The configured pretrained-weights file is missing or is not a GoogLeNet state dict."""


class InceptionFeatures(nn.Module):
    """GoogLeNet up to its last Inception block. Shapes: ``(B, 3, S, S)`` → ``(B, 1024, ⌈S/32⌉, ⌈S/32⌉)``."""

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        # transform_input: torchvision's ImageNet weights expect its re-normalisation of ImageNet-normalised input
        net = GoogLeNet(aux_logits=False, transform_input=weights is not None, init_weights=weights is None)
        if weights is not None:
            net.load_state_dict(load_googlenet_state(weights), strict=True)
        net.fc = nn.Identity()  # ImageNet classifier unused: features only
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        net = self.net
        x = net._transform_input(x)
        for name in ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
                     "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
                     "inception5a", "inception5b"):  # fmt: skip
            x = getattr(net, name)(x)
        return x


def load_googlenet_state(path: str | Path) -> dict[str, Tensor]:
    """GoogLeNet ImageNet weights from a local file (``weights_only=True``), auxiliary classifiers dropped.

    Raises:
        PretrainedWeightsError: the file is missing, unreadable or not a GoogLeNet state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(
            f"pretrained GoogLeNet weights not found at {path}. Download {WEIGHTS_URL} on a machine with network "
            f"access and put the file there (or pass model.weights=<path>); model.weights=none trains from random "
            "weights (smoke runs only: not comparable with the paper)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise PretrainedWeightsError(
            f"cannot read pretrained weights {path}: {type(error).__name__}: {error}"
        ) from None
    if not isinstance(state, dict) or "conv1.conv.weight" not in state:
        raise PretrainedWeightsError(f"{path} is not a torchvision GoogLeNet state dict (no conv1.conv.weight)")
    return {key: value for key, value in state.items() if not key.startswith(("aux1.", "aux2."))}


def tile_centres(count: int, scale: float) -> Tensor:
    """Centres ``(count, 2)`` (x, y in [-1, 1]) of ``count`` crops of side ``scale`` laid out on a near-square grid
    inside the image, row by row: where the parallel transformers start."""
    rows = max(1, math.isqrt(count))
    cols = math.ceil(count / rows)
    reach = 1.0 - scale  # a crop centred at ±reach touches the image border
    centres = []
    for i in range(count):
        row, col = divmod(i, cols)
        x = reach * ((2 * col + 1) / cols - 1)
        y = reach * ((2 * row + 1) / rows - 1)
        centres.append((x, y))
    return torch.tensor(centres, dtype=torch.float32)


class CUBNet(nn.Module):
    """The baseline (``num_parts=0``) or an N×ST-CNN (``num_parts=N``) for CUB.

    Args:
        num_classes: number of bird classes (200).
        num_parts: number of parallel transformers (0: the plain Inception baseline).
        weights: local path of GoogLeNet ImageNet weights, or ``None`` for random initialisation.
        crop_size: side of each transformer's output (paper: 224).
        crop_scale: fixed scale of the crops, as a fraction of the input side (448 px input, 224 px crops: 0.5).
        dropout: dropout before the classifier (paper: 0.7).
        loc_channels, loc_hidden: the localisation net's 1×1 conv channels and FC width (paper summary: 128, 128).

    Shapes: ``(B, 3, S, S)`` → ``(B, num_classes)``; ``transformers.theta`` holds ``(B, N, 2)`` crop centres.
    """

    def __init__(
        self,
        num_classes: int = 200,
        num_parts: int = 0,
        weights: str | Path | None = None,
        crop_size: int = 224,
        crop_scale: float = 0.5,
        dropout: float = 0.7,
        loc_channels: int = 128,
        loc_hidden: int = 128,
    ) -> None:
        super().__init__()
        self.num_parts = num_parts
        self.transformers: SharedLocalisationTransformers | None = None
        if num_parts == 0:
            self.parts = nn.ModuleList([InceptionFeatures(weights)])
        else:
            family = TranslationFamily(crop_scale)
            head = nn.Linear(loc_hidden, 2 * num_parts)
            with torch.no_grad():
                head.weight.zero_()
                head.bias.copy_(tile_centres(num_parts, crop_scale).flatten())
            localisation = nn.Sequential(
                InceptionFeatures(weights),
                nn.Conv2d(BACKBONE_FEATURES, loc_channels, 1),
                nn.ReLU(inplace=True),
                nn.AdaptiveAvgPool2d(7),
                nn.Flatten(),
                nn.Linear(loc_channels * 49, loc_hidden),
                nn.ReLU(inplace=True),
                head,
            )
            self.transformers = SharedLocalisationTransformers(localisation, family, num_parts, crop_size)
            self.parts = nn.ModuleList([InceptionFeatures(weights) for _ in range(num_parts)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(BACKBONE_FEATURES * len(self.parts), num_classes)

    def crops(self, x: Tensor) -> list[Tensor]:
        """What each part net sees: the N crops ``(B, 3, crop, crop)`` (the input itself for the baseline)."""
        return [x] if self.transformers is None else self.transformers(x)

    def forward(self, x: Tensor) -> Tensor:
        features = [self.pool(part(crop)).flatten(1) for part, crop in zip(self.parts, self.crops(x), strict=True)]
        return self.classifier(self.dropout(torch.cat(features, dim=1)))


def cub_model(num_classes: int, parts: int, weights: str | Path | None, **settings: Any) -> CUBNet:
    """The ``model`` node of the CUB experiments: :class:`CUBNet` with ``parts`` transformers (0: the Inception
    baseline); ``weights`` ``None`` or ``"none"``: random initialisation (smoke runs); ``settings``: the other
    options of :class:`CUBNet`."""
    return CUBNet(num_classes=num_classes, num_parts=parts, weights=pretrained_weights(weights), **settings)


def pretrained_weights(weights: str | Path | None) -> str | None:
    """The weights file of ``model.weights``, or ``None`` for ``none`` / null (random initialisation)."""
    return None if weights is None or str(weights).lower() == "none" else str(weights)
