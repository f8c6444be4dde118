"""Classifiers of the paper as plain ``nn.Module``s (no Lightning, no Hydra)."""

from stn_repro.models.build import MODEL_KINDS, build_matched_model, build_model, has_transformer
from stn_repro.models.classifiers import CNN, FCN, STClassifier, count_parameters

__all__ = [
    "CNN",
    "FCN",
    "MODEL_KINDS",
    "STClassifier",
    "build_matched_model",
    "build_model",
    "count_parameters",
    "has_transformer",
]
