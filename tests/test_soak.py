"""The beamtime soak's short version (benchmarks/soak_beamtime.py --short): every event of a beamtime on one UI."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.daemon

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_a_short_beamtime_soak_ends_with_every_output_right_and_nothing_left(tmp_path, capsys):
    import soak_beamtime

    rc = soak_beamtime.main(["--short", "--dir", str(tmp_path / "soak"), "--json", str(tmp_path / "report.json")])
    report = (tmp_path / "report.json").read_text()
    out = capsys.readouterr().out
    assert rc == 0, out[-6000:]
    import json

    r = json.loads(report)
    assert not r["wrong_values"] and all(r["checks"].values()), out[-6000:]
    assert len(r["runs"]) == 3 and r["latency_cube"]["n"] == 3, out[-6000:]
    assert all(": " in f for f in r["failures"]), r["failures"]  # every failure named, with its reason
