"""The paper's qualitative claims about Table 1, cluttered MNIST and the appendix experiments, checked against run
records.

``write_claims(records, out)`` writes ``<out>/claims.md``: one row per comparison ("A has lower error than B"), with
both models' test errors (ours and the paper's), the images only A / only B got wrong, the exact McNemar p-value
over the test images (pooled over the seeds both models ran; :func:`stn_repro.results.stats.mcnemar_p`) and a
verdict:

- ``holds``: A's error is lower and p < 0.05;
- ``holds, not significant``: A's error is lower (or equal), p >= 0.05;
- ``not shown``: A's error is higher, p >= 0.05 (no evidence either way at this sample size);
- ``contradicted``: A's error is higher and p < 0.05;
- ``means only``: the records hold no per-sample outcomes (made before they were recorded), so no test was run;
- ``not run``: a model has no finished record.

Claims "A reaches B" (claim 4) and "A does not overfit against B" (claim 5b) hold unless A is significantly worse.

Claim 6 (the transformed digits come out in a standard upright pose) is measured on R and RTS from the records'
``pose/*`` metrics (:mod:`stn_repro.results.pose`): it ``holds`` for a model when its transformer at least halves the
spread of the digits' rotation (and, on RTS, of their log scale) over the test set, else ``not shown``; ``not
measured`` for records without the metrics.

The appendix claims (:func:`appendix_comparisons`) are paired comparisons of the same kind: MNIST addition
(2×ST-FCN < CNN < FCN, ST-FCN < FCN), the 3D transformer (3D ST-CNN < CNN on the depth-flattened volume) and the
recurrent STN (RNN-SPN < CNN+SPN < CNN, per-digit error); co-localisation's are thresholds
(:func:`check_localisation`): every digit localised at least as often as the paper's worst digit (T: 90% against the
paper's 100%, TC: 75%), ``contradicted`` when a digit's 95% Wilson interval lies wholly below it.

Command line: ``python -m stn_repro.results.claims --runs results/runs --out results [--profile quick]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from stn_repro.console import say
from stn_repro.results.markdown import markdown_table
from stn_repro.results.pose_figure import plot_poses
from stn_repro.results.records import RecordError, RunRecord, load_records
from stn_repro.results.reference import paper_value
from stn_repro.results.stats import mcnemar_p, unpack_outcomes, wilson_interval
from stn_repro.utils import atomic_path

ALPHA = 0.05
TABLE1, CLUTTERED = "table1_distorted_mnist", "translated_cluttered_mnist"
ADDITION, MNIST3D, RECURRENT = "table4_mnist_addition", "mnist_3d", "recurrent_stn_mnist_sequences"
COLOCALISATION = "co_localisation"
#: The suites whose records the claims read (results/runs/<suite>/).
CLAIM_SUITES = ("table1", "cluttered", "addition", "colocalisation", "mnist3d", "rnn_spn")
#: An appendix model's claim name: the dataset in place of Table 1's distortion.
APPENDIX_DATASETS = {ADDITION: "addition", MNIST3D: "3D", RECURRENT: "sequences"}
APPENDIX_TABLES = {dataset: table for table, dataset in APPENDIX_DATASETS.items()}
#: Co-localisation thresholds (% of a digit's images localised): (cell row, dataset, threshold, the paper's words).
LOCALISATION_CLAIMS = (
    ("T (translated, 84x84)", "T", 90.0, "100% of every digit"),
    ("TC (translated + 16 clutter patches)", "TC", 75.0, "75-93% depending on the digit"),
)
DISTORTIONS = ("R", "RTS", "P", "E")
FAMILIES = ("Aff", "Proj", "TPS")
#: What a model is called in the claims: (table row, distortion); cluttered MNIST's column is "TC", an appendix
#: model's is its :data:`APPENDIX_DATASETS` name.
Model = tuple[str, str]


POSE_FIGURE = "claim6_pose.png"
POSE_HALVING = 0.5  # claim 6: the spread after the transformer is at most this fraction of the spread before


@dataclass(frozen=True)
class Pose:
    """Claim 6 for one model: the rotation (degrees) and log-scale spreads before / after its transformer."""

    model: Model
    angle: tuple[float, float] | None
    log_scale: tuple[float, float] | None
    shift: tuple[float, float] | None  # where the digit's centre lies (reported, not part of the verdict)
    verdict: str


@dataclass(frozen=True)
class Localisation:
    """A co-localisation claim: every digit of a set localised at least ``threshold`` % of the time."""

    dataset: str
    threshold: float
    paper: str
    per_digit: tuple[float, ...] | None  # % localised of digits 0..9 (seed 0's record, or the lowest seed's)
    worst: tuple[int, float, float, float] | None  # (digit, %, Wilson low, Wilson high)
    verdict: str


@dataclass(frozen=True)
class Comparison:
    """One checked comparison: claim number, what is claimed, models ``a`` and ``b``, and the evidence."""

    claim: str
    text: str
    a: Model
    b: Model
    kind: str  # "lower": A's error is lower than B's; "not worse": A is not significantly worse than B
    ours: tuple[float | None, float | None]
    paper: tuple[float | None, float | None]
    discordant: tuple[int, int] | None  # (only A wrong, only B wrong), pooled over the common seeds
    p: float | None
    verdict: str
    difference: tuple[float, float] | None = None  # A − B in error points on the paired images, 95% half-width
    has_evidence: bool = False  # variant records of A or B are listed in claims.md (write_claims's evidence)

    @property
    def why(self) -> str:
        """For a claim without significance either way: whether the paper's own gap could be seen on these test
        images (a significant result needs no such note)."""
        if self.verdict == "contradicted":
            return "variants measured: see the last section" if self.has_evidence else ""
        if self.verdict not in ("holds, not significant", "not shown") or self.difference is None or None in self.paper:
            return ""
        gap, half_width = self.paper[1] - self.paper[0], self.difference[1]
        if self.kind == "lower" and gap < half_width:
            return f"the paper's gap ({gap:.1f}) is inside our ±{half_width:.1f}: not resolvable on these images"
        return ""


def comparisons() -> list[tuple[str, str, Model, Model, str]]:
    """``(claim, text, A, B, kind)`` of every comparison the paper's claims make (numbered as in issue 15)."""
    out = []
    for d in (*DISTORTIONS, "TC"):
        for base in ("FCN", "CNN"):
            for st in _st_rows(base, d):
                out.append(("1", f"{st} beats {base} on {d}", (st, d), (base, d), "lower"))
        out.append(("2", f"CNN beats FCN on {d}", ("CNN", d), ("FCN", d), "lower"))
        for family in FAMILIES if d != "TC" else ("",):
            cnn, fcn = (f"ST-CNN {family}".strip(), f"ST-FCN {family}".strip())
            out.append(("3", f"{cnn} beats {fcn} on {d}", (cnn, d), (fcn, d), "lower"))
    for family in FAMILIES:
        out.append(
            ("4", f"ST-FCN {family} reaches the CNN on RTS", (f"ST-FCN {family}", "RTS"), ("CNN", "RTS"), "not worse")
        )
    for base in ("ST-FCN", "ST-CNN"):
        for other in ("Aff", "Proj"):
            out.append(
                ("5a", f"{base} TPS beats {base} {other} on E", (f"{base} TPS", "E"), (f"{base} {other}", "E"), "lower")
            )
        out.append(
            (
                "5b",
                f"{base} TPS does not overfit R (vs {base} Aff)",
                (f"{base} TPS", "R"),
                (f"{base} Aff", "R"),
                "not worse",
            )
        )
    return out


