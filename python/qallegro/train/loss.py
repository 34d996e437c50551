"""Loss: weighted energy-per-atom MSE + force MSE (+ stress MSE).

The means are taken over the *global* batch: each term is a sum over the local structures/atoms
divided by the number of structures/atoms in the whole step (all ranks together). Under DDP, which
averages gradients over ranks, the caller multiplies by the world size, so a step on W ranks gives
the same gradient as one process on the whole batch even when ranks hold different numbers of atoms.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch

from qallegro.train.config import LossConfig

Batch = Dict[str, torch.Tensor]


def loss_counts(batch: Batch, cfg: LossConfig) -> torch.Tensor:
    """[3] float64: number of structures, force components and stress components in ``batch``."""
    num_structures = float(batch["num_atoms"].shape[0])
    num_force = float(batch["pos"].shape[0] * 3) if cfg.forces_weight > 0 else 0.0
    num_stress = float(num_structures * 9) if cfg.stress_weight > 0 else 0.0
    return torch.tensor([num_structures, num_force, num_stress], dtype=torch.float64)


def compute_loss(
    pred: Batch, batch: Batch, cfg: LossConfig, global_counts: torch.Tensor
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Loss of one local batch normalised by ``global_counts`` (from :func:`loss_counts`, summed).

    pred: model outputs ("total_energy" [B,1] eV, "forces" [N,3] eV/Å, "stress" [B,3,3] eV/Å³);
    batch: the labels under the same keys. Returns the scalar loss and its terms (floats).
    """
    terms: Dict[str, torch.Tensor] = {}
    n_struct, n_force, n_stress = (float(c) for c in global_counts)
    if cfg.energy_weight > 0:
        num_atoms = batch["num_atoms"].to(pred["total_energy"].dtype)
        diff = (pred["total_energy"].reshape(-1) - batch["total_energy"].reshape(-1)) / num_atoms
        terms["energy"] = diff.square().sum() / n_struct
    if cfg.forces_weight > 0:
        terms["forces"] = (pred["forces"] - batch["forces"]).square().sum() / n_force
    if cfg.stress_weight > 0:
        terms["stress"] = (pred["stress"] - batch["stress"]).square().sum() / n_stress
    weights = {"energy": cfg.energy_weight, "forces": cfg.forces_weight, "stress": cfg.stress_weight}
    total = sum(weights[k] * v for k, v in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}


def loss_from_metrics(metrics: Dict[str, float], cfg: LossConfig) -> float:
    """The loss over a whole data set from its RMSEs (each MSE term is an RMSE squared)."""
    total = 0.0
    for weight, key in ((cfg.energy_weight, "energy_per_atom_rmse"), (cfg.forces_weight, "forces_rmse"),
                        (cfg.stress_weight, "stress_rmse")):
        if weight > 0 and key in metrics:
            total += weight * metrics[key] ** 2
    return total
