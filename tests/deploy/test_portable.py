"""Portable exports (pure-torch tensor product: plain torch.jit.load, no op library) and the error a
process without the op library gives for a normal export."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.deploy.conftest import TYPE_NAMES, build_real, culi_cell
from tests.deploy.test_export import periodic_inputs

from qallegro.deploy.export import export, load

# a child process in which any import of qallegro (or only its compiled part) fails
BLOCK = (
    "import sys\n"
    "class Block:\n"
    "    def __init__(self, prefix): self.prefix = prefix\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == self.prefix or name.startswith(self.prefix + '.'):\n"
    "            raise ImportError(name + ' is blocked in this test')\n"
    "sys.meta_path.insert(0, Block(sys.argv[1]))\n"
)


@pytest.mark.parametrize("kind", ["allegro", "allegro_mlp"])
def test_portable_export_runs_with_plain_torch(kind, tmp_path):
    """Loaded by torch.jit.load in a process that cannot import qallegro, the portable file gives the
    normal export's energy, forces, virial and pair forces (float64; measured ~1e-15 relative)."""
    model = build_real(kind)
    export(model, tmp_path / "fast.pt")
    meta = export(model, tmp_path / "portable.pt", portable=True)
    assert meta["portable"] == "1"
    data = periodic_inputs(culi_cell(), TYPE_NAMES)
    data["want_atomic_virial"] = torch.ones(1)
    torch.save(data, tmp_path / "in.pt")
    expected = load(tmp_path / "fast.pt")[0](dict(data))
    script = BLOCK + (
        "import torch\n"
        "m = torch.jit.load(sys.argv[2])\n"
        "out = m(torch.load(sys.argv[3]))\n"
        "assert not any(k == 'qallegro' or k.startswith('qallegro.') for k in sys.modules)\n"
        "torch.save(out, sys.argv[4])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, "qallegro", str(tmp_path / "portable.pt"),
                           str(tmp_path / "in.pt"), str(tmp_path / "out.pt")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    for key in ("total_energy", "atomic_energy", "forces", "virial", "edge_forces", "atomic_virial"):
        scale = float(expected[key].abs().max())
        assert scale > 1e-6, key
        err = float((got[key] - expected[key]).abs().max())
        assert err <= 1e-11 * scale, f"{kind} {key}: portable vs compiled op {err:.3g} (scale {scale:.3g})"


def test_portable_refuses_qdi(tmp_path):
    with pytest.raises(ValueError, match="--portable: QDI layer .* compiled qallegro::qdi op"):
        export(build_real("allegro_qdi"), tmp_path / "qdi.pt", portable=True)
    assert not (tmp_path / "qdi.pt").exists()


def test_load_without_op_library_names_the_fix(tmp_path):
    """qallegro.deploy.load in a process whose op library cannot load names both fixes."""
    export(build_real("allegro"), tmp_path / "fast.pt")
    script = BLOCK + (
        "from qallegro.deploy import load\n"
        "try:\n"
        "    load(sys.argv[2])\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('loaded without the op library')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, "qallegro._C", str(tmp_path / "fast.pt")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "op library is not loaded" in proc.stdout and "qallegro export --portable" in proc.stdout, proc.stdout


def test_cli_portable(tmp_path):
    from qallegro.cli import main
    from qallegro.model.io import save_model

    save_model(build_real("allegro"), tmp_path / "model.pth")
    assert main(["export", str(tmp_path / "model.pth"), "-o", str(tmp_path / "p.pt"), "--portable"]) == 0
    assert load(tmp_path / "p.pt")[1]["portable"] == "1"
    save_model(build_real("allegro_qdi"), tmp_path / "qdi.pth")
    assert main(["export", str(tmp_path / "qdi.pth"), "-o", str(tmp_path / "q.pt"), "--portable"]) == 2
