"""The fast path changes speed, not results: each option on vs off trains to the same losses within a stated
tolerance, all options off is bitwise repeatable, the sampler stays float32 under mixed precision, and the
once-per-interval divergence check still stops a run whose loss went NaN at any step."""

import copy
import csv
import statistics
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from stn_repro.config import ConfigError
from stn_repro.fast import apply_fast_options
from stn_repro.models import build_matched_model
from stn_repro.systems import ClassificationSystem
from stn_repro.train import config_hash, run
from stn_repro.transformers import SpatialTransformer, conv_localisation, get_family
from stn_repro.transformers.sampling import sample
from stn_repro.validation import validate

CONF = Path(__file__).resolve().parents[1] / "conf"
STEPS = 300
LOG_EVERY = 50
# Tolerances of the equivalence tests, on the mean training loss of each 50-step window (2.29 → 1.45 along the run)
# and on the final test error (%, 1,000 test digits, ~41% error after 300 steps: mid-learning, where many digits sit
# near a decision boundary). Options change rounding only, and rounding differences grow along the run: measured on
# this schedule (torch 2.14.1, 2 CPU cores), the largest loss gap was 0.0035 for channels-last and 0.008 for bf16,
# and the test error moved by 1.1 and 1.7 points. With momentum 0.9 (the quick profile) or lr 0.03 the same
# differences grow into 0.05-0.3 in loss and 5-18 points of error after 300 steps (a chaotic trajectory, whatever
# the option), so the comparison uses the paper's plain SGD at lr 0.02, where training is smooth.
TOLERANCE = {"fp32": (0.02, 2.5), "bf16": (0.05, 3.5)}  # (loss, test error points)


pytestmark = pytest.mark.usefixtures("offline")


def _config(tmp_path, data_root, *overrides):
    """A small ST-CNN Aff on R (~20k parameters), plain SGD at lr 0.02, batch 16, ``STEPS`` steps, bundled digits,
    every fast option off."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "experiment=table1/st_cnn_aff_r",
                f"profile.iterations={STEPS}",
                f"profile.val_every={STEPS}",
                "profile.batch_size=16",
                "profile.param_target=20000",
                f"fast.log_every={LOG_EVERY}",
                "fast.channels_last=false",  # every option off (channels-last is on by default)
                "system.optimizer.lr=0.02",
                "system.optimizer.momentum=0.0",
                "data.val_size=16",
                "data.source=bundled",
                f"paths.data={data_root}",
                f"paths.runs={tmp_path / 'runs'}",
                f"paths.variants={tmp_path / 'runs'}",
                f"paths.models={tmp_path / 'models'}",
                f"paths.checkpoints={tmp_path / 'ckpt'}",
                *overrides,
            ],
        )


class FinalWeights(pl.Callback):
    """Keeps a copy of the model's weights at the end of training."""

    def on_train_end(self, trainer, pl_module):
        self.state = {name: value.detach().clone() for name, value in pl_module.state_dict().items()}


def _train(tmp_path, data_root, name, *overrides):
    """One real run (``stn_repro.train.run``): its logged training losses, final weights and test error."""
    weights = FinalWeights()
    record = run(_config(tmp_path / name, data_root, *overrides), tmp_path / name / "out", callbacks=[weights])
    assert record.status == "finished" and record.iterations == STEPS
    (metrics,) = (tmp_path / name / "out" / "csv").rglob("metrics.csv")
    with metrics.open() as handle:
        losses = [(int(row["step"]), float(row["train/loss"])) for row in csv.DictReader(handle) if row["train/loss"]]
    return losses, weights.state, record.metrics["test/err"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root):
    """The run with every option off (float32, eager, NCHW)."""
    return _train(tmp_path_factory.mktemp("reference"), data_root, "off")


def test_all_options_off_is_bitwise_repeatable_on_cpu(tmp_path, data_root, reference):
    losses, state, test_err = _train(tmp_path, data_root, "again")
    assert losses == reference[0] and test_err == reference[2]
    assert state.keys() == reference[1].keys()
    assert all(torch.equal(state[name], reference[1][name]) for name in state)
    assert [step for step, _ in losses] == list(range(LOG_EVERY - 1, STEPS, LOG_EVERY))  # one row per window


def test_the_log_interval_changes_what_is_logged_not_the_training(tmp_path, data_root, reference):
    losses, state, test_err = _train(tmp_path, data_root, "every-step", "fast.log_every=1")
    assert all(torch.equal(state[name], reference[1][name]) for name in state) and test_err == reference[2]
    assert [step for step, _ in losses] == list(range(STEPS))
    per_step = [loss for _, loss in losses]
    window_means = [statistics.fmean(per_step[i : i + LOG_EVERY]) for i in range(0, STEPS, LOG_EVERY)]
    assert window_means == pytest.approx([loss for _, loss in reference[0]], rel=1e-5)


