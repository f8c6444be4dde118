"""Our warps against independent implementations: Kornia (pixel-space matrices) and SciPy (TPS solve and an
independent bilinear sampler)."""

import numpy as np
import pytest
import torch

from stn_repro.transformers import get_family, normalized_to_pixel_matrix, sample

kornia = pytest.importorskip("kornia")
scipy_interpolate = pytest.importorskip("scipy.interpolate")
scipy_ndimage = pytest.importorskip("scipy.ndimage")

SIZES = [((28, 28), (28, 28)), ((42, 42), (21, 21)), ((29, 33), (31, 27))]


def _pixel_matrix(family, params, in_size, out_size):
    """Output-pixel → input-pixel homographies (B, 3, 3) equivalent to our normalised parameters."""
    to_pixel = normalized_to_pixel_matrix(in_size)
    from_pixel = torch.linalg.inv(normalized_to_pixel_matrix(out_size))
    return to_pixel @ family.matrix(params.double()) @ from_pixel


def _random_params(family, batch, scale, seed):
    g = torch.Generator().manual_seed(seed)
    return family.identity(batch) + scale * torch.randn(batch, family.num_params, generator=g)


@pytest.mark.parametrize("in_size,out_size", SIZES)
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_affine_matches_kornia_warp_affine(in_size, out_size, mode):
    family = get_family("affine")
    params = _random_params(family, 4, 0.25, seed=0)
    image = torch.rand(4, 3, *in_size, generator=torch.Generator().manual_seed(1))
    ours = sample(image, family.grid(params, out_size), mode=mode)
    # Kornia takes the forward (input → output) pixel matrix.
    forward = torch.linalg.inv(_pixel_matrix(family, params, in_size, out_size))[:, :2].float()
    theirs = kornia.geometry.transform.warp_affine(image, forward, out_size, mode=mode, align_corners=True)
    tolerance = 1e-4 if mode == "bilinear" else 0.0
    if mode == "nearest":  # a pixel exactly halfway between two neighbours may round either way
        mismatch = (ours - theirs).abs() > 1e-4
        assert mismatch.float().mean().item() < 1e-3
    else:
        assert (ours - theirs).abs().max().item() < tolerance


@pytest.mark.parametrize("in_size,out_size", SIZES)
def test_projective_matches_kornia_warp_perspective(in_size, out_size):
    family = get_family("projective")
    params = _random_params(family, 4, 0.1, seed=2)
    image = torch.rand(4, 1, *in_size, generator=torch.Generator().manual_seed(3))
    ours = sample(image, family.grid(params, out_size))
    forward = torch.linalg.inv(_pixel_matrix(family, params, in_size, out_size)).float()
    theirs = kornia.geometry.transform.warp_perspective(image, forward, out_size, align_corners=True)
    assert (ours - theirs).abs().max().item() < 1e-4


def _scipy_bilinear(image, pixel_x, pixel_y):
    """Bilinear read of a (H, W) array at pixel coordinates, zero outside (scipy's grid-constant mode)."""
    return scipy_ndimage.map_coordinates(image, [pixel_y, pixel_x], order=1, mode="grid-constant", cval=0.0)


@pytest.mark.parametrize("grid_size", [4, 3])
@pytest.mark.parametrize("regularisation", [0.0, 0.05])
@pytest.mark.parametrize("in_size,out_size", SIZES)
def test_tps_matches_scipy_rbf_interpolation(grid_size, regularisation, in_size, out_size):
    family = get_family("tps", grid_size=grid_size, regularisation=regularisation)
    params = _random_params(family, 3, 0.15, seed=4)
    image = torch.rand(3, 1, *in_size, generator=torch.Generator().manual_seed(5))
    ours_grid = family.grid(params, out_size)
    ours = sample(image, ours_grid)

    # Independent: SciPy's thin-plate RBF through the same control points (its smoothing is our λ), then
    # SciPy's own bilinear sampler in pixel coordinates.
    centres = family.identity(1, dtype=torch.float64).reshape(-1, 2).numpy()
    h, w = out_size
    xs = (2 * np.arange(w) + 1) / w - 1
    ys = (2 * np.arange(h) + 1) / h - 1
    query = np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1).reshape(-1, 2)
    to_pixel = normalized_to_pixel_matrix(in_size).numpy()
    for b in range(3):
        targets = params[b].double().reshape(-1, 2).numpy()
        spline = scipy_interpolate.RBFInterpolator(
            centres, targets, kernel="thin_plate_spline", degree=1, smoothing=regularisation
        )
        source = spline(query)
        assert np.abs(ours_grid[b].reshape(-1, 2).double().numpy() - source).max() < 1e-5
        px = source[:, 0] * to_pixel[0, 0] + to_pixel[0, 2]
        py = source[:, 1] * to_pixel[1, 1] + to_pixel[1, 2]
        theirs = _scipy_bilinear(image[b, 0].double().numpy(), px, py).reshape(h, w)
        assert np.abs(ours[b, 0].double().numpy() - theirs).max() < 1e-4


def test_affine3d_matches_scipy_affine_transform():
    family = get_family("affine3d")
    params = _random_params(family, 2, 0.15, seed=6)
    size = (9, 10, 11)
    volume = torch.rand(2, 1, *size, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    ours = sample(volume, family.grid(params.double(), size))
    # Output voxel (z, y, x) → input voxel via pixel-space matrices; scipy indexes (z, y, x) so reverse axes.
    to_pixel = normalized_to_pixel_matrix(size)
    from_pixel = torch.linalg.inv(to_pixel)
    reverse = torch.eye(4, dtype=torch.float64)[[2, 1, 0, 3]]
    for b in range(2):
        pixel = reverse @ to_pixel @ family.matrix(params[b : b + 1].double())[0] @ from_pixel @ reverse
        theirs = scipy_ndimage.affine_transform(
            volume[b, 0].numpy(), pixel.numpy(), order=1, mode="grid-constant", cval=0.0
        )
        assert np.abs(ours[b, 0].numpy() - theirs).max() < 1e-10
