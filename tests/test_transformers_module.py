"""SpatialTransformer, ParallelTransformers and the localisation builders."""

import pytest
import torch
from torch import nn

from stn_repro.transformers import (
    FAMILIES,
    ParallelTransformers,
    SpatialTransformer,
    conv_localisation,
    fc_localisation,
    get_family,
    init_identity_head,
    split_localisation_parameters,
)


def _st_classifier(family="affine", in_shape=(1, 28, 28)):
    family = get_family(family)
    st = SpatialTransformer(conv_localisation(in_shape, family), family)
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], 10))
    return nn.Sequential(st, classifier)


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("builder", [fc_localisation, conv_localisation])
def test_fresh_localisation_nets_emit_the_identity(name, builder):
    family = get_family(name)
    in_shape = (2, 28, 28) if family.spatial_dims == 2 else (1, 28, 28, 28)
    loc = builder(in_shape, family)
    x = torch.rand(3, *in_shape)
    assert torch.allclose(loc(x), family.identity(3), atol=1e-7)
    st = SpatialTransformer(loc, family)
    out = st(x)
    assert out.shape == x.shape
    assert torch.allclose(out, x, atol=1e-5)
    assert st.theta.shape == (3, family.num_params)


def test_weight_perturbation_keeps_the_bias_at_identity_but_varies_theta():
    family = get_family("affine")
    loc = fc_localisation((1, 8, 8), family, weight_std=1e-2)
    head = loc[-1]
    assert torch.equal(head.bias.detach(), family.identity(1)[0])
    assert head.weight.abs().sum().item() > 0
    theta = loc(torch.rand(4, 1, 8, 8))
    assert not torch.allclose(theta[0], theta[1])
    assert (theta - family.identity(4)).abs().max().item() < 0.5


def test_identity_head_rejects_the_wrong_width():
    with pytest.raises(ValueError, match="needs 32"):
        init_identity_head(nn.Linear(4, 6), get_family("tps"))


def test_too_small_input_for_conv_localisation_is_a_clear_error():
    with pytest.raises(ValueError, match=r"input shape \(1, 8, 8\) is too small"):
        conv_localisation((1, 8, 8), get_family("affine"))


def test_paper_st_cnn_localisation_architecture():
    loc = conv_localisation((1, 42, 42), get_family("affine"))
    kinds = [type(m).__name__ for m in loc]
    assert kinds == [
        "MaxPool2d",
        "Conv2d",
        "ReLU",
        "MaxPool2d",
        "Conv2d",
        "ReLU",
        "Flatten",
        "Linear",
        "ReLU",
        "Linear",
    ]
    assert [m.out_channels for m in loc if isinstance(m, nn.Conv2d)] == [20, 20]
    assert loc[-3].out_features == 20 and loc[-1].out_features == 6


def test_classifier_sees_the_warped_image():
    """Wiring: changing only the localisation bias (θ) changes the logits."""
    torch.manual_seed(0)
    model = _st_classifier()
    x = torch.rand(4, 1, 28, 28)
    before = model(x)
    with torch.no_grad():
        model[0].localisation[-1].bias.copy_(torch.tensor([0.5, 0.3, 0.1, -0.2, 0.8, 0.0]))
    after = model(x)
    assert (before - after).abs().max().item() > 1e-3
    # And gradients reach the localisation net through the sampler.
    after.sum().backward()
    assert model[0].localisation[-1].bias.grad.abs().sum().item() > 0


def test_theta_keeps_its_graph_for_auxiliary_losses():
    model = _st_classifier("attention")
    model(torch.rand(2, 1, 28, 28))
    theta = model[0].theta
    assert theta.requires_grad
    (theta - torch.tensor([0.5, 0.0, 0.0])).pow(2).sum().backward()
    assert model[0].localisation[-1].bias.grad is not None


def test_out_size_downsamples_and_3d_out_size():
    st = SpatialTransformer(fc_localisation((1, 42, 42), get_family("affine")), "affine", out_size=21)
    assert st(torch.rand(2, 1, 42, 42)).shape == (2, 1, 21, 21)
    st3 = SpatialTransformer(fc_localisation((1, 12, 12, 12), get_family("affine3d")), "affine3d", out_size=(1, 12, 12))
    assert st3(torch.rand(2, 1, 12, 12, 12)).shape == (2, 1, 1, 12, 12)


def test_parallel_transformers_concatenate_or_list():
    family = get_family("attention")
    transformers = [SpatialTransformer(fc_localisation((2, 16, 16), family), family, out_size=8) for _ in range(3)]
    parallel = ParallelTransformers(transformers)
    x = torch.rand(4, 2, 16, 16)
    out = parallel(x)
    assert out.shape == (4, 6, 8, 8)
    assert torch.allclose(out[:, 2:4], transformers[1](x))
    assert all(t.shape == (4, 3) for t in parallel.thetas)
    listed = ParallelTransformers(transformers, concat=False)(x)
    assert isinstance(listed, list) and len(listed) == 3 and listed[0].shape == (4, 2, 8, 8)
    with pytest.raises(ValueError, match="at least one"):
        ParallelTransformers([])


def test_localisation_parameters_are_identifiable_for_their_own_learning_rate():
    model = _st_classifier()
    loc, other = split_localisation_parameters(model)
    loc_ids = {id(p) for p in model[0].localisation.parameters()}
    assert {id(p) for p in loc} == loc_ids
    assert {id(p) for p in other} == {id(p) for p in model[1].parameters()}
    optimiser = torch.optim.SGD([{"params": loc, "lr": 0.001}, {"params": other, "lr": 0.01}])
    assert [g["lr"] for g in optimiser.param_groups] == [0.001, 0.01]


def test_spatial_transformer_works_in_float64_and_on_batches_of_one():
    model = _st_classifier("projective").double()
    assert model(torch.rand(1, 1, 28, 28, dtype=torch.float64)).shape == (1, 10)
