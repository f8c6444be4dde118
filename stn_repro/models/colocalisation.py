"""Co-localisation (appendix A.2): one attention transformer per digit class and a frozen MNIST embedding CNN.

* :class:`EmbeddingCNN`: the "pre-trained MNIST CNN" whose features ``e(·)`` the triplet loss compares: the
  Table 1 CNN (conv 9×9 → max-pool 2 → conv 7×7 → max-pool 2 → FC 10, :class:`~stn_repro.models.classifiers.CNN`),
  as the paper says. ``descriptor`` chooses ``e(·)``:

  - ``"activations"``: the paper's, the two hidden layers' activations and the logits (before the softmax)
    concatenated;
  - ``"activations_unit"``: the same vector scaled to unit length (our default: squared distances in ``[0, 4]``,
    commensurate with the margin of 1; unscaled, a blank crop has a lower loss than the digit's crop, see
    ``results/colocalisation_landscape.md``);
  - ``"probabilities"``: the softmax class probabilities (this project's earlier choice).

  It is trained here on the plain 28×28 training digits (:func:`train_embedding_cnn`) and cached by
  :func:`load_or_train_embedding_cnn` under ``<data root>/cache/`` keyed by the digits' checksum and its settings.
* :class:`ColocalisationModel`: ``num_classes`` independent attention transformers (scale + translation, 28×28
  output); each image is routed to its own class's transformer, which is the same as training one transformer per
  class on its own set. The frozen embedding CNN lives inside (no gradients, excluded from the optimiser and from
  the trainable parameter count).

Conventions: canvases ``(B, 1, H, W)`` in ``[0, 1]`` with a 0 background; attention parameters ``(s, tx, ty)``
map the output's normalised square to ``[tx − s, tx + s] × [ty − s, ty + s]`` of the input (``align_corners=False``:
``±1`` are the canvas' outer edges).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stn_repro.data.errors import one_line
from stn_repro.models.classifiers import CNN
from stn_repro.transformers import AttentionFamily, SpatialTransformer, conv_localisation
from stn_repro.utils import atomic_path

CROP_SIZE = 28
EMBEDDING_FORMAT_VERSION = 2
DESCRIPTORS = ("activations", "activations_unit", "probabilities")
DEFAULT_DESCRIPTOR = "activations_unit"
EMBEDDING_DEFAULTS: dict[str, Any] = {
    "width": 40,  # the Table 1 CNN's width at the quick profile's 100k parameters
    "iterations": 1000,
    "batch_size": 64,
    "lr": 0.01,
    "momentum": 0.9,
    "seed": 0,
}


class EmbeddingCNN(nn.Module):
    """The Table 1 MNIST CNN ``(B, 1, 28, 28) → (B, 10)`` logits; :meth:`embed` gives the descriptor ``e(·)``.

    No batch norm or dropout, so its output does not depend on train/eval mode.

    Args:
        width: channels of both conv layers.
        descriptor: one of :data:`DESCRIPTORS` (see the module docstring).
    """

    def __init__(self, width: int = 40, descriptor: str = DEFAULT_DESCRIPTOR, num_classes: int = 10) -> None:
        super().__init__()
        if descriptor not in DESCRIPTORS:
            raise ValueError(f"unknown embedding descriptor {descriptor!r}; expected one of {DESCRIPTORS}")
        self.net = CNN((1, CROP_SIZE, CROP_SIZE), num_classes, [width, width], (9, 7))
        self.descriptor = descriptor

    def embed(self, images: Tensor) -> Tensor:
        """Descriptors ``e(·)`` ``(B, D)`` of 28×28 images ``(B, 1, 28, 28)``."""
        layers = self.net.features  # conv, ReLU, pool, conv, ReLU, pool, flatten
        first = layers[:3](images)
        second = layers[3:6](first)
        logits = self.net.output(layers[6](second))
        if self.descriptor == "probabilities":
            return logits.softmax(1)
        activations = torch.cat([first.flatten(1), second.flatten(1), logits], dim=1)
        return F.normalize(activations, dim=1) if self.descriptor == "activations_unit" else activations

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


def train_embedding_cnn(
    images: np.ndarray, labels: np.ndarray, settings: dict[str, Any], log: Callable[[str], None] = print
) -> EmbeddingCNN:
    """Train an :class:`EmbeddingCNN` on digits ``uint8 (N, 28, 28)`` / labels ``(N,)`` (SGD, cross-entropy).

    ``settings``: :data:`EMBEDDING_DEFAULTS`' keys (``iterations`` steps of ``batch_size`` random digits).
    Deterministic for given digits and settings (its own generator; the global RNG is left untouched).
    """
    generator = torch.Generator().manual_seed(int(settings["seed"]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(settings["seed"]))
        net = EmbeddingCNN(settings["width"])
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)[:, None]
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    optimiser = torch.optim.SGD(net.parameters(), lr=settings["lr"], momentum=settings["momentum"])
    start = time.perf_counter()
    for _ in range(int(settings["iterations"])):
        index = torch.randint(len(x), (int(settings["batch_size"]),), generator=generator)
        loss = F.cross_entropy(net(x[index]), y[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        accuracy = (net(x).argmax(1) == y).float().mean().item()
    log(
        f"embedding CNN: trained {settings['iterations']} iterations in {time.perf_counter() - start:.0f} s, "
        f"training accuracy {100 * accuracy:.1f}%"
    )
    return net


def embedding_cache_path(root: str | Path, source_checksum: str, settings: dict[str, Any]) -> Path:
    """``<root>/cache/embedding-cnn-<key>.pt``, ``key`` hashing the digits' checksum, settings and format."""
    request = {"checksum": source_checksum, "settings": settings, "format": EMBEDDING_FORMAT_VERSION}
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / "cache" / f"embedding-cnn-{key}.pt"


