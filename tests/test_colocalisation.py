"""Co-localisation (appendix A.2): boxes and IoU, the triplet loss, per-class routing, the bounded attention and its
ceiling schedule, the posed digits, the embedding-CNN cache, the configs, tiny runs of both cells and their table."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from stn_repro.config import ConfigError
from stn_repro.data.colocalisation import ClassBalancedBatches, choose_per_class
from stn_repro.data.distortions import get_distortion
from stn_repro.models.colocalisation import (
    EMBEDDING_DEFAULTS,
    ColocalisationModel,
    EmbeddingCNN,
    background_crops,
    distort_digits,
    embedding_cache_path,
    load_or_train_embedding_cnn,
    train_embedding_cnn,
)
from stn_repro.results.records import load_records
from stn_repro.results.tables import build_tables
from stn_repro.systems.colocalisation import (
    ColocalisationSystem,
    all_pairs_triplet_loss,
    attention_boxes,
    box_iou,
    frame_boxes,
    random_crops,
)
from stn_repro.train import run
from stn_repro.transformers import AttentionFamily, sample
from stn_repro.validation import validate

CONF = Path(__file__).resolve().parents[1] / "conf"
CELLS = list(OmegaConf.load(CONF / "suites" / "colocalisation.yaml").cells)
TINY_EMBEDDING = {"width": 4, "iterations": 3, "batch_size": 8}


pytestmark = pytest.mark.usefixtures("offline")


def _compose(cell, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"experiment={cell}", *overrides])


def test_iou_of_hand_made_boxes():
    a = torch.tensor([[0.0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 4, 4]])
    b = torch.tensor([[0.0, 0, 2, 2], [3, 3, 5, 5], [1, 0, 3, 2], [0, 0, 4, 2]])
    assert box_iou(a, b).tolist() == pytest.approx([1.0, 0.0, 1 / 3, 0.5])
    point = torch.tensor([[1.0, 1, 1, 1]])
    assert box_iou(point, point).tolist() == [0.0]  # an empty union counts as no overlap, not NaN


def test_attention_and_frame_boxes_in_pixels():
    theta = torch.tensor([[1 / 3, 0.0, 0.0], [1.0, 0.0, 0.0], [-1 / 3, 2 / 3, -2 / 3]])
    expected = [[28, 28, 56, 56], [0, 0, 84, 84], [56, 0, 84, 28]]
    assert attention_boxes(theta, (84, 84)).tolist() == [pytest.approx(row) for row in expected]
    solid = torch.full((6, 28, 28), 255, dtype=torch.uint8)  # all ink: the ink box is the frame
    placed = get_distortion("TC", canvas=84, patches=0).generate(solid, torch.arange(6), torch.Generator())
    assert torch.allclose(frame_boxes(placed["theta"], (84, 84)), placed["boxes"], atol=1e-4)


def test_the_triplet_loss_averages_every_other_image_of_the_class_on_a_hand_made_case():
    anchors = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 0.0], [5.0, 5.0]])
    negatives = torch.tensor([[2.0, 0.0], [1.0, 0.5], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([7, 7, 7, 2, 2])
    # sample 0: positives 1 (d=1), 2 (d=9); negative d=4: (max(0, 1-4+1) + max(0, 9-4+1)) / 2 = 3
    # sample 1: positives 0 (1), 2 (10); negative 0.25: (1.75 + 10.75) / 2 = 6.25
    # sample 2: positives 0 (9), 1 (10); negative 9: (1 + 2) / 2 = 1.5
    # samples 3, 4: d=50 each way; negatives 0 and 50: 51 and 1
    loss = all_pairs_triplet_loss(anchors, negatives, labels, margin=1.0)
    assert loss.tolist() == pytest.approx([3.0, 6.25, 1.5, 51.0, 1.0])
    with pytest.raises(ValueError, match="single sample"):
        all_pairs_triplet_loss(anchors[:4], negatives[:4], torch.tensor([0, 1, 1, 1]))


def test_random_crops_are_inside_the_canvas():
    canvases = torch.arange(2 * 10 * 10, dtype=torch.float32).view(2, 1, 10, 10)
    crops = random_crops(canvases, 4, torch.Generator().manual_seed(0))
    assert crops.shape == (2, 1, 4, 4)
    for canvas, crop in zip(canvases, crops, strict=True):
        y, x = divmod(int(crop[0, 0, 0] - canvas[0, 0, 0]), 10)
        assert torch.equal(crop, canvas[:, y : y + 4, x : x + 4])


def test_the_scale_stays_below_the_shrinking_ceiling_and_every_crop_inside_the_canvas():
    torch.manual_seed(0)
    scale = {"floor": 0.2, "ceiling_start": 0.8, "ceiling_end": 0.45, "ceiling_until": 0.5}
    model = ColocalisationModel((1, 42, 42), EmbeddingCNN(4), num_classes=2, scale=scale, init_weight_std=0.0)
    canvases, labels = torch.rand(4, 1, 42, 42), torch.tensor([0, 1, 0, 1])
    model(canvases, labels)
    start = 0.2 + 0.6 * torch.sigmoid(torch.tensor(3.0))
    assert torch.allclose(model.theta, torch.tensor([[start, 0.0, 0.0]] * 4))  # centred, near the ceiling
    assert model.start_scale() == pytest.approx(float(start))
    for progress, ceiling in ((0.0, 0.8), (0.25, 0.625), (0.5, 0.45), (1.0, 0.45)):
        model.set_training_progress(progress)
        assert all(float(t.ceiling) == pytest.approx(ceiling) for t in model.transformers)
    with torch.no_grad():  # extreme localisation outputs: the crops reach, but never cross, the canvas edge
        for t in model.transformers:
            t.localisation[-1].bias.copy_(torch.tensor([50.0, 50.0, -50.0]))
    model(canvases, labels)
    s, tx, ty = model.theta.unbind(1)
    assert torch.allclose(s, torch.full_like(s, 0.45)) and (tx + s <= 1 + 1e-6).all() and (ty - s >= -1 - 1e-6).all()
    state = model.state_dict()  # the ceiling is saved with the weights
    assert {f"transformers.{k}.ceiling" for k in range(2)} <= set(state)


def test_each_class_is_served_by_its_candidate_with_the_lowest_moving_average_loss():
    torch.manual_seed(0)
    model = ColocalisationModel((1, 42, 42), EmbeddingCNN(4), num_classes=2, candidates=3, init_weight_std=0.1)
    system = ColocalisationSystem(model, iterations=10)
    canvases, labels = torch.rand(4, 1, 42, 42), torch.tensor([0, 0, 1, 1])
    losses, per_sample = system.triplet_loss(canvases, labels)
    assert per_sample.shape == (3, 4)
    fake = torch.tensor([[1.0, 1.0, 9.0, 9.0], [3.0, 3.0, 1.0, 1.0], [2.0, 2.0, 5.0, 5.0]])  # class 0: 0, class 1: 1
    for _ in range(200):
        system._update_candidate_loss(fake, labels)
    assert model.chosen().tolist() == [0, 1]
    crops = model(canvases, labels)
    assert torch.allclose(crops[:2], model.transformers[0](canvases[:2]))  # class 0, candidate 0
    assert torch.allclose(crops[2:], model.transformers[1 * 3 + 1](canvases[2:]))  # class 1, candidate 1
    assert "candidate_loss" in model.state_dict()  # the choice is saved with the weights


def test_posed_digits_keep_their_ink_within_the_drawn_ranges():
    digit = torch.zeros(1, 1, 28, 28)
    digit[..., 10:18, 12:16] = 1.0
    still = distort_digits(digit, rotation=0.0, scale=[1.0, 1.0], translation=0.0, generator=torch.Generator())
    assert torch.allclose(still, digit, atol=1e-6)  # the identity pose reproduces the digit
    posed = distort_digits(digit.expand(64, 1, 28, 28), 45.0, [0.6, 1.3], 0.35, torch.Generator().manual_seed(0))
    ink = posed.sum((1, 2, 3)) / digit.sum()
    assert (ink > 0.6**2 * 0.8).all() and (ink < 1.3**2 * 1.2).all()  # area scales with the drawn size squared
    assert posed.std(0).max() > 0.2  # the poses differ between samples


def test_background_crops_are_blank_or_hold_only_clutter_patches():
    digits = torch.full((5, 28, 28), 200, dtype=torch.uint8)
    crops = background_crops(digits, 6, patches=2, generator=torch.Generator().manual_seed(0))
    assert crops.shape == (6, 28, 28) and crops.dtype == torch.uint8
    assert (crops[:3] == 0).all()  # the first half blank
    ink = (crops[3:] > 0).flatten(1).sum(1)
    assert ((ink >= 36) & (ink <= 2 * 36)).all()  # two 6x6 patches each (they may overlap)


def test_background_crops_teach_the_embedding_cnn_that_a_blank_crop_is_no_digit():
    labels = np.arange(200) % 10
    images = np.zeros((200, 28, 28), np.uint8)
    for i, label in enumerate(labels):  # class k: a bar at column 2k + 4, 1 + k // 3 pixels wide
        images[i, 4:24, 2 * label + 4 : 2 * label + 5 + label // 3] = 255
    settings = {**EMBEDDING_DEFAULTS, "width": 4, "iterations": 300, "translation": 0.0, "rotation": 0.0}
    taught = train_embedding_cnn(images, labels, settings, log=lambda line: None)
    untaught = train_embedding_cnn(images, labels, {**settings, "background": 0.0}, log=lambda line: None)
    with torch.no_grad():
        blank = torch.zeros(1, 1, 28, 28)
        taught, untaught = taught(blank).softmax(1).max(), untaught(blank).softmax(1).max()
    assert taught < 0.2  # near the uniform 0.1 (measured: 0.12)
    assert untaught > 0.4  # without them the blank crop reads as a thin bar's class (measured: 0.71)


def test_class_balanced_batches_and_the_chosen_set():
    labels = np.repeat(np.arange(10), 7)
    chosen = choose_per_class(labels, 5, seed=0)
    assert np.bincount(labels[chosen]).tolist() == [5] * 10
    with pytest.raises(ValueError, match="digit 0"):
        choose_per_class(labels, 8, seed=0)
    arrays = {"images": np.zeros((70, 12, 12), np.uint8), "labels": labels}
    batches = list(ClassBalancedBatches(arrays, per_class=3, seed=1))
    assert len(batches) == 2 and batches[0][0].shape == (30, 1, 12, 12)
    assert all(torch.bincount(y).tolist() == [3] * 10 for _, y in batches)


def test_the_embedding_descriptors_are_the_table1_cnns_three_layers_or_its_probabilities():
    torch.manual_seed(0)
    images = torch.rand(5, 1, 28, 28)
    paper = EmbeddingCNN(4, "activations")
    logits = paper(images)
    activations = paper.embed(images)
    assert activations.shape == (5, 4 * 14 * 14 + 4 * 7 * 7 + 10)  # conv 9x9 -> pool, conv 7x7 -> pool, logits
    assert torch.allclose(activations[:, -10:], logits)
    paper.descriptor = "activations_unit"
    assert torch.allclose(paper.embed(images), activations / activations.norm(dim=1, keepdim=True))
    paper.descriptor = "probabilities"
    assert torch.allclose(paper.embed(images), logits.softmax(1))
    with pytest.raises(ValueError, match="descriptor"):
        EmbeddingCNN(4, "pixels")


def test_a_samples_loss_reaches_only_its_own_class_transformer():
    torch.manual_seed(0)
    model = ColocalisationModel((1, 42, 42), EmbeddingCNN(4), num_classes=3, init_weight_std=0.1)
    system = ColocalisationSystem(model, iterations=10, margin=100.0)  # a large margin keeps every hinge active
    canvases, labels = torch.rand(6, 1, 42, 42), torch.tensor([0, 0, 1, 1, 2, 2])
    _, per_sample = system.triplet_loss(canvases, labels)
    assert per_sample.shape == (1, 6)
    per_sample[0, 2].backward()  # sample 2 (class 1) and its positive, sample 3 (class 1)
    norms = [sum(float(p.grad.abs().sum()) if p.grad is not None else 0.0 for p in t.parameters()) for t in
             model.transformers]  # fmt: skip
    assert norms[1] > 0 and norms[0] == 0 and norms[2] == 0
    assert all(p.grad is None for p in model.embedding.parameters())


def test_embedding_cnn_is_cached_and_a_corrupt_file_is_rebuilt(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    labels = np.arange(20) % 10
    lines = []
    first = load_or_train_embedding_cnn(tmp_path, "abc", images, labels, TINY_EMBEDDING, lines.append)
    path = embedding_cache_path(tmp_path, "abc", {**EMBEDDING_DEFAULTS, **TINY_EMBEDDING})
    assert path.exists() and any("trained" in line for line in lines)
    lines.clear()
    second = load_or_train_embedding_cnn(tmp_path, "abc", images, labels, TINY_EMBEDDING, lines.append)
    assert lines == [f"embedding CNN: cache hit: {path}"]
    assert all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )
    path.write_bytes(b"not a checkpoint")
    lines.clear()
    third = load_or_train_embedding_cnn(tmp_path, "abc", images, labels, TINY_EMBEDDING, lines.append)
    assert "unreadable" in lines[0] and "rebuilding" in lines[0]
    assert torch.equal(third.net.output.weight, first.net.output.weight)  # deterministic training
    lines.clear()
    fourth = load_or_train_embedding_cnn(
        tmp_path, "abc", images, labels, {**TINY_EMBEDDING, "descriptor": "probabilities"}, lines.append
    )
    assert lines == [f"embedding CNN: cache hit: {path}"]  # the descriptor reads the same weights
    assert fourth.descriptor == "probabilities" and first.descriptor == "activations_unit"
    assert embedding_cache_path(tmp_path, "other digits", EMBEDDING_DEFAULTS) != embedding_cache_path(
        tmp_path, "abc", EMBEDDING_DEFAULTS
    )


def test_a_cache_hit_and_a_miss_leave_the_global_rng_alike(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    labels = np.arange(20) % 10
    after = []
    for _ in ("miss", "hit"):  # the models built after the embedding net start from the same random draws
        torch.manual_seed(7)
        load_or_train_embedding_cnn(tmp_path, "abc", images, labels, TINY_EMBEDDING, lambda line: None)
        after.append(torch.rand(4))
    torch.manual_seed(7)
    assert torch.equal(after[0], after[1]) and torch.equal(after[0], torch.rand(4))


@pytest.mark.parametrize("cell", CELLS)
def test_every_config_composes_and_validates(cell):
    for profile in ("coloc_quick", "coloc_paper"):
        cfg = _compose(cell, f"profile={profile}")
        validate(cfg)
        assert cfg.data._target_.endswith("ColocalisationDataModule") and cfg.paper.table == "co_localisation"
        assert cfg.data.canvas == 84 and cfg.data.per_class == 100 and cfg.transformer.family == "attention"
    assert _compose(cell).profile.name == "quick"


@pytest.mark.parametrize(
    "override, key",
    [("profile.batch_size=25", "profile.batch_size"), ("transformer.family=affine", "transformer.family"),
     ("data.per_class=1", "data.per_class"), ("model.embedding.width=0", "model.embedding.width"),
     ("model.embedding.descriptor=pixels", "model.embedding.descriptor"),
     ("model.scale.floor=0", "model.scale.floor"), ("model.scale.floor=0.5", "model.scale.ceiling_end"),
     ("model.scale.ceiling_start=0.3", "model.scale.ceiling_start"),
     ("model.scale.ceiling_until=0", "model.scale.ceiling_until"),
     ("model.embedding.scale=[1.2,0.7]", "model.embedding.scale"),
     ("model.embedding.scale=7", "model.embedding.scale"),
     ("model.embedding.background=1", "model.embedding.background"),
     ("model.embedding.background_patches=-1", "model.embedding.background_patches"),
     ("data.canvas=big", "data.canvas"), ("+model.colour=red", "model.colour"),
     ("+model.embedding.depth=3", "model.embedding.depth"), ("data.device_resident=2", "data.device_resident")],
)  # fmt: skip
def test_bad_values_name_their_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(_compose("colocalisation/tc", override))


def test_both_cells_run_record_per_digit_metrics_and_build_the_table(tmp_path):
    for cell in CELLS:
        cfg = _compose(
            cell, "profile.iterations=2", "profile.val_every=2", "profile.batch_size=20", "data.per_class=4",
            "data.source=bundled", "model.embedding.iterations=3", "model.embedding.width=4",
            f"paths.data={tmp_path / 'data'}", f"paths.runs={tmp_path / 'runs'}",
            f"paths.variants={tmp_path / 'runs'}", f"paths.models={tmp_path / 'models'}",
            f"paths.checkpoints={tmp_path / 'ckpt'}", f"paths.results={tmp_path / 'results'}",
        )  # fmt: skip
        record = run(cfg, tmp_path / cell)
        assert record.status == "finished" and record.iterations == 2 and record.data["n_test"] == 40
        assert 0 <= record.metrics["test/localised"] <= 100 and "test/acc" not in record.metrics
        assert {f"test/localised_d{k}" for k in range(10)} <= set(record.metrics)
        assert any("unsupervised" in d for d in record.deviations)
        assert (tmp_path / cell / "figures" / "crops.png").stat().st_size > 0
        assert (tmp_path / cell / "figures" / "optimisation.png").stat().st_size > 0
    paths = build_tables(load_records(tmp_path / "runs", "colocalisation"), tmp_path / "results")
    text = paths["markdown"].read_text()
    assert paths["markdown"].name == "table_colocalisation.md" and "localised % (IoU > 0.5)" in text
    assert "| T (translated, 84x84) | 100 / " in text and "TC (translated + 16 clutter patches)" in text
    assert "test/localised_d9" in text


def test_the_landscapes_true_frame_placement_crops_exactly_the_placed_digit():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "colocalisation_landscape.py"
    spec = importlib.util.spec_from_file_location("colocalisation_landscape", path)
    landscape = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(landscape)
    digit = torch.rand(1, 1, 28, 28)
    canvas = torch.zeros(1, 1, 84, 84)
    canvas[..., 10:38, 40:68] = digit  # frame x in [40, 68), y in [10, 38)
    centre = torch.tensor([[(40 + 68) / 84 - 1, (10 + 38) / 84 - 1]])
    scale = torch.full((1, 1), 28 / 84)
    theta = landscape.PLACEMENTS["true frame"](centre, scale)
    crop = sample(canvas, AttentionFamily().grid(theta, (28, 28)))
    assert torch.allclose(crop, digit, atol=1e-5)
    blank = landscape.PLACEMENTS["blank (outside the canvas)"](centre, scale)
    assert sample(canvas, AttentionFamily().grid(blank, (28, 28))).abs().max() == 0
    start = landscape.placements(0.77)["training start (centred, half-side 0.77)"](centre, scale)
    assert start.tolist() == [pytest.approx([0.77, 0.0, 0.0])]


def test_a_canonical_suite_keeps_each_cells_optimisation_figure(tmp_path):
    from stn_repro.reproduce import copy_run_figures

    for job, cell, seed in (("0-t-seed1", "t", 1), ("1-t-seed0", "t", 0), ("2-tc-seed0", "tc", 0)):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "config.yaml").write_text(f"cell: {cell}\nseed: {seed}\n")
        (tmp_path / job / "figures").mkdir()
        (tmp_path / job / "figures" / "optimisation.png").write_text(f"{cell} {seed}")
    written = copy_run_figures(tmp_path, tmp_path / "results", "colocalisation")
    assert sorted(p.name for p in written) == [
        "colocalisation_t_optimisation.png",
        "colocalisation_tc_optimisation.png",
    ]
    assert (tmp_path / "results" / "colocalisation_t_optimisation.png").read_text() == "t 0"  # the lowest seed's
