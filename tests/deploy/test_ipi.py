"""i-PI runs a metatomic export: NVE through i-PI's socket protocol (a unix socket in the test's own
folder, i-pi-py_driver's metatomic driver) gives the potential energies of the same model run by ASE's
velocity Verlet, step by step.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
from tests.deploy.conftest import build_real, culi_cell

from qallegro.calculator import QAllegroCalculator
from qallegro.deploy.metatomic import export_metatomic

BIN = Path(sys.executable).parent
IPI = BIN / "i-pi"
DRIVER = BIN / "i-pi-py_driver"
STEPS = 20
TIMESTEP_FS = 1.0
# measured: a constant -4.6e-6 eV (1e-7 relative: i-PI's hartree/eV constant is not ASE's) at every
# step; i-PI prints 9 significant digits (5e-6 eV here)
TOLERANCE_EV = 1e-5

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ipi" / "input.xml"


def example_input(prefix: str) -> str:
    """README's i-PI example with this test's step count and a socket in the test's folder."""
    text = EXAMPLE.read_text()
    for old, new in (("<total_steps>100</total_steps>", f"<total_steps>{STEPS}</total_steps>"),
                     ("safe_stride='100000'>", f"safe_stride='100000' sockets_prefix='{prefix}'>"),
                     ("<timestep units='femtosecond'>1.0</timestep>",
                      f"<timestep units='femtosecond'>{TIMESTEP_FS}</timestep>")):
        assert old in text, f"{EXAMPLE} changed: {old!r} not found"
        text = text.replace(old, new)
    return text


def ase_nve(atoms, model):
    """Potential energies of STEPS velocity-Verlet steps from rest (eV), step 0 included."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()  # i-PI's `file mode='ase'` takes ASE's masses too
    atoms.calc = QAllegroCalculator(model)
    energies = [atoms.get_potential_energy()]
    dynamics = VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs)
    dynamics.attach(lambda: energies.append(atoms.get_potential_energy()), interval=1)
    dynamics.run(STEPS)
    return np.array(energies[:1] + energies[2:])  # attach also fires before the first step


def test_ipi_nve_equals_ase(tmp_path):
    """20 NVE steps of 1 fs from rest on the Cu-Li cell (i-PI is in the test extra: no skip)."""
    from ase.io import read

    assert IPI.is_file() and DRIVER.is_file(), "i-PI is not installed: pip install -e '.[test]'"

    model = build_real("allegro")
    export_metatomic(model, tmp_path / "model.pt")
    atoms = culi_cell()
    atoms.wrap()
    atoms.write(str(tmp_path / "init.extxyz"))
    atoms = read(str(tmp_path / "init.extxyz"))  # exactly what i-PI reads
    prefix = str(tmp_path / "s_")
    (tmp_path / "input.xml").write_text(example_input(prefix))

    server = subprocess.Popen([str(IPI), "input.xml"], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(600, server.kill)  # bounds the whole exchange
    watchdog.start()
    log = []
    try:
        # the driver connects once: start it when i-PI says its socket exists
        for line in server.stdout:
            log.append(line)
            if "Created unix socket" in line:
                break
        assert Path(prefix + "qallegro").exists(), "".join(log[-30:])
        driver = subprocess.run(
            [str(DRIVER), "-u", "-S", prefix, "-a", "qallegro", "-m", "metatomic", "-o",
             "template=init.extxyz,model=model.pt,extensions=extensions"],
            cwd=tmp_path, capture_output=True, text=True, timeout=600)
        log.extend(server.stdout)
        server.wait(timeout=60)
    finally:
        watchdog.cancel()
        if server.poll() is None:
            server.kill()
    assert driver.returncode == 0, driver.stderr[-3000:]
    assert server.returncode == 0, "".join(log[-30:])
    rows = np.loadtxt(tmp_path / "sim.out", ndmin=2)
    assert rows[:, 0].tolist() == list(range(STEPS + 1))
    reference = ase_nve(atoms, model)
    assert abs(reference[-1] - reference[0]) > 100 * TOLERANCE_EV  # the atoms moved: not a static check
    err = np.abs(rows[:, 2] - reference).max()
    assert err <= TOLERANCE_EV, f"i-PI vs ASE potential energies differ by up to {err:.3g} eV"
    assert rows[0, 3] == 0.0 and rows[-1, 3] > 0.0  # from rest, then moving
    # i-PI's conserved quantity: potential + kinetic stays put (velocity Verlet, 1 fs)
    assert np.abs(rows[:, 4] - rows[0, 4]).max() < 1e-3
