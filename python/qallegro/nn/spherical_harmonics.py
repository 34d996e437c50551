"""Spherical harmonics of edge directions (e3nn's real SH, component normalisation)."""

import e3nn
import torch
from e3nn import o3


class EdgeSphericalHarmonics(torch.nn.Module):
    """Y_l^m(r_ij / |r_ij|) for l = 0..l_max: edge_vectors [E, 3] Å -> [E, (l_max+1)^2].

    e3nn's convention (component normalisation: sum_m Y_lm^2 = 2l+1; l=1 components ordered y, z, x),
    the same as nequip-allegro's tensor basis, so converted weights give identical features.
    """

    l_max: int

    def __init__(self, l_max: int):
        super().__init__()
        if not 0 <= l_max <= 11:
            raise ValueError(f"l_max must be in 0..11, got {l_max}")
        self.l_max = l_max
        # e3nn builds its SH function as the process-wide e3nn defaults say; another library in the
        # process (nequip sets jit_mode "script") would otherwise give this module a ScriptFunction
        # attribute, which copy.deepcopy and pickle refuse (exports copy the model)
        saved = e3nn.get_optimization_defaults()
        e3nn.set_optimization_defaults(jit_mode="eager")
        try:
            self.sh = o3.SphericalHarmonics(o3.Irreps.spherical_harmonics(l_max, p=-1), True, "component")
        finally:
            e3nn.set_optimization_defaults(**saved)

    def forward(self, edge_vectors: torch.Tensor) -> torch.Tensor:
        return self.sh(edge_vectors)
