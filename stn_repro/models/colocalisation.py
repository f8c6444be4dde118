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

  It is trained here (:func:`train_embedding_cnn`) on the 28×28 training digits, each drawn at a random pose
  (:func:`distort_digits`: rotation, scale and translation, as the Table 1 CNNs of Sect. 4.1 were trained on
  distorted digits), with digit-free crops (:func:`background_crops`) trained towards no class, and cached by
  :func:`load_or_train_embedding_cnn` under ``<data root>/cache/`` keyed by the
  digits' checksum and its settings.
* :class:`CeilingAttention`: the attention transformer ``(s, tx, ty)`` with its scale learned below a ceiling that
  the training schedule lowers (:meth:`ColocalisationModel.set_training_progress`) and its crop kept inside the canvas.
* :class:`ColocalisationModel`: ``num_classes`` independent transformers (28×28 output); each image is routed to its
  own class's transformer, which is the same as training one transformer per class on its own set. The frozen
  embedding CNN lives inside (no gradients, excluded from the optimiser and from the trainable parameter count).

Conventions: canvases ``(B, 1, H, W)`` in ``[0, 1]`` with a 0 background; attention parameters ``(s, tx, ty)``
map the output's normalised square to ``[tx − s, tx + s] × [ty − s, ty + s]`` of the input (``align_corners=False``:
``±1`` are the canvas' outer edges).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stn_repro.data.distortions import paste_clutter
from stn_repro.data.errors import one_line
from stn_repro.data.sources import DigitSet
from stn_repro.models.classifiers import CNN
from stn_repro.transformers import AffineFamily, AttentionFamily, SpatialTransformer, conv_localisation, sample
from stn_repro.utils import atomic_path

CROP_SIZE = 28
EMBEDDING_FORMAT_VERSION = 4
DESCRIPTORS = ("activations", "activations_unit", "probabilities")
DEFAULT_DESCRIPTOR = "activations_unit"
EMBEDDING_DEFAULTS: dict[str, Any] = {
    "width": 40,  # the Table 1 CNN's width at the quick profile's 100k parameters
    "iterations": 2000,
    "batch_size": 64,
    "lr": 0.01,
    "momentum": 0.9,
    "seed": 0,
    "rotation": 45.0,  # training poses: rotation in ±45° (the RTS protocol's),
    "scale": [0.6, 1.3],  # the digit drawn at 0.6-1.3 of its size,
    "translation": 0.35,  # shifted by up to ±0.35 (normalised) in x and y
    "background": 0.1,  # this fraction of every batch is digit-free crops trained towards no class (uniform)
    "background_patches": 2,  # clutter patches on half of them (the other half blank)
}
BACKGROUND_PATCH_SIZE = 6  # the TC protocol's clutter patch
START_LOGIT = 3.0  # every transformer starts at s = floor + 0.95 (ceiling − floor), centred


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


def distort_digits(
    images: Tensor, rotation: float, scale: Sequence[float], translation: float, generator: torch.Generator
) -> Tensor:
    """Each digit ``(B, 1, H, W)`` rotated by U(±``rotation``)°, drawn at U(``scale``) of its size and shifted by
    U(±``translation``) (normalised) in x and y → ``(B, 1, H, W)``, zero padded; draws from ``generator``."""
    u = torch.rand(len(images), 4, generator=generator).to(images.device)
    angle = (2 * u[:, 0] - 1) * math.radians(rotation)
    zoom = 1.0 / (scale[0] + (scale[1] - scale[0]) * u[:, 1])  # output → input: the inverse of the drawn size
    shift = (2 * u[:, 2:] - 1) * translation
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    params = torch.stack([cos, -sin, shift[:, 0], sin, cos, shift[:, 1]], dim=1)
    return sample(images, AffineFamily().grid(params, images.shape[-2:]))


