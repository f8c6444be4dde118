"""Lightning callbacks for a run's side jobs (each its own file); ``conf/callbacks/`` instantiates them.

- :class:`ThetaStatistics`: θ statistics of the transformers to every logger, every N steps;
- :class:`TransformedImages`: inputs next to the input transformer's outputs (the paper's Figure 3), to W&B and
  ``<figures>/transformed.png``;
- :class:`StepTimer`: the median wall time of a training step (``train/step_ms`` in the run record);
- :func:`build_callbacks`: the side jobs of a configuration's ``callbacks`` nodes.
"""

from stn_repro.callbacks.build import build_callbacks
from stn_repro.callbacks.step_timer import StepTimer
from stn_repro.callbacks.theta_statistics import ThetaStatistics
from stn_repro.callbacks.transformed_images import TransformedImages

__all__ = ["StepTimer", "ThetaStatistics", "TransformedImages", "build_callbacks"]
