"""Radial basis and cutoff envelope of Allegro's two-body embedding (nequip's definitions).

Distances enter normalised, ``x = r / r_max`` (dimensionless). Musaelian et al. 2023, eq. 3: Bessel
basis times the polynomial envelope of DimeNet (Gasteiger et al. 2020, eq. 8).
"""

import torch


class PolynomialCutoff(torch.nn.Module):
    """u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2) for x < 1, else 0.

    u(0) = 1, and u, u' and u'' vanish at x = 1 (u ~ (1-x)^3 there), so energies and forces go to
    zero continuously at r_max. x: [E, 1] normalised distances -> [E, 1].
    """

    p: float

    def __init__(self, p: float = 6.0):
        super().__init__()
        if p < 2.0:
            raise ValueError(f"polynomial_cutoff_p must be >= 2, got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p
        out = 1.0 - ((p + 1.0) * (p + 2.0) / 2.0) * torch.pow(x, p)
        out = out + (p * (p + 2.0)) * torch.pow(x, p + 1.0)
        out = out - (p * (p + 1.0) / 2.0) * torch.pow(x, p + 2.0)
        return out * (x < 1.0)


class BesselBasis(torch.nn.Module):
    """b_n(x) = n * sinc(n x) = sin(n pi x) / (pi x), n = 1..num_bessels (nequip's normalisation).

    x: [E, 1] normalised distances -> [E, num_bessels]. ``trainable`` makes the frequencies n
    parameters.
    """

    num_bessels: int

    def __init__(self, num_bessels: int = 8, trainable: bool = False):
        super().__init__()
        if num_bessels < 1:
            raise ValueError(f"num_bessels must be >= 1, got {num_bessels}")
        self.num_bessels = num_bessels
        weights = torch.linspace(1.0, num_bessels, num_bessels).unsqueeze(0)
        if trainable:
            self.bessel_weights = torch.nn.Parameter(weights)
        else:
            self.register_buffer("bessel_weights", weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sinc(x * self.bessel_weights) * self.bessel_weights
