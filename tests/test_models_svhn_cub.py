"""SVHN and CUB models, their transformers and the metrics of their systems, on hand-made cases."""

import pytest
import torch
from torchvision.models import GoogLeNet

from stn_repro.models import count_parameters
from stn_repro.models.cub import CUBNet, PretrainedWeightsError, load_googlenet_state, tile_centres
from stn_repro.models.svhn import build_svhn_model, layer_input_shapes
from stn_repro.systems.parts import PartAttentionSystem, centres_in_boxes, crop_boxes
from stn_repro.systems.sequence import BLANK, SequenceSystem, predict_sequences, sequence_lengths
from stn_repro.transformers import SharedLocalisationTransformers, TranslationFamily, split_localisation_parameters


def test_translation_family_crops_the_region_it_names():
    family = TranslationFamily(scale=0.5)
    image = torch.arange(64.0).view(1, 1, 8, 8)
    grid = family.grid(torch.tensor([[0.5, -0.5]]), (4, 4))
    # output corners read input x in [0, 1] (right half), y in [-1, 0] (top half): pixel centres 4.5..7.5, 0.5..3.5
    assert torch.allclose(grid[0, 0, 0], torch.tensor([0.125, -0.875]))
    assert torch.allclose(grid[0, -1, -1], torch.tensor([0.875, -0.125]))
    from stn_repro.transformers import sample

    crop = sample(image, family.grid(torch.tensor([[0.5, -0.5]]), (4, 4)))
    assert torch.equal(crop[0, 0], image[0, 0, :4, 4:])  # scale 0.5 at 4 px out of 8: exact pixels
    with pytest.raises(NotImplementedError):
        family.inverse(torch.zeros(1, 2))
    assert torch.equal(TranslationFamily(1.0).inverse(torch.tensor([[0.2, -0.1]])), torch.tensor([[-0.2, 0.1]]))


def test_shared_localisation_transformers_split_one_head_into_n_crops():
    localisation = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    with torch.no_grad():
        localisation[1].weight.zero_()
        localisation[1].bias.copy_(torch.tensor([-0.5, -0.5, 0.5, 0.5]))
    transformers = SharedLocalisationTransformers(localisation, TranslationFamily(0.5), count=2, out_size=4)
    image = torch.rand(2, 3, 8, 8)
    top_left, bottom_right = transformers(image)
    assert transformers.theta.shape == (2, 2, 2)
    assert torch.allclose(top_left, image[:, :, :4, :4]) and torch.allclose(bottom_right, image[:, :, 4:, 4:])
    localisation_params, _ = split_localisation_parameters(torch.nn.ModuleList([transformers]))
    assert {id(p) for p in localisation_params} == {id(p) for p in localisation.parameters()}


@pytest.mark.parametrize("kind, transformers", [("cnn", 0), ("st_single", 1), ("st_multi", 4)])
def test_svhn_models_shapes_and_transformers(kind, transformers):
    model = build_svhn_model(kind, (3, 54, 54)).eval()
    length_logits, digit_logits = model(torch.rand(3, 3, 54, 54))
    assert length_logits.shape == (3, 5) and digit_logits.shape == (3, 5, 11)
    assert len(model.transformers) == transformers
    # every transformer starts at the identity: the ST models compute exactly what the plain CNN computes
    plain = build_svhn_model("cnn", (3, 54, 54)).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("transformers.")})
    x = torch.rand(2, 3, 54, 54)
    assert torch.allclose(model(x)[1], plain(x)[1], atol=1e-5)


def test_svhn_cnn_follows_goodfellow_and_multi_warps_feature_maps():
    shapes = layer_input_shapes((3, 54, 54))
    assert shapes[:5] == [(3, 54, 54), (48, 27, 27), (64, 27, 27), (128, 14, 14), (160, 14, 14)]
    model = build_svhn_model("st_multi", (3, 54, 54))
    assert [t.localisation[1].in_features for t in model.transformers.values()] == [
        3 * 54 * 54,
        48 * 27 * 27,
        64 * 27 * 27,
        128 * 14 * 14,
    ]
    assert model.fc[0].in_features == 192 * 4 * 4 and model.fc[0].out_features == 3072
    cnn_params = count_parameters(build_svhn_model("cnn", (3, 54, 54)))
    assert 30e6 < cnn_params < 35e6


