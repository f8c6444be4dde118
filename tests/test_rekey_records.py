"""scripts/rekey_records.py: a record of an older configuration layout is found by its old hash and moved to the
current one; the committed records' hashes before the `optim` node moved into `system` are the proof of layout 2."""

import dataclasses
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import rekey_records  # noqa: E402

from stn_repro.identity import compose_config, config_hash, suite_profile_file  # noqa: E402
from stn_repro.results.records import load_records, write_record  # noqa: E402

#: (suite, cell, the seed-0 record's hash in layout 2 (git fe85106)): SGD with momentum, Adam with a localisation
#: rate, RMSprop with gradient clipping and milestones off, the co-localisation system, the 3D system.
LAYOUT_2 = [
    ("table1", "st_cnn_aff_rts", "050a56701016f966"),
    ("addition", "st2_fcn_aff", "63005ff057e886df"),
    ("rnn_spn", "rnn_spn", "5ff63301bc975a80"),
    ("colocalisation", "t", "94c20aacbff2848c"),
    ("mnist3d", "st", "dfa753124fd7a5fa"),
]


def _committed(suite: str, cell: str):
    return next(r for r in load_records(ROOT / "results" / "runs", suite) if r.cell == cell and r.seed == 0)


def _cfg(suite: str, record):
    profile = suite_profile_file(suite, record.profile)
    return compose_config([f"experiment={suite}/{record.cell}", "seed=0", f"profile={profile}"])


@pytest.mark.parametrize(("suite", "cell", "old"), LAYOUT_2)
def test_layout_2_is_the_configuration_the_committed_records_were_made_with(suite, cell, old):
    record = _committed(suite, cell)
    cfg = _cfg(suite, record)
    assert rekey_records.layout_hash(rekey_records.layout_2_tree(cfg), record.data["checksum"]) == old
    assert config_hash(cfg, record.data["checksum"]) == record.config_hash != old


def test_an_old_record_is_moved_to_its_current_hash_and_a_stranger_is_left(tmp_path, capsys):
    record = _committed("rnn_spn", "rnn_spn")
    write_record(tmp_path, dataclasses.replace(record, config_hash="5ff63301bc975a80"))
    stranger = _committed("table1", "fcn_r")
    write_record(tmp_path, dataclasses.replace(stranger, config_hash="0123456789abcdef"))
    assert rekey_records.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"seed0-5ff63301bc975a80.json -> seed0-{record.config_hash}.json (rnn_spn/rnn_spn seed 0, layout 2)" in out
    assert "1 re-keyed, 0 current, 1 left as they are" in out and "0123456789abcdef is not this cell's" in out
    moved = json.loads((tmp_path / "rnn_spn" / "rnn_spn" / f"seed0-{record.config_hash}.json").read_text())
    assert (
        moved["metrics"] == record.metrics
        and not (tmp_path / "rnn_spn" / "rnn_spn" / "seed0-5ff63301bc975a80.json").exists()
    )