def background_crops(digits: Tensor, count: int, patches: int, generator: torch.Generator) -> Tensor:
    """``count`` digit-free 28×28 crops ``uint8 (count, 28, 28)``: the first half blank, the rest holding ``patches``
    random :data:`BACKGROUND_PATCH_SIZE`² pieces of ``digits`` ``uint8 (M, 28, 28)`` (the TC protocol's clutter)."""
    crops = torch.zeros(count, CROP_SIZE, CROP_SIZE, dtype=torch.uint8)
    crops[count // 2 :] = paste_clutter(crops[count // 2 :], digits, patches, BACKGROUND_PATCH_SIZE, generator)[0]
    return crops


def train_embedding_cnn(
    images: np.ndarray, labels: np.ndarray, settings: dict[str, Any], log: Callable[[str], None] = print
) -> EmbeddingCNN:
    """Train an :class:`EmbeddingCNN` on digits ``uint8 (N, 28, 28)`` / labels ``(N,)`` (SGD, cross-entropy).

    ``settings``: :data:`EMBEDDING_DEFAULTS`' keys (``iterations`` steps of ``batch_size`` random digits, each at
    a fresh random pose: :func:`distort_digits`; the reported accuracy is on posed digits too). A ``background``
    fraction of every batch is replaced by :func:`background_crops`, trained towards the uniform distribution
    (cross-entropy to no class): without them a blank crop is classified "1" (p = 0.79), so the co-localisation
    negatives, mostly blank, look like a 1 and push the digit-1 transformer's crops off the digit.
    Deterministic for given digits and settings (its own generator; the global RNG is left untouched).
    """
    generator = torch.Generator().manual_seed(int(settings["seed"]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(settings["seed"]))
        net = EmbeddingCNN(settings["width"])
    digits = torch.from_numpy(np.ascontiguousarray(images))  # uint8 (N, 28, 28): the background crops' clutter source
    x = digits.float().div_(255.0)[:, None]
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    optimiser = torch.optim.SGD(net.parameters(), lr=settings["lr"], momentum=settings["momentum"])
    start = time.perf_counter()
    pose = {key: settings[key] for key in ("rotation", "scale", "translation")}
    batch = int(settings["batch_size"])
    empty = round(float(settings["background"]) * batch)
    for _ in range(int(settings["iterations"])):
        index = torch.randint(len(x), (batch - empty,), generator=generator)
        loss = F.cross_entropy(net(distort_digits(x[index], **pose, generator=generator)), y[index])
        if empty:
            crops = background_crops(digits, empty, int(settings["background_patches"]), generator)
            background_loss = -net(crops.float().div_(255.0)[:, None]).log_softmax(1).mean(1)
            loss = (loss * len(index) + background_loss.sum()) / batch
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        accuracy = (net(distort_digits(x, **pose, generator=generator)).argmax(1) == y).float().mean().item()
    log(
        f"embedding CNN: trained {settings['iterations']} iterations in {time.perf_counter() - start:.0f} s, "
        f"training accuracy {100 * accuracy:.1f}% (posed digits)"
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
    replaced; files are written atomically and read with ``torch.load(weights_only=True)``. Neither path draws from
    the global RNG, so the run that trains the net and the runs that load it go on from the same random state.
    """
    settings = {**EMBEDDING_DEFAULTS, **(settings or {})}
    descriptor = settings.pop("descriptor", DEFAULT_DESCRIPTOR)
    path = embedding_cache_path(root, source_checksum, settings)
    if path.exists():
        try:
            with torch.random.fork_rng(devices=[]):  # as training does: a cache hit leaves the global RNG as a miss
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


class CeilingAttention(SpatialTransformer):
    """Attention ``(s, tx, ty)`` whose scale is learned below a ceiling and whose crop stays inside the canvas.

    From the localisation net's raw outputs ``(a, bx, by)``: ``s = floor + (ceiling − floor) σ(a)`` and
    ``t = (1 − s) tanh(b)``. ``ceiling`` is a buffer (saved with the weights) that the training schedule sets.

    Shapes:
        ``forward(canvases (B, 1, H, W))`` → crops ``(B, 1, 28, 28)``; :attr:`theta` then holds ``(s, tx, ty)``
        ``(B, 3)``.
    """

    def __init__(self, localisation: nn.Module, floor: float, ceiling: float) -> None:
        super().__init__(localisation, AttentionFamily(), CROP_SIZE)
        self.floor = floor
        self.register_buffer("ceiling", torch.tensor(float(ceiling)))

    def predict_theta(self, input: Tensor) -> Tensor:
        raw = self.localisation(input).flatten(1)
        s = self.floor + (self.ceiling - self.floor) * torch.sigmoid(raw[:, :1])
        return torch.cat([s, (1 - s) * torch.tanh(raw[:, 1:])], dim=1)


class ColocalisationModel(nn.Module):
    """``candidates`` attention transformers per digit class (independently initialised restarts trained side by
    side) and a frozen embedding CNN; each class is served by its candidate with the lowest training loss.

    Args:
        in_shape: canvas shape ``(1, H, W)``.
        embedding: the trained :class:`EmbeddingCNN` (frozen here).
        num_classes: number of classes.
        candidates: transformers per class; :attr:`candidate_loss` ``(num_classes, candidates)`` (a buffer, saved
            with the weights, set by the training system) picks the one :meth:`forward` uses by default.
        scale: :class:`CeilingAttention`'s ``floor`` and the ceiling's schedule: ``ceiling_start`` lowered linearly to
            ``ceiling_end`` over the first ``ceiling_until`` of training (half-sides, normalised: 1 is the whole
            canvas, ``28/84`` a digit-sized crop of an 84 px canvas); every transformer starts centred, near the
            ceiling (:data:`START_LOGIT`).
        init_weight_std: std of the localisation heads' initial weights (0: every image starts at the same crop).
        localisation: :func:`~stn_repro.transformers.conv_localisation` options (``channels``, ``kernel_size``,
            ``downsample``, ``hidden``).

    Shapes:
        ``forward(canvases (B, 1, H, W), labels (B,), candidate=None)`` → crops ``(B, 1, 28, 28)`` by each class's
        chosen candidate (or by candidate ``candidate`` of every class); :attr:`theta` then holds each sample's
        ``(s, tx, ty)`` ``(B, 3)``.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        embedding: EmbeddingCNN,
        num_classes: int = 10,
        candidates: int = 1,
        scale: dict[str, float] | None = None,
        init_weight_std: float = 0.0,
        localisation: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.scale = {"floor": 0.2, "ceiling_start": 0.8, "ceiling_end": 0.45, "ceiling_until": 0.8, **(scale or {})}
        self.candidates = candidates
        self.transformers = nn.ModuleList()  # class c's candidate j is transformers[c * candidates + j]
        for _ in range(num_classes * candidates):
            net = conv_localisation(
                tuple(in_shape), AttentionFamily(), weight_std=init_weight_std, **(localisation or {})
            )
            with torch.no_grad():
                net[-1].bias.copy_(torch.tensor([START_LOGIT, 0.0, 0.0]))
            self.transformers.append(CeilingAttention(net, self.scale["floor"], self.scale["ceiling_start"]))
        self.register_buffer("candidate_loss", torch.zeros(num_classes, candidates))
        self.embedding = embedding.requires_grad_(False)  # no batch norm or dropout: its mode does not matter
        self.theta: Tensor | None = None

    def set_training_progress(self, fraction: float) -> None:
        """Set every transformer's scale ceiling for the ``fraction`` of training done (0: start, 1: end)."""
        c = self.scale
        ceiling = c["ceiling_start"] + (c["ceiling_end"] - c["ceiling_start"]) * min(1.0, fraction / c["ceiling_until"])
        for transformer in self.transformers:
            transformer.ceiling.fill_(ceiling)

    def start_scale(self) -> float:
        """The half-side every transformer starts at (centred): ``floor + (ceiling_start − floor) σ(START_LOGIT)``."""
        c = self.scale
        return c["floor"] + (c["ceiling_start"] - c["floor"]) / (1 + math.exp(-START_LOGIT))

    def chosen(self) -> Tensor:
        """Each class's candidate ``(num_classes,)``: the lowest :attr:`candidate_loss` (the first on a tie)."""
        return self.candidate_loss.argmin(1)

    def forward(self, canvases: Tensor, labels: Tensor, candidate: int | None = None) -> Tensor:
        crops = canvases.new_zeros(len(canvases), canvases.shape[1], CROP_SIZE, CROP_SIZE)
        theta = canvases.new_zeros(len(canvases), 3)
        picks = self.chosen().tolist() if candidate is None else [candidate] * len(self.candidate_loss)
        for digit in torch.unique(labels).tolist():
            index = (labels == digit).nonzero().squeeze(1)
            transformer = self.transformers[digit * self.candidates + picks[digit]]
            crops = crops.index_copy(0, index, transformer(canvases[index]))
            theta = theta.index_copy(0, index, transformer.theta)
        self.theta = theta
        return crops

    def embed(self, crops: Tensor) -> Tensor:
        """Embeddings ``e(·)`` ``(B, D)`` of 28×28 crops ``(B, 1, 28, 28)`` (gradients flow to the crops only)."""
        return self.embedding.embed(crops)


def colocalisation_model(
    in_shape: Sequence[int],
    num_classes: int,
    digits: DigitSet,
    cache_root: str | Path,
    embedding: dict[str, Any],
    log: Callable[[str], None] = print,
    **settings: Any,
) -> ColocalisationModel:
    """The ``model`` node of the co-localisation experiments: :class:`ColocalisationModel` over the embedding CNN
    of :func:`load_or_train_embedding_cnn` (``embedding``: its settings; trained once on the training ``digits``
    and cached under ``cache_root``); ``settings``: the other options of :class:`ColocalisationModel`."""
    cnn = load_or_train_embedding_cnn(
        cache_root, digits.checksum, digits.train_images, digits.train_labels, embedding, log
    )
    return ColocalisationModel(in_shape, cnn, num_classes=num_classes, **settings)
