"""Transform families and the sampler: identity, known transforms, inverses, guards, bad input."""

import pytest
import torch

from stn_repro.transformers import FAMILIES, SpatialTransformer, get_family, sample
from stn_repro.transformers.grids import PROJECTIVE_EPS, control_grid, tps_grid
from stn_repro.transformers.sampling import base_grid, normalized_to_pixel_matrix, pixel_centres

FAMILIES_2D = [name for name in FAMILIES if get_family(name).spatial_dims == 2]


def _image(batch, channels, h, w, dtype=torch.float32, seed=0):
    return torch.rand(batch, channels, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _warp(family, params, image, out_size=None, mode="bilinear"):
    return sample(image, family.grid(params, out_size or image.shape[2:]), mode=mode)


@pytest.mark.parametrize("name", FAMILIES_2D)
@pytest.mark.parametrize("size", [(7, 7), (8, 8), (28, 29), (29, 28), (42, 42)])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_identity_reproduces_input_float64(name, size, channels, mode):
    family = get_family(name)
    image = _image(2, channels, *size, dtype=torch.float64)
    out = _warp(family, family.identity(2, dtype=torch.float64), image, mode=mode)
    assert (out - image).abs().max().item() < 1e-10


@pytest.mark.parametrize("name", FAMILIES_2D)
@pytest.mark.parametrize("size", [(7, 7), (8, 8), (16, 16), (7, 8), (28, 28), (29, 29), (60, 60)])
@pytest.mark.parametrize("channels", [1, 3])
def test_identity_reproduces_input_float32(name, size, channels):
    """Float32 normalised coordinates carry ~6e-8·n px of rounding (sampling.py): exact below 1e-6 for small
    and power-of-two sizes, within 2e-7·n otherwise."""
    family = get_family(name)
    image = _image(2, channels, *size)
    out = _warp(family, family.identity(2), image)
    nearest = _warp(family, family.identity(2), image, mode="nearest")
    bound = 1e-6 if max(size) <= 16 else 2e-7 * max(size)
    assert (out - image).abs().max().item() < bound
    assert torch.equal(nearest, image)


@pytest.mark.parametrize("size", [(5, 6, 7), (8, 8, 8)])
@pytest.mark.parametrize("channels", [1, 3])
def test_identity_3d(size, channels):
    family = get_family("affine3d")
    volume = torch.rand(2, channels, *size, dtype=torch.float64)
    out = sample(volume, family.grid(family.identity(2, dtype=torch.float64), size))
    assert (out - volume).abs().max().item() < 1e-10
    volume32 = volume.float()
    out32 = sample(volume32, family.grid(family.identity(2), size))
    assert (out32 - volume32).abs().max().item() < 1e-6


def test_pixel_convention_round_trip():
    """Pixel centres sit at integers after the normalised→pixel map; its inverse returns the base grid."""
    h, w = 5, 8
    to_pixel = normalized_to_pixel_matrix((h, w))
    grid = base_grid((h, w), dtype=torch.float64)
    pixels = grid.reshape(-1, 3) @ to_pixel.T
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    assert torch.allclose(pixels[:, 0], xs.reshape(-1).double())
    assert torch.allclose(pixels[:, 1], ys.reshape(-1).double())
    # [-1, 1] covers the whole image: the outer pixel edges are at ∓1.
    assert torch.allclose(
        pixel_centres(w, dtype=torch.float64)[[0, -1]], torch.tensor([-1 + 1 / w, 1 - 1 / w]).double()
    )


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("size", [7, 8, 28])
@pytest.mark.parametrize("channels", [1, 3])
def test_rotation_by_90_degrees_equals_rot90(mode, size, channels):
    """θ = [[0, -1, 0], [1, 0, 0]] reads input (x', y') = (-y, x): numpy's counter-clockwise rot90."""
    image = _image(3, channels, size, size)
    theta = torch.tensor([[0.0, -1.0, 0.0, 1.0, 0.0, 0.0]]).expand(3, 6)
    out = _warp(get_family("affine"), theta, image, mode=mode)
    expected = torch.rot90(image, k=1, dims=(2, 3))
    assert (out - expected).abs().max().item() < 1e-5
    if mode == "nearest":
        assert torch.equal(out, expected)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_translation_by_one_pixel_is_a_shift(mode):
    h, w = 12, 10
    image = _image(2, 3, h, w, dtype=torch.float64)
    # Reading the input one pixel to the right: out[..., j] = in[..., j + 1]; the last column is padding.
    theta = torch.tensor([[1.0, 0.0, 2.0 / w, 0.0, 1.0, 0.0]], dtype=torch.float64).expand(2, 6)
    out = _warp(get_family("affine"), theta, image, mode=mode)
    assert torch.allclose(out[..., :-1], image[..., 1:], atol=1e-10)
    assert out[..., -1].abs().max().item() < 1e-10
    # One pixel down, through the attention family.
    down = torch.tensor([[1.0, 0.0, -2.0 / h]], dtype=torch.float64).expand(2, 3)
    out = _warp(get_family("attention"), down, image, mode=mode)
    assert torch.allclose(out[..., 1:, :], image[..., :-1, :], atol=1e-10)
    assert out[..., 0, :].abs().max().item() < 1e-10


def _random_affine(batch, generator, dtype=torch.float64):
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=dtype)
    return identity + 0.3 * torch.randn(batch, 6, generator=generator, dtype=dtype)


