"""LightningModules: they own losses, metrics, optimisers and logging; models stay plain ``nn.Module``s."""

from stn_repro.systems.classification import ClassificationSystem, DivergedError
from stn_repro.systems.parts import PartAttentionSystem
from stn_repro.systems.sequence import SequenceSystem

__all__ = ["ClassificationSystem", "DivergedError", "PartAttentionSystem", "SequenceSystem"]