def test_sequence_decoding_and_error_on_a_hand_made_batch():
    labels = torch.tensor([[1, 2, BLANK, BLANK, BLANK], [7, BLANK, BLANK, BLANK, BLANK], [3, 0, 5, BLANK, BLANK]])
    assert sequence_lengths(labels).tolist() == [2, 1, 3]
    length_logits = torch.full((3, 5), -5.0)
    digit_logits = torch.full((3, 5, 11), -5.0)
    predicted = [[1, 2], [7, 4], [3, 0, 5]]  # second: right digit, wrong length
    for i, digits in enumerate(predicted):
        length_logits[i, len(digits) - 1] = 5.0
        for j, digit in enumerate(digits):
            digit_logits[i, j, digit] = 5.0
    digit_logits[0, 3, 9] = 10.0  # a score past the predicted length is ignored
    assert predict_sequences(length_logits, digit_logits)[1].tolist() == [7, 4, BLANK, BLANK, BLANK]
    system = SequenceSystem(torch.nn.Identity())
    assert system.wrong((length_logits, digit_logits), labels).tolist() == [0.0, 1.0, 0.0]
    # the loss counts every head, blanks included: confident and right → ~0; one wrong blank → large
    confident_length = torch.nn.functional.one_hot(sequence_lengths(labels) - 1, 5).float() * 50
    confident_digits = torch.nn.functional.one_hot(labels, 11).float() * 50
    assert system.loss((confident_length, confident_digits), labels).item() < 1e-6
    confident_digits[0, 4] = torch.nn.functional.one_hot(torch.tensor(3), 11).float() * 50
    assert system.loss((confident_length, confident_digits), labels).item() > 10


def test_crop_centres_in_boxes_on_known_boxes():
    boxes = torch.tensor([[-0.5, -0.5, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]])
    centres = torch.tensor([[[0.0, 0.0], [0.6, 0.0]], [[0.5, 0.5], [-0.1, 0.5]]])
    assert centres_in_boxes(centres, boxes).tolist() == [[True, False], [True, False]]
    assert torch.equal(crop_boxes(torch.tensor([[[0.5, -0.5]]]), 0.5), torch.tensor([[[0.0, -1.0, 1.0, 0.0]]]))


def test_tile_centres_keep_crops_inside_and_apart():
    for count in (1, 2, 3, 4, 6):
        centres = tile_centres(count, 0.5)
        assert centres.shape == (count, 2) and centres.abs().max() <= 0.5
        assert len({tuple(c) for c in centres.tolist()}) == count
    assert tile_centres(2, 0.5).tolist() == [[-0.25, 0.0], [0.25, 0.0]]


def test_cub_models_start_on_tiled_crops_and_report_crop_in_box(tmp_path):
    model = CUBNet(num_classes=5, num_parts=2, crop_size=32, crop_scale=0.5).eval()
    images = torch.rand(2, 3, 64, 64)
    assert model(images).shape == (2, 5)
    assert torch.allclose(model.transformers.theta, tile_centres(2, 0.5).expand(2, 2, 2))
    system = PartAttentionSystem(model, figures_dir=tmp_path)
    left_box = torch.tensor([[-1.0, -1.0, 0.0, 1.0]]).expand(2, 4)  # the left crop's centre is inside, not the right
    system.test_step((images, torch.tensor([0, 1]), left_box), 0)
    values = {name: value.item() for name, value in system.in_box.compute().items()}
    assert values == {"crop_in_box_0": 1.0, "crop_in_box_1": 0.0}
    assert CUBNet(num_classes=5, num_parts=0).transformers is None


def test_pretrained_weights_load_from_a_local_file_only(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="not found at .*missing.pth.*model.weights=none"):
        load_googlenet_state(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match="cannot read pretrained weights"):
        load_googlenet_state(tmp_path / "junk.pth")
    reference = GoogLeNet(aux_logits=True, init_weights=True)  # torchvision's file holds the auxiliary heads too
    torch.save(reference.state_dict(), tmp_path / "googlenet.pth")
    model = CUBNet(num_classes=3, num_parts=0, weights=tmp_path / "googlenet.pth")
    assert torch.equal(model.parts[0].net.conv1.conv.weight, reference.conv1.conv.weight)
    assert model.parts[0].net.transform_input