def test_projective_with_affine_matrix_equals_affine():
    g = torch.Generator().manual_seed(1)
    affine = _random_affine(4, g)
    projective = torch.cat([affine, torch.zeros(4, 2, dtype=affine.dtype)], dim=1)
    grid_a = get_family("affine").grid(affine, (17, 23))
    grid_p = get_family("projective").grid(projective, (17, 23))
    assert torch.allclose(grid_a, grid_p, atol=1e-12)


def test_attention_equals_its_affine_matrix():
    params = torch.tensor([[0.5, 0.2, -0.3], [1.5, -0.1, 0.4]], dtype=torch.float64)
    s, tx, ty = params.unbind(1)
    z = torch.zeros_like(s)
    affine = torch.stack([s, z, tx, z, s, ty], dim=1)
    assert torch.allclose(get_family("attention").grid(params, (9, 11)), get_family("affine").grid(affine, (9, 11)))


@pytest.mark.parametrize("grid_size", [3, 4, 5])
@pytest.mark.parametrize("regularisation", [0.0, 0.1])
def test_tps_with_affinely_moved_control_points_equals_that_affine_warp(grid_size, regularisation):
    g = torch.Generator().manual_seed(2)
    affine = _random_affine(3, g)
    tps = get_family("tps", grid_size=grid_size, regularisation=regularisation)
    moved = get_family("affine").transform_points(
        affine, control_grid(grid_size, dtype=torch.float64).expand(3, -1, -1)
    )
    grid_tps = tps.grid(moved.reshape(3, -1), (19, 21))
    grid_affine = get_family("affine").grid(affine, (19, 21))
    assert (grid_tps - grid_affine).abs().max().item() < 1e-9


def test_tps_interpolates_its_control_points():
    tps = get_family("tps", grid_size=4)
    g = torch.Generator().manual_seed(3)
    params = tps.identity(2, dtype=torch.float64) + 0.1 * torch.randn(2, 32, generator=g, dtype=torch.float64)
    centres = control_grid(4, dtype=torch.float64).expand(2, -1, -1)
    mapped = tps.transform_points(params, centres)
    assert torch.allclose(mapped, params.reshape(2, -1, 2), atol=1e-10)


def test_tps_solution_is_cached_per_device_and_dtype():
    from stn_repro.transformers import grids

    grids._tps_grid_weights.cache_clear()
    points = control_grid(4).expand(2, -1, -1).contiguous()
    tps_grid(points, (10, 10), 4)
    tps_grid(points + 0.01, (10, 10), 4)
    tps_grid(points.double(), (10, 10), 4)
    info = grids._tps_grid_weights.cache_info()
    assert (info.hits, info.misses) == (1, 2)


@pytest.mark.parametrize("name", ["affine", "attention", "projective", "affine3d"])
def test_inverse_composes_to_identity(name):
    family = get_family(name)
    g = torch.Generator().manual_seed(4)
    params = family.identity(5, dtype=torch.float64) + 0.2 * torch.randn(
        5, family.num_params, generator=g, dtype=torch.float64
    )
    points = torch.rand(5, 7, family.spatial_dims, generator=g, dtype=torch.float64) * 2 - 1
    there = family.transform_points(params, points)
    back = family.inverse_points(params, there)
    assert torch.allclose(back, points, atol=1e-9)
    assert torch.allclose(family.inverse(family.inverse(params)), params, atol=1e-9)


def test_projective_perspective_scale_is_a_reparametrisation():
    """Scaled parameters give the plain homography with (g, h) times the scale; the round trip and inverse hold."""
    g = torch.Generator().manual_seed(6)
    plain, scaled = get_family("projective"), get_family("projective", perspective_scale=0.1)
    params = scaled.identity(4, dtype=torch.float64) + 0.3 * torch.randn(4, 8, generator=g, dtype=torch.float64)
    as_plain = torch.cat([params[:, :6], 0.1 * params[:, 6:]], dim=1)
    assert torch.allclose(scaled.matrix(params), plain.matrix(as_plain), atol=1e-12)
    assert torch.allclose(scaled.from_matrix(scaled.matrix(params)), params, atol=1e-12)
    points = torch.rand(4, 5, 2, generator=g, dtype=torch.float64) * 2 - 1
    assert torch.allclose(scaled.inverse_points(params, scaled.transform_points(params, points)), points, atol=1e-9)
    with pytest.raises(ValueError, match="perspective_scale"):
        get_family("projective", perspective_scale=0.0)


