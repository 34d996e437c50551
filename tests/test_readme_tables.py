"""README's result tables are generated from the committed artefacts in bench/results/ by
scripts/readme_tables.py: README must be what the script gives, and the script must compare each
row with its fastest reference."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("readme_tables", REPO / "scripts" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_are_generated_from_the_results(tables):
    readme = (REPO / "README.md").read_text()
    for name in tables.TABLES:
        assert f"<!-- table:{name} -->" in readme, f"README.md has no generated {name} table"
    assert tables.render(readme) == readme, "README.md's tables differ: run python scripts/readme_tables.py"


def test_ratios_are_against_the_fastest_reference_of_each_mode(tables, tmp_path, monkeypatch):
    groups = {}
    for shape, _ in tables.TP_SHAPES:
        for dtype in ("f32", "f64"):
            # e3nn is the fastest reference forward, einsum forward+backward: each ratio must use its own
            groups[f"allegro_tp {shape} {dtype} fwd"] = {"qallegro": 1.0, "einsum": 10.0, "e3nn": 8.0,
                                                         "nequip_contracter": 40.0}
            groups[f"allegro_tp {shape} {dtype} fwd+bwd"] = {"qallegro": 2.0, "einsum": 16.0, "e3nn": 25.0,
                                                             "nequip_contracter": 90.0}
    data = {"machine": "test", "load_average_1min": {"start": 1.0, "end": 1.0},
            "groups": {g: {impl: {"median_s": t} for impl, t in impls.items()} for g, impls in groups.items()}}
    (tmp_path / "bench_allegro_tp.json").write_text(json.dumps(data))
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    row = tables.table_allegro_tp().splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3:5] == ["einsum 16.00 s", "0.125"]  # fwd+bwd: 2 / 16
    assert cells[6:8] == ["e3nn 8.00 s", "0.125"]  # fwd: 1 / 8, not 1 / 10 (einsum, the fwd+bwd winner)


def test_an_unknown_or_unclosed_marker_is_an_error(tables):
    with pytest.raises(ValueError, match="unknown table marker 'nope'"):
        tables.render("<!-- table:nope -->\nx\n<!-- /table:nope -->\n")
    with pytest.raises(ValueError, match="1 table markers opened, 0 closed"):
        tables.render("<!-- table:demo -->\nx\n")


def test_record_run_keeps_the_command_only_when_it_succeeded(tmp_path):
    import subprocess
    import sys

    script = str(REPO / "scripts" / "record_run.py")
    ok = subprocess.run([sys.executable, script, str(tmp_path / "ok"), "--", sys.executable, "-c", "print(1)"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    record = json.loads((tmp_path / "ok" / "command.json").read_text())
    assert record["command"].endswith("-c 'print(1)'") and record["wall_s"] >= 0
    assert set(record["load_average_1min"]) == {"start", "end"} and len(record["commit"]) == 40
    failing = [sys.executable, "-c", "raise SystemExit(3)"]
    failed = subprocess.run([sys.executable, script, str(tmp_path / "bad"), "--", *failing],
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 3 and not (tmp_path / "bad" / "command.json").exists()
