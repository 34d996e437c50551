"""Errors of a trained model on labelled structures, in meV units, overall and per element."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Union

import torch

from qallegro.train.dataset import concat, to_device, to_graphs
from qallegro.train.data_setup import check_elements_known
from qallegro.train.metrics import ErrorAccumulator

# eV-based accumulator names -> (report name, factor to meV units)
_REPORT = {
    "energy_per_atom": ("energy_{}_meV_per_atom", 1000.0),
    "energy": ("energy_{}_meV", 1000.0),
    "forces": ("forces_{}_meV_per_A", 1000.0),
    "stress": ("stress_{}_meV_per_A3", 1000.0),
}


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    for p in list(model.parameters()) + list(model.buffers()):
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in list(model.parameters()) + list(model.buffers()):
        return p.device
    return torch.device("cpu")


def evaluate(
    model: torch.nn.Module,
    structures: Sequence,
    batch_size: int = 10,
    device: Optional[Union[str, torch.device]] = None,
    source: str = "structures",
) -> Dict[str, Any]:
    """Energy, force (and stress) MAE/RMSE of ``model`` on ``structures``.

    model: obeys the model contract (batch dict in, "total_energy"/"forces"/"stress" out) and has
    ``type_names`` and ``r_max``. Returns a flat dict: ``energy_mae_meV_per_atom``,
    ``energy_rmse_meV_per_atom``, ``energy_mae_meV``, ``energy_rmse_meV``, ``forces_mae_meV_per_A``,
    ``forces_rmse_meV_per_A`` (and ``stress_*_meV_per_A3`` when labelled), ``forces_std_meV_per_A``
    (standard deviation of the reference force components, to put the MAE in scale), counts, and
    ``per_element``: {symbol: {forces_mae_meV_per_A, forces_rmse_meV_per_A, num_atoms}}.
    """
    type_names = list(model.type_names)
    check_elements_known(structures, type_names, source)
    graphs = to_graphs(structures, float(model.r_max), type_names, source)
    if not graphs:
        raise ValueError(f"{source}: no structures to evaluate")
    dev = torch.device(device) if device is not None else _model_device(model)
    dtype = _model_dtype(model)
    acc = ErrorAccumulator(type_names)
    was_training = model.training
    model.eval()
    force_sum = torch.zeros(2, dtype=torch.float64)  # sum, sum of squares of reference components
    force_n = 0
    try:
        for start in range(0, len(graphs), batch_size):
            batch = to_device(concat(graphs[start : start + batch_size]), dev, dtype)
            with torch.enable_grad():  # forces come from autograd
                pred = model(batch)
            acc.update({k: v.detach() for k, v in pred.items()}, batch)
            if "forces" in batch:
                f = batch["forces"].detach().to(torch.float64).cpu()
                force_sum += torch.stack([f.sum(), f.square().sum()])
                force_n += f.numel()
    finally:
        model.train(was_training)
    raw = acc.compute()
    out: Dict[str, Any] = {
        "num_structures": len(graphs),
        "num_atoms": int(sum(g["pos"].shape[0] for g in graphs)),
    }
    for name, (pattern, factor) in _REPORT.items():
        for stat in ("mae", "rmse"):
            if f"{name}_{stat}" in raw:
                out[pattern.format(stat)] = raw[f"{name}_{stat}"] * factor
    if force_n > 0:
        mean = float(force_sum[0]) / force_n
        out["forces_std_meV_per_A"] = 1000.0 * max(float(force_sum[1]) / force_n - mean * mean, 0.0) ** 0.5
    counts = torch.zeros(len(type_names), dtype=torch.long)
    for g in graphs:
        counts += torch.bincount(g["atom_type"].cpu(), minlength=len(type_names))[: len(type_names)]
    per_element = {}
    for t, sym in enumerate(type_names):
        if f"forces_{sym}_mae" in raw:
            per_element[sym] = {
                "forces_mae_meV_per_A": raw[f"forces_{sym}_mae"] * 1000.0,
                "forces_rmse_meV_per_A": raw[f"forces_{sym}_rmse"] * 1000.0,
                "num_atoms": int(counts[t]),
            }
        elif int(counts[t]) > 0:
            per_element[sym] = {"num_atoms": int(counts[t])}
    out["per_element"] = per_element
    return out


def format_report(metrics: Dict[str, Any], title: str = "") -> str:
    """A human-readable table of :func:`evaluate`'s output."""
    lines = [title] if title else []
    lines.append(f"{metrics['num_structures']} structures, {metrics['num_atoms']} atoms")
    rows = [
        ("energy", "meV/atom", "energy_{}_meV_per_atom"),
        ("energy", "meV", "energy_{}_meV"),
        ("forces", "meV/Å", "forces_{}_meV_per_A"),
        ("stress", "meV/Å³", "stress_{}_meV_per_A3"),
    ]
    lines.append(f"{'quantity':<18}{'MAE':>12}{'RMSE':>12}")
    for name, unit, pat in rows:
        if pat.format("mae") in metrics:
            lines.append(f"{name + ' [' + unit + ']':<18}{metrics[pat.format('mae')]:>12.3f}{metrics[pat.format('rmse')]:>12.3f}")
    for sym, m in metrics.get("per_element", {}).items():
        if "forces_mae_meV_per_A" in m:
            label = f"forces {sym} [meV/Å]"
            lines.append(f"{label:<18}{m['forces_mae_meV_per_A']:>12.3f}{m['forces_rmse_meV_per_A']:>12.3f}")
    if "forces_std_meV_per_A" in metrics and "forces_mae_meV_per_A" in metrics:
        std = metrics["forces_std_meV_per_A"]
        if std > 0:
            lines.append(f"force MAE / std of reference forces: {100 * metrics['forces_mae_meV_per_A'] / std:.2f}%")
        else:  # e.g. relaxed structures: every reference force component is the same (zero)
            lines.append("force MAE / std of reference forces: - (the reference forces do not vary)")
    return "\n".join(lines)
