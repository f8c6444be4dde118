"""LightningModules: they own losses, metrics, optimisers and logging; models stay plain ``nn.Module``s."""

from stn_repro.systems.classification import ClassificationSystem, DivergedError

__all__ = ["ClassificationSystem", "DivergedError"]