@pytest.mark.parametrize(
    "option,kind",
    [
        ("fast.channels_last=true", "fp32"),
        ("trainer.precision=bf16-mixed", "bf16"),
        pytest.param("fast.compile=true", "fp32", marks=pytest.mark.slow),  # compiling takes ~1 min on 2 cores
    ],
)
def test_each_option_trains_to_the_same_losses_within_tolerance(tmp_path, data_root, reference, option, kind):
    losses, _, test_err = _train(tmp_path, data_root, "option", option)
    loss_tolerance, error_tolerance = TOLERANCE[kind]
    assert [step for step, _ in losses] == [step for step, _ in reference[0]]
    assert [loss for _, loss in losses] == pytest.approx([loss for _, loss in reference[0]], abs=loss_tolerance)
    assert abs(test_err - reference[2]) <= error_tolerance
    assert reference[0][-1][1] < reference[0][0][1] - 0.5  # the reference learns: the comparison means something


def test_a_nan_at_any_step_of_a_window_stops_the_run_as_diverged(tmp_path, data_root, monkeypatch, capsys):
    original = ClassificationSystem.loss

    def nan_at_step_7(self, outputs, labels):
        loss = original(self, outputs, labels)
        return loss * torch.nan if self.global_step == 7 else loss

    monkeypatch.setattr(ClassificationSystem, "loss", nan_at_step_7)
    cfg = _config(tmp_path, data_root, "profile.iterations=30", "profile.val_every=30", "fast.log_every=10")
    record = run(cfg, tmp_path / "out")
    assert record.status == "diverged" and record.metrics is None
    err = capsys.readouterr().err
    assert "training diverged between steps 0 and 9: the mean loss of those steps is nan" in err
    assert "system.optimizer.lr" in err


