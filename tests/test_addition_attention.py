"""scripts/addition_attention.py: where each addition transformer reads, measured on models with a known θ."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from stn_repro.models import build_model

PATH = Path(__file__).resolve().parents[1] / "scripts" / "addition_attention.py"
SPEC = importlib.util.spec_from_file_location("addition_attention", PATH)
attention_script = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(attention_script)


def test_centroids_are_the_ink_centres_in_normalised_coordinates():
    images = torch.zeros(1, 2, 42, 42)
    images[0, 0, 0, 0] = 1.0  # top-left pixel centre: (-1 + 1/42, -1 + 1/42)
    images[0, 1, 20:22, 20:22] = 0.5  # the four central pixels: (0, 0)
    centres = attention_script.centroids(images)
    assert centres[0, 0] == pytest.approx(torch.tensor([-1 + 1 / 42, -1 + 1 / 42]), abs=1e-6)
    assert centres[0, 1] == pytest.approx(torch.tensor([0.0, 0.0]), abs=1e-6)


def test_frame_area_is_a_fraction_of_the_canvas():
    whole = attention_script.CORNERS.unsqueeze(0)
    assert attention_script.frame_area(whole).item() == pytest.approx(1.0)
    assert attention_script.frame_area(0.5 * whole + 0.3).item() == pytest.approx(0.25)


def _fixed_theta_model(translations):
    """A 2xST-FCN Aff whose transformers ignore the input: identity scale, the given ``(tx, ty)`` each."""
    model = build_model("st2_fcn", (2, 42, 42), 19, width=8, family="affine", pool=2)
    for transformer, (tx, ty) in zip(model.transformer.transformers, translations, strict=True):
        head = [m for m in transformer.localisation.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            head.weight.zero_()
            head.bias.copy_(torch.tensor([0.5, 0.0, tx, 0.0, 0.5, ty]))
    return model


def test_each_transformer_is_matched_to_the_digit_it_reads():
    """Transformer 1 reads where the channel-1 digit is, transformer 2 a fixed point: r ≈ 1 for the first only."""
    generator = torch.Generator().manual_seed(0)
    images = torch.zeros(64, 2, 42, 42)
    positions = torch.randint(4, 34, (64, 2, 2), generator=generator)
    for i in range(64):
        for c in range(2):
            x, y = positions[i, c].tolist()
            images[i, c, y : y + 4, x : x + 4] = 1.0
    truth = attention_script.centroids(images)
    model = _fixed_theta_model([(0.0, 0.0), (0.25, -0.25)])
    data = SimpleNamespace(test_dataloader=lambda: [(images, torch.zeros(64))])
    found = attention_script.attention(model, data)
    assert found["centre0"] == pytest.approx(torch.zeros(64, 2), abs=1e-6)
    assert found["centre1"] == pytest.approx(torch.tensor([0.25, -0.25]).expand(64, 2), abs=1e-6)
    assert attention_script.frame_area(found["corners1"]) == pytest.approx(torch.full((64,), 0.25))
    assert found["output0"].shape == (64, 2, 42, 42)
    # A transformer that follows the channel-1 digit exactly:
    found["centre0"] = truth[:, 1]
    rows = attention_script.summarise(found, 42)
    assert rows[0]["r1"] == pytest.approx(1.0) and abs(rows[0]["r0"]) < 0.3 and rows[0]["d1"] == pytest.approx(0.0)
    assert "neither" in attention_script.verdict(rows) and "channel 1" in attention_script.verdict(rows)
    found["centre1"] = truth[:, 0]
    assert "as the paper says" in attention_script.verdict(attention_script.summarise(found, 42))
    single = attention_script.verdict(attention_script.summarise(found, 42)[:1])
    assert single.startswith("one transformer that follows the digit of channel 1")
    found["centre0"] = truth.mean(1)  # the two digits' midpoint: a region holding both
    assert "as the paper says" in attention_script.verdict(attention_script.summarise(found, 42)[:1])
