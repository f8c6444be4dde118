"""The paper's MNIST classifiers as plain ``nn.Module``s: FCN, CNN and their spatial-transformer versions.

All classifiers take ``(B, C, H, W)`` images and return logits ``(B, num_classes)``; ReLU everywhere; three weight
layers each (FCN: FC → FC → FC; CNN: conv 9×9 → max-pool 2 → conv 7×7 → max-pool 2 → FC). Convolutions use
"same" padding so one architecture serves 28, 21 and 30 px inputs (the paper does not give its padding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class FCN(nn.Module):
    """Fully connected classifier: ``hidden`` ReLU layers then a linear output, which also reads ``extra_features``
    values per sample when given (e.g. the transformer's θ, paper §3.4).

    Shapes: ``(B, C, H, W)`` [and ``extra`` ``(B, extra_features)``] → ``(B, num_classes)``.
    """

    def __init__(
        self, in_shape: Sequence[int], num_classes: int, hidden: Sequence[int], extra_features: int = 0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(in_shape)
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU(inplace=True)]
            width = units
        layers.append(nn.Linear(width + extra_features, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor, extra: Tensor | None = None) -> Tensor:
        if extra is None:
            return self.layers(x)
        return self.layers[-1](torch.cat([self.layers[:-1](x), extra], dim=1))


class CNN(nn.Module):
    """Convolutional classifier: conv k₁×k₁ → max-pool 2 → conv k₂×k₂ → max-pool 2 → linear output.

    Shapes: ``(B, C, H, W)`` [and ``extra`` ``(B, extra_features)``, read by the output layer] →
    ``(B, num_classes)``.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int],
        kernel_sizes: Sequence[int] = (9, 7),
        extra_features: int = 0,
    ) -> None:
        super().__init__()
        if len(channels) != len(kernel_sizes):
            raise ValueError(f"CNN needs one kernel size per conv layer, got {channels} and {kernel_sizes}")
        layers: list[nn.Module] = []
        in_channels = in_shape[0]
        for out_channels, k in zip(channels, kernel_sizes, strict=True):
            layers += [nn.Conv2d(in_channels, out_channels, k, padding=k // 2), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            in_channels = out_channels
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            width = self.features(torch.zeros(1, *in_shape)).shape[1]
        self.output = nn.Linear(width + extra_features, num_classes)

    def forward(self, x: Tensor, extra: Tensor | None = None) -> Tensor:
        features = self.features(x)
        return self.output(features if extra is None else torch.cat([features, extra], dim=1))


class STClassifier(nn.Module):
    """A spatial transformer as the first layer of a classifier, optionally followed by average pooling.

    Args:
        transformer: warps the input (a :class:`SpatialTransformer`, or :class:`ParallelTransformers` whose
            concatenated outputs feed the classifier); its output feeds the classifier.
        classifier: maps the (pooled) transformer output to logits.
        pool: average-pool factor after the transformer (the paper uses 2 on RTS and TC against aliasing).
        theta_to_classifier: also feed the regressed θ to the classifier's output layer (paper §3.4: "for some
            tasks it may be useful to feed the output of the localisation network, θ, forward to the rest of the
            network"); the classifier must take ``extra`` features of θ's size.

    Shapes: ``(B, C, H, W)`` → ``(B, num_classes)``; :attr:`transformer.theta` holds the last θ.
    """

    def __init__(
        self, transformer: nn.Module, classifier: nn.Module, pool: int = 1, theta_to_classifier: bool = False
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.pool = nn.AvgPool2d(pool) if pool > 1 else nn.Identity()
        self.classifier = classifier
        self.theta_to_classifier = theta_to_classifier

    def transformed(self, x: Tensor) -> Tensor:
        """The classifier's input: the warped (and pooled) image."""
        return self.pool(self.transformer(x))

    def forward(self, x: Tensor) -> Tensor:
        transformed = self.transformed(x)
        if self.theta_to_classifier:
            return self.classifier(transformed, self.transformer.theta)
        return self.classifier(transformed)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
