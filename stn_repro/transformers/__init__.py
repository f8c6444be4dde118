"""The spatial transformer in plain PyTorch (no Lightning, no Hydra).

``grids`` turns parameters into sampling grids, ``sampling`` holds the coordinate convention and the sampler,
``families`` describes each transform family, ``localisation`` builds identity-initialised localisation nets and
``module`` assembles them into :class:`SpatialTransformer` and :class:`ParallelTransformers`.
"""

from stn_repro.transformers.families import (
    FAMILIES,
    Affine3dFamily,
    AffineFamily,
    AttentionFamily,
    ProjectiveFamily,
    ThinPlateSplineFamily,
    TransformFamily,
    TranslationFamily,
    get_family,
)
from stn_repro.transformers.localisation import conv_localisation, fc_localisation, init_identity_head
from stn_repro.transformers.module import (
    ParallelTransformers,
    SharedLocalisationTransformers,
    SpatialTransformer,
    localisation_parameters,
    split_localisation_parameters,
)
from stn_repro.transformers.sampling import ALIGN_CORNERS, normalized_to_pixel_matrix, sample

__all__ = [
    "ALIGN_CORNERS",
    "FAMILIES",
    "Affine3dFamily",
    "AffineFamily",
    "AttentionFamily",
    "ParallelTransformers",
    "ProjectiveFamily",
    "SharedLocalisationTransformers",
    "SpatialTransformer",
    "ThinPlateSplineFamily",
    "TransformFamily",
    "TranslationFamily",
    "conv_localisation",
    "fc_localisation",
    "get_family",
    "init_identity_head",
    "localisation_parameters",
    "normalized_to_pixel_matrix",
    "sample",
    "split_localisation_parameters",
]
