"""Data layer: digit sources (IDX / torchvision / bundled sample) and the HDF5 cache of generated datasets.

Import the submodules directly (``stn_repro.data.sources``, ``stn_repro.data.cache``); nothing heavy is
imported here.
"""