def test_the_sampler_and_its_grid_stay_float32_under_bf16_autocast():
    torch.manual_seed(0)
    family = get_family("affine")
    transformer = SpatialTransformer(conv_localisation((1, 28, 28), family), family, out_size=(28, 28))
    images = torch.rand(4, 1, 28, 28)
    theta = (family.identity(4) + 0.3 * torch.randn(4, 6)).requires_grad_()
    expected = transformer.warp(images, theta)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), theta)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # forward under autocast, backward after it (as Lightning)
        warped = transformer.warp(images, theta)
        features = transformer.warp(images.bfloat16(), theta)
    (grad,) = torch.autograd.grad(warped.square().sum(), theta)
    assert warped.dtype == torch.float32 and torch.equal(warped, expected)
    assert grad.dtype == torch.float32 and torch.equal(grad, expected_grad)
    # bfloat16 feature maps come back as bfloat16, sampled in float32 from the same values
    assert features.dtype == torch.bfloat16
    assert torch.equal(features, transformer.warp(images.bfloat16().float(), theta).bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sample(images, family.grid(theta.detach(), (28, 28))).dtype == torch.float32


def test_fast_options_keep_the_weights_and_the_outputs():
    torch.manual_seed(0)
    model, _ = build_matched_model(20_000, kind="st_cnn", in_shape=(1, 42, 42), num_classes=10, family="affine", pool=2)
    images = torch.rand(8, 1, 42, 42)
    expected, keys = model(images), list(model.state_dict())
    apply_fast_options(model, {"channels_last": True, "compile": False, "compile_mode": "default"})
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert list(model.state_dict()) == keys
    assert torch.allclose(model(images), expected, atol=1e-5)


@pytest.mark.parametrize(
    "override,key",
    [
        ("fast.log_every=0", "fast.log_every"),
        ("fast.compile=maybe", "fast.compile"),
        ("fast.channels_last=1", "fast.channels_last"),
        ("fast.compile_mode=fastest", "fast.compile_mode"),
        ("fast.compile_mode=reduce-overhead", "fast.compile_mode"),  # CUDA graphs on trainer=cpu
        ("trainer.precision=16-mixed", "trainer.precision"),  # fp16 autocast needs a GPU
        ("trainer.precision=bf16", "trainer.precision"),
    ],
)
def test_bad_fast_path_values_name_their_key(tmp_path, data_root, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(_config(tmp_path, data_root, override))


def test_the_fast_options_stay_out_of_the_config_hash(tmp_path, data_root):
    plain = _config(tmp_path, data_root)
    fast = _config(tmp_path, data_root, "fast.compile=true", "fast.channels_last=true", "fast.log_every=7")
    assert config_hash(plain, "x") == config_hash(fast, "x")
    assert config_hash(plain, "x") != config_hash(_config(tmp_path, data_root, "trainer.precision=bf16-mixed"), "x")


def _bench_module(name: str = "bench"):
    """``scripts/bench.py`` or one of its parts (``benchmarks.projection``, ...), imported as the scripts do."""
    import importlib
    import sys

    scripts = str(Path(__file__).resolve().parents[1] / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    return importlib.import_module(name)


def test_the_projection_adds_every_cell_seed_and_dataset():
    models = _bench_module("benchmarks.plan").MODELS
    framework = {f"{model}_{dataset}": {"s_per_step": 0.5 if dataset == "rts" else 0.25, "eval_images_per_s": 1e4}
                 for model in models for dataset in ("r", "rts")}  # fmt: skip
    generation = {name: {"s": 2.0} for name in ("R", "RTS", "P", "E", "TC")}
    paper = OmegaConf.create({"seeds": [0, 1, 2], "iterations": 150_000, "val_every": 5000, "batch_size": 256})
    projection = _bench_module("benchmarks.projection").projection
    p = projection({"framework": framework, "generation": generation}, paper, batch=128)
    evaluation_s = (30 * 6000 + 10_000) / 1e4
    per_model = 3 * (150_000 * 1.0 + evaluation_s) + 3 * 3 * (150_000 * 0.5 + evaluation_s)  # batch 128 → 256: x2
    assert p["complete"] and p["n_cells"] == 32
    assert p["train_s"] == pytest.approx(8 * per_model)
    assert p["data_s"] == pytest.approx(4 * 2.0 * (3 + 1 / 6))  # R, RTS, P, E: a training set per seed, one test set
    assert p["total_s"] == pytest.approx(p["train_s"] + p["data_s"])


@pytest.mark.parametrize("n", [1, 5, 6, 10, 20, 60, 61])
def test_the_median_interval_takes_the_order_statistics_of_the_binomial_at_95_percent(n):
    from scipy import stats

    median_interval = _bench_module("benchmarks.report").median_interval
    values = [float(v) for v in range(n, 0, -1)]  # x(j) = j, unsorted
    low, high = median_interval(values)
    assert high == n + 1 - low and low <= (n + 1) / 2 <= high
    j = int(low)
    coverage = 1 - 2 * stats.binom.cdf(j - 1, n, 0.5)  # P(x(j) <= median <= x(n + 1 - j))
    assert coverage >= 0.95 or j == 1  # at least 95%, or the whole range when n is too small
    assert j == 1 or 1 - 2 * stats.binom.cdf(j, n, 0.5) < 0.95  # and the narrowest such interval


def test_the_report_renders_the_committed_figures():
    """``results/bench.md`` is the rendering of ``results/bench.json``: the committed pair agree byte for byte."""
    import json

    results = Path(__file__).resolve().parents[1] / "results"
    text = _bench_module("benchmarks.report").render(json.loads((results / "bench.json").read_text()))
    assert "## CPU: AMD EPYC, 2 cores" in text and "## GPU: not measured" in text
    assert "| ST-CNN Aff | 399,426 | 4 | 646 | 640 | 499 | 1.000 | 0.994–1.019 (25) | 1.29 |" in text  # on RTS
    assert "| FCN | 100 | 44,284 | 46,313 | 0.976 | 0.961–0.988 (60) |" in text  # batch 64, paired windows
    assert "### Projection: the `paper` profile of Table 1 on this device" in text and "**58.0 days**" in text
    assert text == (results / "bench.md").read_text()


@pytest.mark.slow
def test_the_benchmark_harness_writes_its_figures_and_keeps_other_devices(tmp_path):
    """``scripts/bench.py --quick`` end to end (about 2 minutes on 2 cores): the framework and the bare loop in 2
    rounds of 2 paired windows, the tutorial loop in the first, both batch sizes, the options, two concurrent runs,
    stacked seeds, generation and the projection; then a GPU run's figures join the CPU's in one report."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out, saved = tmp_path / "bench.md", tmp_path / "bench.json"
    command = [sys.executable, str(root / "scripts" / "bench.py"), "--quick", "--out", str(out), "--json", str(saved)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=root, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    cpu = json.loads(saved.read_text())["cpu"]
    cells = ("fcn_rts", "st_cnn_aff_rts")
    for path, rounds in (("bare", 2), ("tutorial", 1)):  # rounds of 2 windows each, pooled
        assert all(cpu[path][c]["images_per_s"] > 0 for c in cells)
        assert all(len(cpu[path][c]["windows_s_per_step"]) == 2 * rounds for c in cells)
        assert all(len(cpu[path][c]["rounds_images_per_s"]) == rounds for c in cells)
    for figures in (cpu, cpu["second_batch"]):  # each framework window paired with a bare one
        assert all(len(figures["framework"][c]["windows_images_per_s"]) == len(figures["framework"][c]["ratios"]) == 4
                   and figures["framework"][c]["steps_per_call"] == 2 for c in cells)  # fmt: skip
    assert cpu["second_batch"]["batch"] == 16 and [row["batch"] for row in cpu["stacked"]] == [32, 16]
    assert set(cpu["framework"]) == {*cells, "fcn_r", "st_cnn_aff_r"}
    assert cpu["tutorial"]["fcn_rts"]["workers"] == 2 and cpu["environment"]["settings"]["batch"] == 32
    assert [row["processes"] for row in cpu["concurrency"]] == [1, 2]
    assert cpu["projection"]["total_s"] > 0 and set(cpu["generation"]) == {"R", "RTS", "P", "E", "TC"}
    text = out.read_text()
    assert "| ST-CNN Aff | 399," in text and "ST-CNN Aff on RTS: the framework trains at" in text
    assert "### Framework vs bare loop at batch 16 on RTS" in text and "framework / bare ≥ 0.95 (target)" in text
    assert "## GPU: not measured" in text

    gpu = {**cpu, "environment": {**cpu["environment"], "device_type": "cuda", "device": "A test GPU"}}
    _bench_module().save(gpu, saved, out)
    assert set(json.loads(saved.read_text())) == {"cpu", "cuda"}
    text = out.read_text()
    assert "## CPU: " in text and "## GPU: A test GPU" in text and "not measured" not in text


def test_the_flop_count_is_the_analytic_count_of_a_small_net():
    """``scripts/bench_flops.py``: 2 FLOPs per multiply-add; the backward pass computes every weight's gradient and
    the gradient of each layer's input except the first's (the images need none)."""
    flops_per_image = _bench_module("bench_flops").flops_per_image
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3, bias=False), torch.nn.Linear(3, 2, bias=False))
    train, evaluation = flops_per_image(net, (1, 2, 2), batch=5)
    forward = 2 * 4 * 3 + 2 * 3 * 2
    assert evaluation == forward
    assert train == forward + (2 * 3 * 2 + 2 * 3 * 2) + 2 * 4 * 3  # layer 2: weight + input; layer 1: weight


def test_the_flop_report_sums_the_cells_and_derives_the_achieved_rate():
    bench_flops = _bench_module("bench_flops")
    plan = _bench_module("benchmarks.plan")
    cells = {f"{m}_{d}": {"params": 1, "train_flops": 3e6, "eval_flops": 1e6, "flops_per_seed": 1e15, "seeds": 3}
             for m in plan.MODELS for d in bench_flops.DATASETS}  # fmt: skip
    bench = {"cpu": {"environment": {"device": "test CPU", "settings": {"batch": 256}}, "framework": {
        "fcn_rts": {"images_per_s": 1000.0}}, "bare": {"fcn_rts": {"images_per_s": 2000.0}}}}  # fmt: skip
    text = bench_flops.render(cells, bench, Path("bench.json"))
    assert "**96 PFLOP** counted" in text  # 32 cells x 3 seeds x 1 PFLOP
    assert "| BF16 on tensor cores | 989 | 0.03 |" in text  # 96e15 / 989e12 / 3600
    assert "| fcn_rts | 3.0 | 3.0 | 6.0 | — |" in text  # 1,000 and 2,000 images/s x 3 MFLOP
    with_reference = bench_flops.render(cells, bench, Path("bench.json"), reference=30e9)
    assert "| fcn_rts | 3.0 | 3.0 | 6.0 | — | 10% / 20% / — |" in with_reference  # 3 and 6 of 30 GFLOP/s


def test_seeds_stacked_with_torch_func_take_the_steps_of_the_separate_runs():
    """``scripts/bench_stacked.py``: the stacked seeds' momentum-SGD steps are the separate models' steps (up to
    the order in which the batched products add up)."""
    bench_stacked = _bench_module("bench_stacked")
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
              for _ in range(3)]  # fmt: skip
    separate = bench_stacked.Separate(models)
    stacked = bench_stacked.Stacked([copy.deepcopy(m) for m in models])
    for _ in range(4):
        images, labels = torch.rand(3, 5, 1, 4, 4), torch.randint(3, (3, 5))
        separate.step(images, labels)
        stacked.step(images, labels)
    expected = bench_stacked.detach_stacked(models)
    assert set(expected) == set(stacked.params)
    for name, value in expected.items():
        torch.testing.assert_close(stacked.params[name], value, rtol=1e-5, atol=1e-6)
    assert not torch.equal(expected["1.weight"][0], expected["1.weight"][1])  # three different seeds' weights