def appendix_comparisons() -> list[tuple[str, str, Model, Model, str]]:
    """``(claim, text, A, B, kind)`` of the appendix experiments' paired claims (A.1 addition, A.3 3D, recurrent)."""
    add, volume, sequences = (APPENDIX_DATASETS[t] for t in (ADDITION, MNIST3D, RECURRENT))
    out = [("A.1", f"2xST-FCN {f} beats the CNN on addition", (f"2xST-FCN {f}", add), ("CNN", add), "lower")
           for f in FAMILIES]  # fmt: skip
    out.append(("A.1", "CNN beats the FCN on addition", ("CNN", add), ("FCN", add), "lower"))
    out += [("A.1", f"ST-FCN {f} beats the FCN on addition", (f"ST-FCN {f}", add), ("FCN", add), "lower")
            for f in FAMILIES]  # fmt: skip
    out.append(
        ("A.3", "3D ST-CNN beats the CNN on the depth-flattened volume", ("3D ST-CNN", volume),
         ("CNN (depth-flattened input)", volume), "lower")
    )  # fmt: skip
    for a, b in (("RNN-SPN", "CNN + SPN"), ("CNN + SPN", "CNN")):
        out.append(("RNN", f"{a} beats {b} (per digit)", (a, sequences), (b, sequences), "lower"))
    return out


