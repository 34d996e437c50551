"""qallegro: Allegro, Allegro+MLP and Allegro+QDI interatomic potentials.

Units inside the package: eV, Å, eV/Å and eV/Å³ (ASE's stress sign). Readers convert and say so.
"""

__version__ = "0.1.0"

from qallegro.ops import neighbor_list, batched_neighbor_list  # noqa: E402

__all__ = ["__version__", "neighbor_list", "batched_neighbor_list"]
