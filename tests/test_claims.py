"""Uncertainty and paired tests: Wilson intervals and McNemar p-values against scipy, per-sample outcomes in
records, intervals in the tables, and the claims table's verdicts."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from stn_repro.results import claims
from stn_repro.results.records import RecordError
from stn_repro.results.stats import mcnemar_p, pack_outcomes, unpack_outcomes, wilson_interval
from stn_repro.results.tables import build_tables
from tests.test_results import DATA, make


@pytest.mark.parametrize("errors,n", [(0, 1000), (7, 1000), (53, 1000), (500, 1000), (1000, 1000), (3, 10)])
def test_wilson_interval_matches_scipy(errors, n):
    ci = scipy_stats.binomtest(errors, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(errors, n)
    assert low == pytest.approx(100 * ci.low, abs=1e-9) and high == pytest.approx(100 * ci.high, abs=1e-9)


def test_wilson_interval_ends_exactly_at_0_and_100_percent():
    # 0 errors of 1,000 once gave a low end of 2e-17 %: a mean of 0 outside its own interval broke the error bars
    assert wilson_interval(0, 1000)[0] == 0.0 and wilson_interval(1000, 1000)[1] == 100.0


@pytest.mark.parametrize("b,c", [(0, 0), (3, 0), (10, 12), (40, 10), (1, 30), (250, 260)])
def test_exact_mcnemar_matches_scipys_binomial_test(b, c):
    a = np.array([True] * b + [False] * c + [True] * 5 + [False] * 7)  # 5 both wrong, 7 both right
    other = np.array([False] * b + [True] * c + [True] * 5 + [False] * 7)
    p, only_a, only_b = mcnemar_p(a, other)
    assert (only_a, only_b) == (b, c)
    expected = 1.0 if b + c == 0 else scipy_stats.binomtest(min(b, c), b + c, 0.5).pvalue
    assert p == pytest.approx(expected, rel=1e-9)


def test_outcomes_round_trip_small_and_checked():
    wrong = np.random.default_rng(0).random(1000) < 0.1
    packed = pack_outcomes(wrong)
    assert packed["n"] == 1000 and len(packed["wrong"]) == 168
    assert np.array_equal(unpack_outcomes(packed), wrong)
    assert make(outcomes=packed).outcomes == packed
    with pytest.raises(RecordError, match="outcomes"):
        make(outcomes=pack_outcomes(wrong[:999]))
    per_digit = pack_outcomes(np.tile(wrong, 3))  # one per digit of 3-digit sequences: 3 · n_test
    assert make(outcomes=per_digit).outcomes["n"] == 3000


def _record(row, column, err_rate, seed=0, rng=None, outcomes=True, **changes):
    n = DATA["n_test"]
    wrong = np.zeros(n, bool)
    wrong[(rng or np.random.default_rng(seed)).choice(n, int(round(err_rate * n)), replace=False)] = True
    cell = row.lower().replace(" ", "_").replace("-", "_") + f"_{column.lower()}"
    return make(cell=cell, row=row, column=column, seed=seed, err=100 * wrong.mean(),
                outcomes=pack_outcomes(wrong) if outcomes else None, **changes)  # fmt: skip


def test_claim_verdicts_follow_the_paired_test():
    rng = np.random.default_rng(1)
    records = [
        _record("FCN", "RTS", 0.30, rng=rng),
        _record("ST-FCN Aff", "RTS", 0.05, rng=rng),  # far better: holds
        _record("ST-FCN Proj", "RTS", 0.295, rng=rng),  # about the same: not significant
        _record("ST-FCN TPS", "RTS", 0.60, rng=rng),  # far worse: contradicted
        _record("CNN", "RTS", 0.10, rng=rng, outcomes=False),  # no outcomes: means only
    ]
    by_text = {c.text: c for c in claims.check_claims(records)}
    assert by_text["ST-FCN Aff beats FCN on RTS"].verdict == "holds"
    assert by_text["ST-FCN Aff beats FCN on RTS"].p < 1e-10
    assert by_text["ST-FCN Proj beats FCN on RTS"].verdict in ("holds, not significant", "not shown")
    assert by_text["ST-FCN TPS beats FCN on RTS"].verdict == "contradicted"
    assert by_text["CNN beats FCN on RTS"].verdict == "means only"
    assert by_text["ST-CNN Aff beats CNN on RTS"].verdict == "not run"
    assert by_text["ST-FCN Aff reaches the CNN on RTS"].verdict == "means only"
    assert len(claims.comparisons()) + len(claims.appendix_comparisons()) == len(by_text)


def test_claims_file_and_table_intervals(tmp_path):
    records = [_record("FCN", "R", 0.10), _record("CNN", "R", 0.02)]
    text = claims.write_claims(records, tmp_path).read_text()
    assert "| 2 | CNN beats FCN on R | 2.00 / 10.00 | 1.2 / 2.1 |" in text and "| holds |" in text
    assert "## Claim 6" in text and "| ST-CNN Aff on RTS | — | — | — | not run |" in text
    table = build_tables(records, tmp_path)["markdown"].read_text()
    low, high = wilson_interval(20, 1000)
    assert f"| CNN | 1.2 / 2.00 [{low:.1f}, {high:.1f}] (+0.80) |" in table


def test_residual_pose_is_zero_when_the_transformer_undoes_the_distortion_exactly():
    from stn_repro.data.distortions import get_distortion
    from stn_repro.results.pose import _AFFINE, circular_sd_deg, digit_centre, fitted_affine, rotation_and_scale
    from stn_repro.transformers import SpatialTransformer

    generator = torch.Generator().manual_seed(0)
    digits, labels = torch.randint(0, 255, (50, 28, 28), dtype=torch.uint8), torch.zeros(50, dtype=torch.long)
    truth = get_distortion("RTS").generate(digits, labels, generator, torch.device("cpu"))["theta"].float()
    bottom = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64).expand(50, 1, 3)
    distortion = torch.cat([_AFFINE.matrix(truth).double(), bottom], dim=1)
    inverse = _AFFINE.inverse(truth)  # what the supervised-θ loss pulls the transformer to
    for family, theta in (("affine", inverse), ("projective", torch.cat([inverse, torch.zeros(50, 2)], 1))):
        residual = distortion @ fitted_affine(SpatialTransformer(torch.nn.Identity(), family), theta, (42, 42))
        angle, log_scale = rotation_and_scale(residual)
        assert angle.abs().max() < 1e-4 and log_scale.abs().max() < 1e-6
        assert digit_centre(residual).abs().max() < 1e-6  # the digit's centre at the output's centre
    before, _ = rotation_and_scale(distortion)
    assert 20 < circular_sd_deg(before) < 30  # RTS: rotation uniform in ±45°
    assert circular_sd_deg(torch.full((10,), 33.0)) == pytest.approx(0.0, abs=1e-3)


def test_claim_6_verdicts_from_the_recorded_pose_spreads():
    pose = {"pose/angle_sd_in": 26.0, "pose/log_scale_sd_in": 0.16, "pose/shift_sd_in": 0.2, "pose/shift_sd_out": 0.1}
    upright = _record("ST-CNN Aff", "RTS", 0.05, metrics={"test/err": 5.0, **pose, "pose/angle_sd_out": 6.0,
                                                       "pose/log_scale_sd_out": 0.05})  # fmt: skip
    tilted = _record("ST-FCN Aff", "RTS", 0.5, metrics={"test/err": 50.0, **pose, "pose/angle_sd_out": 24.0,
                                                      "pose/log_scale_sd_out": 0.05})  # fmt: skip
    by_model = {p.model: p for p in claims.check_poses([upright, tilted, _record("ST-CNN Aff", "R", 0.05)])}
    assert by_model[("ST-CNN Aff", "RTS")].verdict == "holds"
    assert by_model[("ST-FCN Aff", "RTS")].verdict == "not shown"
    assert (
        by_model[("ST-CNN Aff", "R")].verdict == "not measured" and by_model[("ST-CNN TPS", "R")].verdict == "not run"
    )


def test_paired_difference_is_the_wald_interval_of_matched_proportions():
    only_a, only_b, n = 40, 10, 1000
    d, half_width = claims.paired_difference(only_a, only_b, n)
    p10, p01 = only_a / n, only_b / n
    assert d == pytest.approx(100 * (p10 - p01))
    assert half_width == pytest.approx(100 * 1.959964 * np.sqrt((p10 + p01 - (p10 - p01) ** 2) / n))
    assert claims.paired_difference(0, 0, n) == (0.0, 0.0)


def test_a_claim_below_the_resolution_of_the_test_images_says_so(tmp_path):
    rng = np.random.default_rng(3)
    records = [_record("ST-CNN TPS", "E", 0.031, rng=rng), _record("ST-CNN Aff", "E", 0.030, rng=rng),
               _record("FCN", "RTS", 0.30, rng=rng), _record("ST-FCN Aff", "RTS", 0.31, rng=rng)]  # fmt: skip
    by_text = {c.text: c for c in claims.check_claims(records)}
    tps = by_text["ST-CNN TPS beats ST-CNN Aff on E"]  # paper: 1.1 vs 1.2, a 0.1-point gap
    assert tps.verdict != "holds" and "paper's gap (0.1) is inside our ±" in tps.why
    rts = by_text["ST-FCN Aff beats FCN on RTS"]  # paper: 0.8 vs 5.2, resolvable on 1,000 images
    assert rts.verdict != "holds" and rts.why == ""
    assert "not resolvable on these images" in claims.write_claims(records, tmp_path).read_text()


def test_pose_histograms_are_recorded_checked_and_drawn(tmp_path):
    from stn_repro.data.distortions import get_distortion
    from stn_repro.results.pose import ANGLE_EDGES, pose_metrics
    from stn_repro.transformers import SpatialTransformer

    class Identity(torch.nn.Module):  # an ST model whose transformer does nothing: the pose stays the distortion's
        def __init__(self):
            super().__init__()
            localisation = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(42 * 42, 6))
            with torch.no_grad():
                localisation[1].weight.zero_()
                localisation[1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
            self.transformer = SpatialTransformer(localisation, "affine")

    generator = torch.Generator().manual_seed(0)
    digits, labels = torch.randint(0, 255, (300, 28, 28), dtype=torch.uint8), torch.zeros(300, dtype=torch.long)
    test = get_distortion("RTS").generate(digits, labels, generator, torch.device("cpu"))
    metrics, histograms = pose_metrics(Identity(), test)
    angle = histograms["angle_deg"]
    assert angle["edges"] == ANGLE_EDGES and angle["before"] == angle["after"] and sum(angle["before"]) == 300
    assert metrics["pose/angle_sd_in"] == pytest.approx(metrics["pose/angle_sd_out"], abs=1e-6)
    assert sum(histograms["log_scale"]["after"]) == 300
    record = _record("ST-CNN Aff", "RTS", 0.05, pose=histograms)
    assert record.pose == histograms
    with pytest.raises(RecordError, match="field 'pose'"):
        _record("ST-CNN Aff", "RTS", 0.05, pose={"angle_deg": {**angle, "after": angle["after"][:-1]}})
    claims.write_claims([record], tmp_path)
    assert (tmp_path / "figures" / claims.POSE_FIGURE).stat().st_size > 10_000


def test_variants_of_a_contradicted_claim_are_listed_under_it(tmp_path):
    rng = np.random.default_rng(4)
    records = [_record("CNN", "TC", 0.10, rng=rng), _record("ST-CNN", "TC", 0.18, rng=rng)]
    longer = _record("ST-CNN", "TC", 0.08, rng=rng, canonical=False, overrides=["profile.iterations=2000"])
    unrelated = _record("FCN", "R", 0.08, rng=rng, canonical=False, overrides=["profile.iterations=2000"])
    text = claims.write_claims(records, tmp_path, [longer, unrelated]).read_text()
    row = next(line for line in text.splitlines() if "| ST-CNN beats CNN on TC |" in line)
    assert "| contradicted | variants measured: see the last section |" in row
    section = text.split("## Variants measured for the claims that do not hold here")[1]
    assert "| ST-CNN on TC | `profile.iterations=2000` | 8.0 [" in section and "FCN on R" not in section
    assert "## Variants" not in claims.write_claims(records, tmp_path).read_text()


def _appendix_record(suite, table, row, err_rate, rng):
    wrong = np.zeros(DATA["n_test"], bool)
    wrong[rng.choice(len(wrong), int(round(err_rate * len(wrong))), replace=False)] = True
    cell = row.lower().replace(" ", "_").replace("-", "_").replace("(", "").replace(")", "")
    return make(suite=suite, cell=cell, table=table, row=row, column=None, err=100 * wrong.mean(),
                outcomes=pack_outcomes(wrong))  # fmt: skip


def test_appendix_claims_are_paired_tests_on_their_own_tables(tmp_path):
    rng = np.random.default_rng(4)
    records = [
        _appendix_record("addition", claims.ADDITION, "CNN", 0.15, rng),
        _appendix_record("addition", claims.ADDITION, "2xST-FCN Aff", 0.08, rng),  # far better: holds
        _appendix_record("addition", claims.ADDITION, "FCN", 0.10, rng),  # better than the CNN: contradicted
        _appendix_record("mnist3d", claims.MNIST3D, "3D ST-CNN", 0.30, rng),
        _appendix_record("mnist3d", claims.MNIST3D, "CNN (depth-flattened input)", 0.30, rng),
        _record("CNN", "RTS", 0.10, rng=rng),  # a Table 1 CNN is not addition's CNN
    ]
    by_text = {c.text: c for c in claims.check_claims(records)}
    assert by_text["2xST-FCN Aff beats the CNN on addition"].verdict == "holds"
    assert by_text["2xST-FCN Aff beats the CNN on addition"].paper == (9.0, 14.7)
    assert by_text["CNN beats the FCN on addition"].verdict == "contradicted"
    assert by_text["CNN beats the FCN on addition"].ours == pytest.approx((15.0, 10.0))
    assert by_text["2xST-FCN TPS beats the CNN on addition"].verdict == "not run"
    volume = by_text["3D ST-CNN beats the CNN on the depth-flattened volume"]
    assert volume.verdict in ("holds, not significant", "not shown") and volume.paper == (None, None)
    assert by_text["RNN-SPN beats CNN + SPN (per digit)"].verdict == "not run"
    text = claims.write_claims(records, tmp_path).read_text()
    appendix = text[text.index("## Appendix experiments") :]
    assert "| A.1 | 2xST-FCN Aff beats the CNN on addition | 8.00 / 15.00 | 9 / 14.7 |" in appendix
    assert "appendix: " in text.splitlines()[4] and "1 holds" in text.splitlines()[4].split("appendix: ")[1]


@pytest.mark.parametrize(
    "worst, verdict", [(95.0, "holds"), (90.0, "holds"), (85.0, "not shown"), (70.0, "contradicted")]
)
def test_colocalisation_claims_need_every_digit_at_the_threshold(worst, verdict):
    per_digit = {f"test/localised_d{k}": 100.0 for k in range(10)}
    per_digit["test/localised_d3"] = worst  # 100 images per digit: 85% has a Wilson interval reaching 90%
    record = make(suite="colocalisation", cell="t", table=claims.COLOCALISATION, row="T (translated, 84x84)",
                  column=None, metrics={**per_digit, "test/localised": 99.0})  # fmt: skip
    t, tc = claims.check_localisation([record])
    assert (t.dataset, t.threshold, t.verdict) == ("T", 90.0, verdict)
    assert t.worst[:2] == (3, worst) and t.worst[2] <= worst <= t.worst[3]
    assert tc.verdict == "not run"
    row = next(line for line in claims._markdown([], [], [t, tc], [record]).splitlines() if line.startswith("| T |"))
    why = "" if verdict == "holds" else "digit 3 below 90%; why, measured: the README's co-localisation row"
    assert row.endswith(f"| {verdict} | {why} |")


def test_the_command_line_reads_every_claim_suite_of_the_runs_folder(tmp_path, capsys):
    from stn_repro.results.records import write_record

    rng = np.random.default_rng(5)
    per_digit = {f"test/localised_d{k}": 95.0 for k in range(10)}
    for record in (
        _record("FCN", "RTS", 0.30, rng=rng),
        _appendix_record("mnist3d", claims.MNIST3D, "3D ST-CNN", 0.20, rng),
        _appendix_record("mnist3d", claims.MNIST3D, "CNN (depth-flattened input)", 0.40, rng),
        make(suite="colocalisation", cell="t", table=claims.COLOCALISATION, row="T (translated, 84x84)",
             column=None, metrics={**per_digit, "test/localised": 95.0}),
    ):  # fmt: skip
        write_record(tmp_path / "runs", record)
    assert claims.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "claims.md").read_text()
    assert "| A.3 | 3D ST-CNN beats the CNN on the depth-flattened volume | 20.00 / 40.00 |" in text
    assert "| T | every digit ≥ 90% localised | 100% of every digit | 95 95 95" in text
    assert text.count("| holds |") == 2  # the 3D claim and T; every Table 1 claim but FCN's lacks a partner


def test_evidence_of_an_appendix_cell_is_read_and_listed_under_its_claim(tmp_path):
    from stn_repro.results.records import write_record

    rng = np.random.default_rng(5)
    records = [
        _appendix_record("addition", claims.ADDITION, "CNN", 0.80, rng),
        _appendix_record("addition", claims.ADDITION, "FCN", 0.70, rng),  # better than the CNN: contradicted
    ]
    longer = replace(_appendix_record("addition", claims.ADDITION, "CNN", 0.40, rng), canonical=False,
                     overrides=["profile.iterations=4000"])  # fmt: skip
    write_record(tmp_path / "evidence", longer)
    evidence = claims.load_evidence(tmp_path / "evidence")
    assert evidence == [longer]
    text = claims.write_claims(records, tmp_path, evidence).read_text()
    row = next(line for line in text.splitlines() if "| CNN beats the FCN on addition |" in line)
    assert "variants measured: see the last section" in row
    section = text.split("## Variants measured for the claims that do not hold here")[1]
    assert "| CNN on addition | `profile.iterations=4000` | 40.0 [" in section