def model_of(record: RunRecord) -> Model | None:
    """The claims' name of a record's model (see :data:`Model`); ``None`` for a table no claim reads."""
    if record.table in (TABLE1, CLUTTERED):
        return (record.row, record.column or "TC")
    if record.table in APPENDIX_DATASETS:
        return (record.row, APPENDIX_DATASETS[record.table])
    return None


def check_claims(records: Sequence[RunRecord]) -> list[Comparison]:
    """Every comparison of :func:`comparisons` and :func:`appendix_comparisons` evaluated on ``records``."""
    runs: dict[Model, dict[int, RunRecord]] = {}
    for record in records:
        model = model_of(record)
        if record.status == "finished" and model is not None:
            runs.setdefault(model, {})[record.seed] = record
    claims = (*comparisons(), *appendix_comparisons())
    return [_compare(claim, text, a, b, kind, runs) for claim, text, a, b, kind in claims]


def check_localisation(records: Sequence[RunRecord]) -> list[Localisation]:
    """The co-localisation claims (:data:`LOCALISATION_CLAIMS`) on seed 0's record of each set (or the lowest
    seed's); the Wilson interval of the worst digit is over its images (``data.per_class``, 100)."""
    first: dict[str, RunRecord] = {}
    for record in sorted(records, key=lambda r: r.seed):
        if record.status == "finished" and record.table == COLOCALISATION:
            first.setdefault(record.row, record)
    out = []
    for row, dataset, threshold, paper in LOCALISATION_CLAIMS:
        record = first.get(row)
        if record is None:
            out.append(Localisation(dataset, threshold, paper, None, None, "not run"))
            continue
        per_digit = tuple(record.metrics[f"test/localised_d{k}"] for k in range(10))
        digit = min(range(10), key=lambda k: per_digit[k])
        n = record.data["n_test"] // 10
        low, high = wilson_interval(round(per_digit[digit] * n / 100), n)
        if per_digit[digit] >= threshold:
            verdict = "holds"
        else:
            verdict = "contradicted" if high < threshold else "not shown"
        out.append(Localisation(dataset, threshold, paper, per_digit, (digit, per_digit[digit], low, high), verdict))
    return out


def check_poses(records: Sequence[RunRecord]) -> list[Pose]:
    """Claim 6 for every ST model of Table 1 on R and RTS (seed 0's record, or the lowest seed's)."""
    first: dict[Model, RunRecord] = {}
    for record in sorted(records, key=lambda r: r.seed):
        if record.status == "finished" and record.table == TABLE1 and record.row.startswith("ST-"):
            first.setdefault((record.row, record.column), record)
    poses = []
    for st in ("ST-FCN", "ST-CNN"):
        for family in FAMILIES:
            for d in ("R", "RTS"):
                model = (f"{st} {family}", d)
                poses.append(_pose(model, first.get(model)))
    return poses


def _pose(model: Model, record: RunRecord | None) -> Pose:
    if record is None:
        return Pose(model, None, None, None, "not run")
    metrics = record.metrics or {}
    if "pose/angle_sd_out" not in metrics:
        return Pose(model, None, None, None, "not measured")
    angle = (metrics["pose/angle_sd_in"], metrics["pose/angle_sd_out"])
    scale = (metrics["pose/log_scale_sd_in"], metrics["pose/log_scale_sd_out"])
    shift = (metrics["pose/shift_sd_in"], metrics["pose/shift_sd_out"]) if "pose/shift_sd_in" in metrics else None
    halved = angle[1] <= POSE_HALVING * angle[0] and (model[1] != "RTS" or scale[1] <= POSE_HALVING * scale[0])
    return Pose(model, angle, scale, shift, "holds" if halved else "not shown")


