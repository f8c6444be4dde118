"""Appendix A.3: extruded-MNIST volumes, depth projections, the 3D ST-CNN, configs, tiny runs and the table."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from stn_repro.config import ConfigError
from stn_repro.data import sources
from stn_repro.data.volumes import ExtrudedVolumes, VolumeMNISTDataModule, rotation_matrices
from stn_repro.models import count_parameters
from stn_repro.models.volumes import build_matched_volume_model, build_volume_model, depth_projection
from stn_repro.results.records import load_records
from stn_repro.results.tables import build_tables
from stn_repro.train import run
from stn_repro.transformers import Affine3dFamily, sample
from stn_repro.validation import validate

CONF = Path(__file__).resolve().parents[1] / "conf"
CELLS = list(OmegaConf.load(CONF / "suites" / "mnist3d.yaml").cells)
LOCALISATION = {"channels": (8, 16), "kernel_size": 3, "downsample": 4, "hidden": (20,)}


pytestmark = pytest.mark.usefixtures("offline")


@pytest.fixture(scope="module")
def bundled():
    return sources.load_bundled()


@pytest.fixture(scope="module")
def digits(bundled):
    return torch.from_numpy(bundled.train_images[:6]), torch.from_numpy(bundled.train_labels[:6])


def _random_poses(protocol, n, seed=0):
    return protocol.draw_poses(torch.Generator().manual_seed(seed), n)


# --- the volume generator ---------------------------------------------------------------------------------------


def test_the_identity_pose_reproduces_the_extruded_digit_and_nothing_else(digits):
    protocol = ExtrudedVolumes(size=60, thickness=10)
    zeros = torch.zeros(len(digits[0]), 3, dtype=torch.float64)
    volumes, truth = protocol.generate(digits[0], {"angles": zeros, "translation": zeros})
    assert volumes.shape == (6, 1, 60, 60, 60) and volumes.dtype == torch.float32
    inside = volumes[:, 0, 25:35, 16:44, 16:44]  # slab centred: depth 25..34, rows and columns 16..43
    torch.testing.assert_close(inside, (digits[0].float() / 255)[:, None].expand(-1, 10, -1, -1), atol=1e-5, rtol=0)
    assert volumes.sum() - inside.sum() == pytest.approx(0.0, abs=0.05)
    scale = torch.tensor([60 / 28, 60 / 28, 60 / 10])
    theta = truth["theta"].view(6, 3, 4)  # volume → slab coordinates: a pure scale by the size ratios
    torch.testing.assert_close(theta, F.pad(torch.diag(scale), (0, 1)).expand(6, 3, 4), atol=1e-6, rtol=0)


def test_random_poses_keep_the_slab_inside_the_volume_and_preserve_its_ink(digits):
    protocol = ExtrudedVolumes()
    poses = _random_poses(protocol, 64)
    angles = poses["angles"]
    assert angles[:, :2].abs().max() <= 60 and angles[:, 2].abs().max() <= 45 and angles.abs().max() > 30
    forward = protocol.forward_matrices(poses["angles"], poses["translation"])
    d, h, w = protocol.slab_shape
    corners = torch.cartesian_prod(*[torch.tensor([-0.5, n - 0.5], dtype=torch.float64) for n in (w, h, d)])
    mapped = torch.cat([corners, torch.ones(8, 1, dtype=torch.float64)], 1) @ forward.transpose(1, 2)
    assert mapped[..., :3].min() >= -0.5 - 1e-9 and mapped[..., :3].max() <= 59.5 + 1e-9
    six = {k: v[:6] for k, v in poses.items()}
    volumes, _ = protocol.generate(digits[0], six)
    ink = volumes.sum((1, 2, 3, 4)) / (10 * digits[0].float().sum((1, 2)) / 255)
    torch.testing.assert_close(ink, torch.ones(6, dtype=torch.float32), atol=0.01, rtol=0)  # rotations keep volume


def test_the_true_pose_maps_the_canonical_slab_onto_the_generated_one(digits):
    protocol = ExtrudedVolumes()
    poses = _random_poses(protocol, 6, seed=3)
    volumes, truth = protocol.generate(digits[0], poses)
    family = Affine3dFamily()
    slabs = protocol.slabs(digits[0])
    back = sample(volumes, family.grid(family.inverse(truth["theta"]), protocol.slab_shape))
    inner = (slice(None), slice(None), slice(2, -2))  # the slab's faces are blurred by two trilinear resamplings
    error = (back[inner] - slabs[inner]).abs().sum() / slabs[inner].sum()
    assert error < 0.25
    wrong = sample(volumes, family.grid(family.inverse(truth["theta"].roll(1, 0)), protocol.slab_shape))
    assert (wrong[inner] - slabs[inner]).abs().sum() / slabs[inner].sum() > 4 * error
    # Independent check of the conventions: the volume's centre of mass is where the pose puts the slab's.
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in (60, 60, 60)], indexing="ij"))
    mass = volumes[:, 0].double()
    centre_zyx = (mass[:, None] * grid).sum((2, 3, 4)) / mass.sum((1, 2, 3))[:, None]
    slab_mass = slabs[:, 0].double()
    slab_grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in (10, 28, 28)],
                                           indexing="ij"))  # fmt: skip
    slab_zyx = (slab_mass[:, None] * slab_grid).sum((2, 3, 4)) / slab_mass.sum((1, 2, 3))[:, None]
    forward = protocol.forward_matrices(poses["angles"], poses["translation"])
    expected_xyz = (forward[:, :3, :3] @ slab_zyx.flip(1)[..., None])[..., 0] + forward[:, :3, 3]
    torch.testing.assert_close(centre_zyx.flip(1), expected_xyz, atol=0.15, rtol=0)


def test_rotations_are_proper_and_zero_angles_are_the_identity():
    r = rotation_matrices(torch.tensor([[10.0, -20.0, 30.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(r[1], torch.eye(3, dtype=torch.float64))


def test_volumes_are_deterministic_per_seed_epoch_and_index(tmp_path, bundled):
    def _module(**kwargs):
        settings = {"source": "bundled", "val_size": 4, "batch_size": 4, "limit": 12, **kwargs}
        module = VolumeMNISTDataModule(root=tmp_path, **settings)
        module.digit_set = bundled  # resolved once for the test
        module.setup()
        return module

    a, b = _module(), _module(batch_size=6)
    assert a.metadata["sizes"] == {"train": 8, "val": 4, "test": 12}
    test_a = torch.cat([v for v, _ in a.test_dataloader()])
    test_b = torch.cat([v for v, _ in b.test_dataloader()])
    assert test_a.shape == (12, 1, 60, 60, 60) and 0 <= test_a.min() and test_a.max() <= 1
    torch.testing.assert_close(test_a, test_b, atol=0, rtol=0)  # a sample's pose ignores the batching
    other_seed = _module(seed=5)
    torch.testing.assert_close(next(iter(other_seed.test_dataloader()))[0], test_a[:4], atol=0, rtol=0)
    train = a.train_dataloader()
    epoch0 = [(v.clone(), y.clone()) for v, y in train]
    torch.testing.assert_close(next(iter(_module().train_dataloader()))[0], epoch0[0][0], atol=0, rtol=0)
    epoch1 = list(train)
    assert not torch.equal(epoch0[0][0], epoch1[0][0])  # new order and poses every epoch
    assert sorted(torch.cat([y for _, y in epoch0]).tolist()) == sorted(torch.cat([y for _, y in epoch1]).tolist())
    fixed = _module(resample_every_epoch=False).train_dataloader()
    poses = [fixed.poses(0), fixed.poses(1)]
    torch.testing.assert_close(poses[0], poses[1])
    assert not torch.equal(train.poses(0)["angles"], train.poses(1)["angles"])
    _, _, truth = next(iter(_module(return_truth=True).val_dataloader()))
    assert truth["theta"].shape == (4, 12) and truth["angles"].shape == (4, 3)


# --- models -----------------------------------------------------------------------------------------------------


def test_depth_projection_and_model_shapes():
    volumes = torch.rand(3, 1, 60, 60, 60)
    torch.testing.assert_close(depth_projection(volumes), volumes.mean(2))
    assert depth_projection(volumes, 6.0).shape == (3, 1, 60, 60)
    with pytest.raises(ValueError, match="D, H, W"):
        depth_projection(volumes[:, :, 0])
    for kind in ("cnn", "st"):
        model = build_volume_model(kind, 4, (1, 60, 60, 60), out_size=30, localisation=LOCALISATION)
        assert model.flattened(volumes).shape == (3, 1, 30, 30)
        assert model(volumes).shape == (3, 10)
    with pytest.raises(ValueError, match="divide"):
        build_volume_model("cnn", 4, (1, 60, 60, 60), out_size=28)


def test_the_3d_transformer_starts_as_the_identity():
    volumes = torch.rand(2, 1, 60, 60, 60)
    full = build_volume_model("st", 4, (1, 60, 60, 60), out_size=60, localisation=LOCALISATION)
    torch.testing.assert_close(full.transformer(volumes), volumes, atol=2e-5, rtol=0)
    torch.testing.assert_close(full.transformer.theta, Affine3dFamily().identity(2))
    half = build_volume_model("st", 4, (1, 60, 60, 60), out_size=30, localisation=LOCALISATION, projection_scale=6.0)
    torch.testing.assert_close(half.transformer(volumes), F.avg_pool3d(volumes, 2), atol=2e-5, rtol=0)
    baseline = build_volume_model("cnn", 4, (1, 60, 60, 60), out_size=30, projection_scale=6.0)
    torch.testing.assert_close(half.flattened(volumes), baseline.flattened(volumes), atol=1e-4, rtol=0)
    # the classifier reads the transformer's output: moving θ moves the logits
    with torch.no_grad():
        half.transformer.localisation[-1].bias[3] += 0.3
    assert not torch.allclose(half.flattened(volumes), baseline.flattened(volumes), atol=1e-3)


def test_parameter_counts_are_matched():
    counts = {}
    for kind in ("cnn", "st"):
        model, _ = build_matched_volume_model(60_000, kind=kind, in_shape=(1, 60, 60, 60), localisation=LOCALISATION)
        counts[kind] = count_parameters(model)
    assert all(abs(c - 60_000) / 60_000 < 0.03 for c in counts.values()), counts


# --- configs, runs, table ---------------------------------------------------------------------------------------


def _compose(cell, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"experiment={cell}", *overrides])


@pytest.mark.parametrize("cell", CELLS)
def test_every_experiment_composes_and_validates_in_both_profiles(cell):
    cfg = _compose(cell)
    validate(cfg)
    assert (
        cfg.paper.table == "mnist_3d"
        and cfg.profile.name == "quick"
        and cfg.data._target_.endswith("VolumeMNISTDataModule")
    )
    paper = _compose(cell, "profile=mnist3d_paper")
    validate(paper)
    assert paper.profile.name == "paper" and paper.model.out_size == 60


@pytest.mark.parametrize(
    "cell, override, key",
    [
        ("mnist3d/st", "model.out_size=28", "model.out_size"),
        ("mnist3d/st", "transformer=affine", "transformer.family"),
        ("mnist3d/cnn", "transformer=affine3d", "transformer.family"),
        ("mnist3d/st", "data.thickness=50", "data.thickness"),
        ("mnist3d/st", "data.max_tilt=200", "data.max_tilt"),
        ("mnist3d/st", "model.kernel_sizes=[4,5]", "model.kernel_sizes"),
        ("mnist3d/st", "model.localisation.hidden=[0]", "model.localisation.hidden"),
        ("mnist3d/cnn", "model.projection_scale=-1", "model.projection_scale"),
    ],
)
def test_bad_values_name_their_key(cell, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(_compose(cell, override))


def test_both_cells_train_test_record_and_tabulate(tmp_path):
    for cell in CELLS:
        cfg = _compose(
            cell, "profile.iterations=2", "profile.val_every=2", "profile.batch_size=4", "data.val_size=4",
            "data.limit=16", "data.source=bundled", f"paths.data={tmp_path / 'data'}",
            f"paths.runs={tmp_path / 'runs'}",
            f"paths.variants={tmp_path / 'runs'}", f"paths.models={tmp_path / 'models'}",
            f"paths.checkpoints={tmp_path / 'ckpt'}",
        )  # fmt: skip
        out = tmp_path / "out" / cell
        record = run(cfg, out)
        assert record.status == "finished" and record.table == "mnist_3d" and record.iterations == 2
        assert 0 <= record.metrics["test/err"] <= 100 and record.data["n_test"] == 16
        assert any("volume protocol guessed" in note for note in record.deviations)
        assert (out / "figures" / "projection.png").stat().st_size > 0
    paths = build_tables(load_records(tmp_path / "runs", "mnist3d"), tmp_path / "results")
    text = paths["markdown"].read_text()
    assert "| CNN (depth-flattened input) | — / " in text and "| 3D ST-CNN | — / " in text