def load_or_train_embedding_cnn(
    root: str | Path,
    source_checksum: str,
    images: np.ndarray,
    labels: np.ndarray,
    settings: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> EmbeddingCNN:
    """The embedding CNN of these training digits and settings (:data:`EMBEDDING_DEFAULTS`' keys and
    ``descriptor``): from the cache, or trained and cached; the descriptor does not change the weights.

    A cache file that cannot be loaded (corrupt, truncated, other architecture) is reported in one log line and
    replaced; files are written atomically and read with ``torch.load(weights_only=True)``.
    """
    settings = {**EMBEDDING_DEFAULTS, **(settings or {})}
    descriptor = settings.pop("descriptor", DEFAULT_DESCRIPTOR)
    path = embedding_cache_path(root, source_checksum, settings)
    if path.exists():
        try:
            net = EmbeddingCNN(settings["width"], descriptor)
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            log(f"embedding CNN: cache hit: {path}")
            return net
        except Exception as error:  # any unreadable file is rebuilt, never used
            log(f"embedding CNN: cache file {path} is unreadable ({one_line(error)}); rebuilding")
    net = train_embedding_cnn(images, labels, settings, log)
    net.descriptor = descriptor
    with atomic_path(path) as tmp:
        torch.save(net.state_dict(), tmp)
    return net


class ColocalisationModel(nn.Module):
    """``num_classes`` attention transformers (one per digit class) and a frozen embedding CNN.

    Args:
        in_shape: canvas shape ``(1, H, W)``.
        embedding: the trained :class:`EmbeddingCNN` (frozen here).
        num_classes: number of transformers.
        init_scale: every transformer starts as the centred crop of half-side ``init_scale`` (normalised; 1 is the
            whole canvas, ``28/84`` a digit-sized crop of an 84 px canvas).
        init_weight_std: std of the localisation heads' initial weights (0: every image starts at the same crop).
        localisation: :func:`~stn_repro.transformers.conv_localisation` options (``channels``, ``kernel_size``,
            ``downsample``, ``hidden``).

    Shapes:
        ``forward(canvases (B, 1, H, W), labels (B,))`` → crops ``(B, 1, 28, 28)``; :attr:`theta` then holds each
        sample's ``(s, tx, ty)`` ``(B, 3)``.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        embedding: EmbeddingCNN,
        num_classes: int = 10,
        init_scale: float = 0.5,
        init_weight_std: float = 0.0,
        localisation: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        family = AttentionFamily()
        self.transformers = nn.ModuleList()
        for _ in range(num_classes):
            net = conv_localisation(tuple(in_shape), family, weight_std=init_weight_std, **(localisation or {}))
            with torch.no_grad():
                net[-1].bias[0] = init_scale
            self.transformers.append(SpatialTransformer(net, family, CROP_SIZE))
        self.embedding = embedding.requires_grad_(False)  # no batch norm or dropout: its mode does not matter
        self.theta: Tensor | None = None

    def forward(self, canvases: Tensor, labels: Tensor) -> Tensor:
        crops = canvases.new_zeros(len(canvases), canvases.shape[1], CROP_SIZE, CROP_SIZE)
        theta = canvases.new_zeros(len(canvases), 3)
        for digit in torch.unique(labels).tolist():
            index = (labels == digit).nonzero().squeeze(1)
            transformer = self.transformers[digit]
            crops = crops.index_copy(0, index, transformer(canvases[index]))
            theta = theta.index_copy(0, index, transformer.theta)
        self.theta = theta
        return crops

    def embed(self, crops: Tensor) -> Tensor:
        """Embeddings ``e(·)`` ``(B, D)`` of 28×28 crops ``(B, 1, 28, 28)`` (gradients flow to the crops only)."""
        return self.embedding.embed(crops)