def test_tps_has_no_inverse():
    tps = get_family("tps")
    assert not tps.has_inverse
    with pytest.raises(NotImplementedError, match="tps"):
        tps.inverse(tps.identity(1))


def test_transform_points_agrees_with_grid():
    """Mapping the pixel centres as points gives the grid itself, for every 2D family."""
    g = torch.Generator().manual_seed(5)
    points = base_grid((6, 9), dtype=torch.float64)[..., :2].reshape(1, -1, 2).expand(2, -1, -1)
    for name in FAMILIES_2D:
        family = get_family(name)
        params = family.identity(2, dtype=torch.float64) + 0.05 * torch.randn(
            2, family.num_params, generator=g, dtype=torch.float64
        )
        grid = family.grid(params, (6, 9)).reshape(2, -1, 2)
        assert torch.allclose(family.transform_points(params, points), grid, atol=1e-12), name


def test_projective_denominator_is_guarded():
    """A homography whose denominator crosses zero inside the image yields a finite grid and output."""
    family = get_family("projective")
    # w = 1 + 2x vanishes at x = -0.5, i.e. inside the image; also exactly on a pixel centre for width 4.
    params = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 2.0, 0.0]], requires_grad=True)
    grid = family.grid(params, (4, 4))
    assert torch.isfinite(grid).all()
    assert grid.abs().max().item() <= 2 / PROJECTIVE_EPS
    image = torch.rand(1, 1, 4, 4)
    out = sample(image, grid)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(params.grad).all()


def test_output_size_differs_from_input():
    """An identity transformer with half the output size averages 2×2 blocks (resolution independence)."""
    image = _image(2, 1, 8, 8, dtype=torch.float64)
    st = SpatialTransformer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 6)), "affine", out_size=4)
    torch.nn.init.zeros_(st.localisation[1].weight)
    with torch.no_grad():
        st.localisation[1].bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0]))
    out = st.double()(image)
    expected = torch.nn.functional.avg_pool2d(image, 2)
    assert out.shape == (2, 1, 4, 4)
    assert torch.allclose(out, expected, atol=1e-12)
    # A zoom on the top-left quarter (attention s = 0.5, t = -0.5) at the input's resolution.
    crop = sample(image, get_family("attention").grid(torch.tensor([[0.5, -0.5, -0.5]] * 2).double(), (4, 4)))
    assert torch.allclose(crop, image[..., :4, :4], atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------


def test_unknown_family_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown transform family 'similarity'.*affine"):
        get_family("similarity")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_wrong_theta_shape_names_the_expected_shape(name):
    family = get_family(name)
    out_size = (4,) * family.spatial_dims
    with pytest.raises(ValueError, match=rf"{name} parameters must have shape \(B, {family.num_params}\)"):
        family.grid(torch.zeros(2, family.num_params + 1), out_size)
    with pytest.raises(ValueError, match=r"must have shape"):
        family.grid(torch.zeros(family.num_params), out_size)


def test_wrong_input_rank_names_the_expected_layout():
    st = SpatialTransformer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(6)), "affine")
    with pytest.raises(ValueError, match=r"expects input \(B, C, H, W\), got shape \(28, 28\)"):
        st(torch.rand(28, 28))
    st3 = SpatialTransformer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(12)), "affine3d")
    with pytest.raises(ValueError, match=r"expects input \(B, C, D, H, W\)"):
        st3(torch.rand(1, 1, 8, 8))


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="sampling mode"):
        sample(torch.rand(1, 1, 4, 4), torch.zeros(1, 4, 4, 2), mode="bicubic")
    with pytest.raises(ValueError, match="padding_mode"):
        SpatialTransformer(torch.nn.Identity(), "affine", padding_mode="mirror")
    with pytest.raises(ValueError, match="output size"):
        SpatialTransformer(torch.nn.Identity(), "affine", out_size=(4, 4, 4))
    with pytest.raises(ValueError, match="grid_size"):
        get_family("tps", grid_size=1)
    with pytest.raises(ValueError, match="bad options"):
        get_family("affine", grid_size=4)
    with pytest.raises(ValueError, match="do not match"):
        sample(torch.rand(2, 1, 4, 4), torch.zeros(1, 4, 4, 2))


@pytest.mark.parametrize("name", sorted(n for n in FAMILIES if not n.endswith("3d")))
def test_grids_first_built_in_inference_mode_still_train(name):
    """The cached grids are built outside inference mode: a validation step that builds one first (here a size
    no other test uses) must not break the training steps after it."""
    family = get_family(name)
    size = (13, 17)
    with torch.inference_mode():
        family.grid(family.identity(2), size)
    theta = family.identity(2).requires_grad_(True)
    image = torch.rand(2, 1, *size)
    sample(image, family.grid(theta, size)).sum().backward()
    assert theta.grad is not None and torch.isfinite(theta.grad).all()