def write_claims(records: Sequence[RunRecord], out_dir: str | Path, evidence: Sequence[RunRecord] = ()) -> Path:
    """Write ``<out_dir>/claims.md`` and ``<out_dir>/figures/claim6_pose.png`` (atomically) from ``records``;
    returns the path of ``claims.md``. ``evidence``: variant records of the same cells (``results/evidence/``: longer
    schedules, other settings) listed under the claims that do not hold, so the table says what was measured."""
    evidenced = {model_of(r) for r in evidence if r.status == "finished"}
    results = [replace(r, has_evidence=bool({r.a, r.b} & evidenced)) for r in check_claims(records)]
    poses = check_poses(records)
    plot_poses(records, Path(out_dir) / "figures" / POSE_FIGURE)
    path = Path(out_dir) / "claims.md"
    text = _markdown(results, poses, check_localisation(records), records) + _evidence(results, poses, evidence)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def summary(results: Sequence[Comparison], poses: Sequence[Pose], localisation: Sequence[Localisation]) -> str:
    """The verdict counts of claims 1–5, claim 6 and the appendix claims, in one line."""
    table1 = [r for r in results if not is_appendix(r)]
    appendix = [*(r for r in results if is_appendix(r)), *localisation]
    return (
        f"claims 1–5 (Table 1, cluttered MNIST): {summary_line(table1)}; claim 6: {summary_line(poses)}; "
        f"appendix: {summary_line(appendix)}"
    )


def claims_summary(records: Sequence[RunRecord]) -> str:
    """:func:`summary` of ``records``."""
    return summary(check_claims(records), check_poses(records), check_localisation(records))


def summary_line(results: Sequence[Comparison | Pose | Localisation]) -> str:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.verdict] = counts.get(result.verdict, 0) + 1
    return ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items(), key=lambda item: -item[1]))


def _st_rows(base: str, distortion: str) -> list[str]:
    return [f"ST-{base}"] if distortion == "TC" else [f"ST-{base} {family}" for family in FAMILIES]


def _paper(model: Model) -> float | None:
    row, column = model
    try:
        if column in APPENDIX_TABLES:
            return paper_value(APPENDIX_TABLES[column], row, None)
        return paper_value(CLUTTERED, row, None) if column == "TC" else paper_value(TABLE1, row, column)
    except KeyError:
        return None


def _compare(
    claim: str, text: str, a: Model, b: Model, kind: str, runs: dict[Model, dict[int, RunRecord]]
) -> Comparison:
    paper = (_paper(a), _paper(b))
    if not runs.get(a) or not runs.get(b):
        return Comparison(claim, text, a, b, kind, (None, None), paper, None, None, "not run")
    ours = tuple(statistics.fmean(r.metrics["test/err"] for r in runs[m].values()) for m in (a, b))
    seeds = sorted(set(runs[a]) & set(runs[b]))
    paired = [s for s in seeds if runs[a][s].outcomes is not None and runs[b][s].outcomes is not None]
    if not paired:
        return Comparison(claim, text, a, b, kind, ours, paper, None, None, "means only")
    wrong_a = np.concatenate([unpack_outcomes(runs[a][s].outcomes) for s in paired])
    wrong_b = np.concatenate([unpack_outcomes(runs[b][s].outcomes) for s in paired])
    p, only_a, only_b = mcnemar_p(wrong_a, wrong_b)
    difference = paired_difference(only_a, only_b, len(wrong_a))
    lower = only_a <= only_b  # on the paired images: A wrong on no more images than B
    if kind == "not worse":
        verdict = "holds" if lower or p >= ALPHA else "contradicted"
    elif lower:
        verdict = "holds" if p < ALPHA and only_a < only_b else "holds, not significant"
    else:
        verdict = "contradicted" if p < ALPHA else "not shown"
    return Comparison(claim, text, a, b, kind, ours, paper, (only_a, only_b), p, verdict, difference)


def paired_difference(only_a: int, only_b: int, n: int) -> tuple[float, float]:
    """``(A − B, 95% half-width)`` in error points: the difference of two error rates measured on the same ``n``
    images, from the images only A / only B got wrong (the Wald interval for paired proportions)."""
    d = (only_a - only_b) / n
    variance = max(only_a + only_b - n * d * d, 0.0) / (n * n)
    return 100.0 * d, 100.0 * 1.959964 * math.sqrt(variance)


APPENDIX_CLAIMS = ("A.1", "A.3", "RNN")


def is_appendix(result: Comparison) -> bool:
    return result.claim in APPENDIX_CLAIMS


