"""Gradients of grids and sampling with respect to θ and the input (float64 gradcheck), per family."""

import pytest
import torch

from stn_repro.transformers import FAMILIES, get_family, sample


def _params(family, seed, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    noise = scale * torch.randn(2, family.num_params, generator=g, dtype=torch.float64)
    return (family.identity(2, dtype=torch.float64) + noise).requires_grad_()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_grid_gradcheck(name):
    family = get_family(name)
    out_size = (5, 6) if family.spatial_dims == 2 else (3, 4, 5)
    params = _params(family, seed=0)
    assert torch.autograd.gradcheck(lambda p: family.grid(p, out_size), (params,))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_sampling_gradcheck_wrt_theta_and_input(name):
    family = get_family(name)
    in_size = (6, 7) if family.spatial_dims == 2 else (4, 5, 6)
    out_size = (5, 4) if family.spatial_dims == 2 else (3, 4, 3)
    params = _params(family, seed=1)
    image = torch.rand(2, 2, *in_size, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    image.requires_grad_()
    assert torch.autograd.gradcheck(lambda p, x: sample(x, family.grid(p, out_size)), (params, image))


def test_nearest_sampling_gradcheck_wrt_input():
    family = get_family("affine")
    params = _params(family, seed=3)
    image = torch.rand(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    grid = family.grid(params.detach(), (5, 5))
    assert torch.autograd.gradcheck(lambda x: sample(x, grid, mode="nearest"), (image,))
