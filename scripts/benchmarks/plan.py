"""What the benchmark measures: the Table 1 models and input sizes, and the fast-path option sets."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
SCRIPT = ROOT / "scripts" / "bench.py"  # the command line; its ``--worker`` mode is one of several concurrent runs
MODELS = ("fcn", "cnn", "st_fcn_aff", "st_fcn_proj", "st_fcn_tps", "st_cnn_aff", "st_cnn_proj", "st_cnn_tps")
NAMES = {
    "fcn": "FCN",
    "cnn": "CNN",
    "st_fcn_aff": "ST-FCN Aff",
    "st_fcn_proj": "ST-FCN Proj",
    "st_fcn_tps": "ST-FCN TPS",
    "st_cnn_aff": "ST-CNN Aff",
    "st_cnn_proj": "ST-CNN Proj",
    "st_cnn_tps": "ST-CNN TPS",
}
#: Optimiser steps per timed window of each model (the warm-up is one window): 100 for the fully connected models
#: (0.1-1 s on the 2-core CPU), 4 for the convolutional ones (a step of 0.1-2.5 s). The framework path logs every
#: gcd(window, 100) steps, so ``fast.steps_per_call=auto`` takes 100 optimiser steps per Lightning training step
#: for the fully connected models, as a default run does (a window is one training step, Lightning's own cost
#: included), and 4 for the convolutional ones (where Lightning's ~1 ms per training step is lost in the step).
WINDOW_STEPS = {model: 4 if "cnn" in model else 100 for model in MODELS}
DEFAULT_LOG_EVERY = 100  # conf/train.yaml's fast.log_every
#: Timed windows per round of the paths measured on their own (the tutorial loop, the projection's framework runs,
#: the options, the concurrent runs), and rounds of the loops.
WINDOWS = {model: 3 if "cnn" in model else 4 for model in MODELS}
ROUNDS = {model: 2 for model in MODELS}
#: The framework's and the bare loop's windows alternate within a round (``benchmarks.loops.paired_paths``): as many
#: pairs as fit in about :data:`PAIRED_SECONDS` of the two paths together (a window's time estimated from the bare
#: loop's warm-up), within :data:`PAIRED_WINDOWS`. A pair's ratio varies by ±15-30% on a shared VM, so a 95% interval
#: of the median ratio is about ±2% wide with 60 pairs (a fast model: 30 per round) and ±5-10% with 6.
PAIRED_SECONDS = 40.0
PAIRED_WINDOWS = (6, 30)


def paired_windows(window_s: float) -> int:
    """Paired windows per round for a window of ``window_s`` seconds (each path's)."""
    low, high = PAIRED_WINDOWS
    return max(low, min(high, round(PAIRED_SECONDS / (2 * window_s))))


TUTORIAL_ROUNDS = 1
SIZE_OF = {"r": 28, "p": 28, "e": 28, "rts": 42}  # Table 1's datasets: R, P and E share the 28×28 models
BASELINE = "every option off"
OPTIONS = {  # label → overrides of the framework path; each option alone on top of BASELINE (the first row)
    BASELINE: ["fast.channels_last=false", "fast.compile=false", "trainer.precision=32-true", "fast.steps_per_call=1"],
    "defaults (conf/train.yaml)": [],
    "log and check every step (fast.log_every=1; for comparison)": ["fast.log_every=1"],
    "channels-last (fast.channels_last=true)": ["fast.channels_last=true"],
    "several optimiser steps per Lightning training step (fast.steps_per_call=auto)": ["fast.steps_per_call=auto"],
    "bf16 mixed, sampler fp32 (trainer.precision=bf16-mixed)": ["trainer.precision=bf16-mixed"],
    "torch.compile (fast.compile=true)": ["fast.compile=true"],
    "CUDA graphs (fast.compile=true fast.compile_mode=reduce-overhead)": [
        "fast.compile=true",
        "fast.compile_mode=reduce-overhead",
    ],
}
CUDA_ONLY = ("CUDA graphs (fast.compile=true fast.compile_mode=reduce-overhead)",)
NOT_CANDIDATES = (BASELINE, "defaults (conf/train.yaml)", "log and check every step (fast.log_every=1; for comparison)")
WINS = 1.05  # an option "wins" with at least 5% more images/s than the defaults, measured in the same run