def _comparison_rows(results: Sequence[Comparison]) -> list[str]:
    header = ["claim", "comparison (A vs B)", "ours A / B", "paper A / B", "only A / only B", "A − B (95%)"]
    header += ["p", "verdict", "why not"]
    rows = []
    for r in results:
        ours = " / ".join("—" if v is None else f"{v:.2f}" for v in r.ours)
        paper = " / ".join("—" if v is None else f"{v:g}" for v in r.paper)
        disc = "—" if r.discordant is None else f"{r.discordant[0]} / {r.discordant[1]}"
        p = "—" if r.p is None else (f"{r.p:.2g}" if r.p >= 1e-4 else "< 1e-4")
        diff = "—" if r.difference is None else f"{r.difference[0]:+.1f} ± {r.difference[1]:.1f}"
        rows.append([r.claim, r.text, ours, paper, disc, diff, p, r.verdict, r.why])
    return markdown_table(header, rows, compact=True)


def _markdown(
    results: Sequence[Comparison],
    poses: Sequence[Pose],
    localisation: Sequence[Localisation],
    records: Sequence[RunRecord],
) -> str:
    profiles = sorted({r.profile for r in records})
    sources = sorted({r.data["source"] for r in records})
    newest = max((r.created for r in records), default="—")
    table1 = [r for r in results if not is_appendix(r)]
    appendix = [r for r in results if is_appendix(r)]
    lines = [
        "# The paper's claims, checked",
        "",
        f"From {len(records)} run records (profile {', '.join(profiles) or '—'}; data {', '.join(sources) or '—'}; "
        f"newest {newest}). Test error %, ours (mean over seeds) / the paper's; `only A / only B`: test images "
        "only A / only B got wrong (the seeds both ran, pooled); A − B: the difference in error points on those "
        "images with its 95% interval; p: exact McNemar test over those images. Verdicts "
        f"(α = {ALPHA}): see `stn_repro/results/claims.py`.",
        "",
        f"**Summary:** {summary(results, poses, localisation)}.",
        "",
    ]
    if any(s == "bundled" for s in sources):
        lines.append("- Data: the bundled 5,000-digit sample, NOT full MNIST (its test error is optimistic).")
    lines += ["", *_comparison_rows(table1)]
    lines += [
        "",
        "## Claim 6: the transformed digits come out in a standard upright pose",
        "",
        "Spread over the test set of the digit's rotation (circular standard deviation, degrees) and log scale "
        "(standard deviation), before the transformer (the distortion) → after it (the distortion composed with the "
        "transformer's affine fit; `stn_repro/results/pose.py`). Holds when the transformer at least halves the "
        "rotation spread (and on RTS the scale spread). The digit centre's spread (normalised coordinates of the "
        "canvas → of the transformer's output) is shown too. Histograms: "
        f"[`figures/{POSE_FIGURE}`](figures/{POSE_FIGURE}).",
        "",
    ]
    pose_rows = []
    for pose in poses:
        angle = "—" if pose.angle is None else f"{pose.angle[0]:.1f}° → {pose.angle[1]:.1f}°"
        scale = "—" if pose.log_scale is None else f"{pose.log_scale[0]:.3f} → {pose.log_scale[1]:.3f}"
        shift = "—" if pose.shift is None else f"{pose.shift[0]:.3f} → {pose.shift[1]:.3f}"
        pose_rows.append([f"{pose.model[0]} on {pose.model[1]}", angle, scale, shift, pose.verdict])
    header = ["model", "rotation spread, before → after", "log-scale spread, before → after"]
    header += ["centre spread, before → after", "verdict"]
    lines += markdown_table(header, pose_rows, compact=True)
    lines += [
        "",
        "## Appendix experiments",
        "",
        "MNIST addition (A.1, Table 4), the 3D transformer (A.3; the paper gives no number) and the recurrent STN "
        "(Sønderby et al., per-digit error), as above; the records of `results/runs/{addition,mnist3d,rnn_spn}`. "
        "The recurrent rows pair the 3 digits of every test sequence (3,000 outcomes); digits of one canvas are not "
        "independent, so their p-values are somewhat optimistic. "
        "`not run`: no canonical record of the current code and protocol is committed.",
        "",
        *_comparison_rows(appendix),
        "",
        "Co-localisation (A.2): % of each digit's 100 images whose crop has IoU > 0.5 with the digit's frame; the "
        "claim holds when the worst digit reaches the threshold and is contradicted when its 95% Wilson interval "
        "lies wholly below it. What the set-up changes against the paper's and why, and why a set falls short "
        "(measured): the deviations of `results/table_colocalisation.md`, the README's co-localisation row and "
        "`results/colocalisation_landscape.md`.",
        "",
    ]
    localisation_rows = []
    for claim in localisation:
        digits = "—" if claim.per_digit is None else " ".join(f"{v:.0f}" for v in claim.per_digit)
        worst, why = "—", ""
        if claim.worst is not None:
            digit, value, low, high = claim.worst
            worst = f"{digit}: {value:.0f} [{low:.0f}, {high:.0f}]"
        if claim.per_digit is not None and claim.verdict != "holds":
            below = [k for k, v in enumerate(claim.per_digit) if v < claim.threshold]
            why = (
                f"{'digits' if len(below) > 1 else 'digit'} {', '.join(map(str, below))} below {claim.threshold:g}%; "
                "why, measured: the README's co-localisation row"
            )
        claimed = f"every digit ≥ {claim.threshold:g}% localised"
        localisation_rows.append([claim.dataset, claimed, claim.paper, digits, worst, claim.verdict, why])
    header = ["set", "claim", "paper", "ours, per digit 0–9", "worst digit [95%]", "verdict", "why not"]
    lines += markdown_table(header, localisation_rows, compact=True)
    return "\n".join(lines) + "\n"


