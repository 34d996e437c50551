"""A short molecular-dynamics run in ASE with a qallegro model.

    python examples/ase_md.py culi.pt --steps 200            # a file written by `qallegro export`
    python examples/ase_md.py --steps 50                     # no model: an untrained Allegro (demo only)

Runs velocity-Verlet NVE on a 32-atom fcc Cu cell with 8 Li atoms (or on --structure, any file ASE
reads) and prints the total energy, which a float64 model keeps nearly constant.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk
from ase.io import read
from ase.md import velocitydistribution
from ase.md.verlet import VelocityVerlet

from qallegro.calculator import QAllegroCalculator


def culi_cell():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    atoms.symbols[np.random.default_rng(0).choice(len(atoms), 8, replace=False)] = "Li"
    return atoms


def demo_model(folder: Path) -> Path:
    """An untrained small Allegro exported in float64 (stands in when no model is given)."""
    from qallegro.deploy.export import export
    from qallegro.models import build

    model = build("allegro", ["Cu", "Li"], 4.5, model_dtype="float64", seed=0, num_layers=1,
                  num_scalar_features=16, num_tensor_features=4, per_type_energy_scales=0.1)
    path = folder / "demo_allegro.pt"
    export(model, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="exported model (.pt); default: an untrained demo Allegro")
    parser.add_argument("--structure", help="starting structure (any ASE format); default: Cu24Li8 fcc cell")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--timestep-fs", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=300.0, help="initial temperature, K")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or demo_model(Path(tmp))
        atoms = read(args.structure) if args.structure else culi_cell()
        atoms.calc = QAllegroCalculator(model, device=args.device)
        # ASE >= 3.27 names it thermalize_momenta; older releases MaxwellBoltzmannDistribution
        thermalize = getattr(velocitydistribution, "thermalize_momenta", None) or \
            velocitydistribution.MaxwellBoltzmannDistribution
        thermalize(atoms, temperature_K=args.temperature, rng=np.random.default_rng(1))
        velocitydistribution.Stationary(atoms)
        dyn = VelocityVerlet(atoms, timestep=args.timestep_fs * units.fs)
        n = len(atoms)
        e0 = atoms.get_potential_energy() + atoms.get_kinetic_energy()

        def report() -> None:
            epot = atoms.get_potential_energy()
            ekin = atoms.get_kinetic_energy()
            print(f"step {dyn.nsteps:5d}  Epot {epot / n:10.5f}  Ekin {ekin / n:8.5f}  "
                  f"Etot {(epot + ekin) / n:10.5f} eV/atom  T {ekin / (1.5 * units.kB * n):7.1f} K  "
                  f"drift {(epot + ekin - e0) / n:+.2e} eV/atom")

        dyn.attach(report, interval=max(1, args.steps // 10))
        dyn.run(args.steps)


if __name__ == "__main__":
    main()