def load_claimed(runs_root: str | Path) -> list[RunRecord]:
    """Every record of the :data:`CLAIM_SUITES` under ``runs_root`` (``results/runs``)."""
    return [r for suite in CLAIM_SUITES for r in load_records(runs_root, suite)]


def load_evidence(root: str | Path) -> list[RunRecord]:
    """The variant records of the :data:`CLAIM_SUITES`' cells kept under ``root`` (``results/evidence``)."""
    return [r for suite in CLAIM_SUITES for r in load_records(root, suite)]


def _evidence(results: Sequence[Comparison], poses: Sequence[Pose], evidence: Sequence[RunRecord]) -> str:
    """A section per model of a claim that does not hold (or a claim-6 model not shown) that has variant records:
    what each variant changed and what it measured."""
    open_models = {m for r in results if r.verdict in ("contradicted", "not shown") for m in (r.a, r.b)}
    open_models |= {p.model for p in poses if p.verdict == "not shown"}
    shown = [r for r in evidence if r.status == "finished" and model_of(r) in open_models]
    if not shown:
        return ""
    lines = [
        "",
        "## Variants measured for the claims that do not hold here",
        "",
        "Variant records of the same cells (`results/evidence/`, made by `python -m stn_repro.train experiment=<cell> "
        "<overrides>`): what each changed against the canonical run above, its test error with the 95% Wilson "
        "interval, the rotation spread before → after its transformer (claim 6, R / RTS), and its training time.",
        "",
    ]
    rows = []
    for r in sorted(shown, key=lambda r: (model_of(r)[1], r.row, r.iterations, r.config_hash)):
        err = r.metrics["test/err"]
        low, high = wilson_interval(round(err * r.data["n_test"] / 100), r.data["n_test"])
        m = r.metrics
        angle = f"{m['pose/angle_sd_in']:.1f}° → {m['pose/angle_sd_out']:.1f}°" if "pose/angle_sd_out" in m else "—"
        overrides = ", ".join(f"`{o}`" for o in [*([f"seed={r.seed}"] if r.seed else []), *r.overrides]) or "—"
        error = f"{err:.1f} [{low:.1f}, {high:.1f}]"
        rows.append([f"{r.row} on {model_of(r)[1]}", overrides, error, angle, f"{r.wall_time_s:.0f} s", r.git_revision])
    header = ["model", "overrides", "test err % [95%]", "rotation spread", "train time", "git"]
    lines += markdown_table(header, rows, compact=True)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stn_repro.results.claims", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("results/runs"), help="canonical run records (results/runs)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder (results)")
    parser.add_argument("--profile", default="quick", help="the profile whose records are checked (quick)")
    parser.add_argument("--evidence", type=Path, default=Path("results/evidence"), help="variant records to list")
    args = parser.parse_args(argv)
    try:
        records = load_claimed(args.runs)
    except RecordError as error:
        say(f"error: {error}", error=True)
        return 2
    records = [r for r in records if r.profile == args.profile]
    if not records:
        say(f"error: no {args.profile!r} records of {', '.join(CLAIM_SUITES)} in {args.runs}", error=True)
        return 2
    try:
        evidence = load_evidence(args.evidence)
    except RecordError as error:
        say(f"error: {error}", error=True)
        return 2
    path = write_claims(records, args.out, evidence)
    say(f"{claims_summary(records)} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
