"""Convert a nequip-allegro 0.8.3 ``AllegroModel`` into a qallegro model with the same function.

Hyperparameters are read off the nequip modules themselves (so trained models convert without their
config), the qallegro model is built with them and every weight is copied. Supported: the
``AllegroModel`` builder with ``TwoBodyBesselScalarEmbed``, global or per-species
``avg_num_neighbors``, per-species scales/shifts; not supported (ValueError): per-edge-type cutoffs,
pair potentials, spline embeddings, ``weight_individual_irreps=False``.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

from qallegro.model.allegro import AllegroModel
from qallegro.model.builder import build
from qallegro.nn.mlp import ScalarMLP
from qallegro.nn.tensor_product import sh_irreps

_ACT_NAMES = {torch.nn.SiLU: "silu", torch.nn.Mish: "mish", torch.nn.GELU: "gelu", torch.nn.Tanh: "tanh"}


def _mlp_weights(nequip_mlp) -> List[torch.Tensor]:
    """Weights [in, out] of a nequip ScalarMLPFunction, in order (plain or DeepLinearMLP)."""
    inner = nequip_mlp.mlp
    if hasattr(inner, "weights"):  # DeepLinearMLP
        return [w.detach() for w in inner.weights]
    return [m.weight.detach() for m in inner if hasattr(m, "weight")]


def _mlp_shape(nequip_mlp):
    """(hidden widths, nonlinearity name) of a nequip ScalarMLPFunction."""
    weights = _mlp_weights(nequip_mlp)
    hidden = [int(w.shape[1]) for w in weights[:-1]]
    act = None
    if not hasattr(nequip_mlp.mlp, "weights"):
        for m in nequip_mlp.mlp:
            for cls, name in _ACT_NAMES.items():
                if isinstance(m, cls):
                    act = name
            if not hasattr(m, "weight") and act is None and not isinstance(m, torch.nn.Identity):
                raise ValueError(f"nequip MLP nonlinearity {type(m).__name__} has no qallegro equivalent")
    if getattr(nequip_mlp, "bias", False):
        raise ValueError("nequip MLPs with bias are not supported (Allegro builds them bias-free)")
    return hidden, act


def _copy_mlp(ours: ScalarMLP, nequip_mlp, where: str) -> None:
    weights = _mlp_weights(nequip_mlp)
    linears = ours.linears
    if len(weights) != len(linears):
        raise ValueError(f"{where}: {len(weights)} nequip layers vs {len(linears)} qallegro layers")
    alphas = None
    if not hasattr(nequip_mlp.mlp, "weights"):
        alphas = [float(m.alpha) for m in nequip_mlp.mlp if hasattr(m, "weight")]
    for k, (lin, w) in enumerate(zip(linears, weights)):
        if tuple(lin.weight.shape) != tuple(w.shape):
            raise ValueError(f"{where}[{k}]: shape {tuple(w.shape)} vs qallegro {tuple(lin.weight.shape)}")
        if alphas is not None and abs(float(lin.alpha) - alphas[k]) > 1e-12 * abs(alphas[k]):
            raise ValueError(f"{where}[{k}]: weight scale alpha {alphas[k]} vs qallegro {float(lin.alpha)}")
        with torch.no_grad():
            lin.weight.copy_(w)
    if alphas is None:  # DeepLinearMLP folds its constants into one product: check it
        ours_alpha = 1.0
        for lin in linears:
            ours_alpha *= float(lin.alpha)
        theirs = float(nequip_mlp.mlp.alpha)
        if abs(ours_alpha - theirs) > 1e-12 * abs(theirs):
            raise ValueError(f"{where}: deep-linear alpha {theirs} vs qallegro {ours_alpha}")


def _find_sequential(nequip_model):
    """The SequentialGraphNetwork of named modules inside GraphModel -> ForceStressOutput."""
    m = nequip_model
    for _ in range(4):
        if hasattr(m, "allegro") and hasattr(m, "edge_readout"):
            return m
        m = getattr(m, "model", None) or getattr(m, "func", None)
        if m is None:
            break
    raise ValueError("not a nequip-allegro AllegroModel (no 'allegro' / 'edge_readout' modules found)")


def from_nequip_allegro(
    nequip_model, type_names: Optional[Sequence[str]] = None, model_dtype: Optional[str] = None
) -> AllegroModel:
    """qallegro ``AllegroModel`` (kind "allegro") computing what ``nequip_model`` computes.

    nequip_model: a nequip ``GraphModel`` built by ``allegro.model.AllegroModel`` (or its inner
    modules); a trained one loads with nequip's own
    ``nequip.model.saved_models.load_utils.load_saved_model("run.ckpt")`` (or a ``.nequip.zip``).
    type_names: default the GraphModel's; model_dtype: default the nequip model's.
    """
    seq = _find_sequential(nequip_model)
    if type_names is None:
        type_names = list(getattr(nequip_model, "type_names", []) or [])
    if not type_names:
        raise ValueError("type_names not recorded in the nequip model: pass type_names=")
    for name in ("pair_potential",):
        if hasattr(seq, name):
            raise ValueError(f"nequip model has a {name}; qallegro's Allegro has no equivalent")
    if getattr(seq.edge_norm, "_per_edge_type", False):
        raise ValueError("per_edge_type_cutoff is not supported by qallegro")
    param = next(seq.parameters())
    dtype_name = model_dtype or {torch.float32: "float32", torch.float64: "float64"}[param.dtype]

    r_max = 1.0 / float(seq.edge_norm._rmax_recip)
    rce = seq.radial_chemical_embed
    if not hasattr(rce, "bessel_encode"):
        raise ValueError("only TwoBodyBesselScalarEmbed radial-chemical embeddings are supported")
    bessel = rce.bessel_encode
    type_embed = rce.type_embed
    allegro = seq.allegro
    tensor_embed = seq.tensor_embed
    if not tensor_embed._edge_weighter.weight_individual_irreps or not allegro._env_weighter.weight_individual_irreps:
        raise ValueError("weight_individual_irreps=False is not supported")
    l_max = int(tensor_embed.sh.irreps_out.lmax)
    tracked = [(ir.l, ir.p) for _, ir in allegro.tensor_track_allowed_irreps]
    if sorted(tracked) == sorted((l, p) for l in range(l_max + 1) for p in (1, -1)):
        parity = True
    elif sorted(tracked) == sorted(sh_irreps(l_max)):
        parity = False
    else:
        raise ValueError(f"tensor_track_allowed_irreps {tracked} is neither AllegroModel parity=True nor False")

    s_hidden, s_act = _mlp_shape(seq.scalar_embed_mlp.mlp_module)
    a_hidden, a_act = _mlp_shape(allegro.latents[0])
    r_hidden, r_act = _mlp_shape(seq.edge_readout.mlp_module)
    if len(set(s_hidden)) > 1 or len(set(a_hidden)) > 1 or len(set(r_hidden)) > 1:
        raise ValueError("nequip MLPs with unequal hidden widths are not supported")
    hp: Dict = dict(
        l_max=l_max,
        parity=parity,
        num_layers=int(allegro.num_layers),
        num_scalar_features=int(allegro.num_scalar_features),
        num_tensor_features=int(allegro.num_tensor_features),
        num_bessels=int(bessel.num_bessels),
        bessel_trainable=bool(bessel.trainable),
        polynomial_cutoff_p=float(bessel.cutoff.p),
        radial_chemical_embed_dim=int(type_embed.center_embed.embedding_dim * 2),
        scalar_embed_mlp_hidden_layers_depth=len(s_hidden),
        scalar_embed_mlp_hidden_layers_width=s_hidden[0] if s_hidden else 64,
        scalar_embed_mlp_nonlinearity=s_act,
        allegro_mlp_hidden_layers_depth=len(a_hidden),
        allegro_mlp_hidden_layers_width=a_hidden[0] if a_hidden else 64,
        allegro_mlp_nonlinearity=a_act,
        tp_path_channel_coupling=bool(allegro.tps[0].path_channel_coupling),
        readout_mlp_hidden_layers_depth=len(r_hidden),
        readout_mlp_hidden_layers_width=r_hidden[0] if r_hidden else 32,
        readout_mlp_nonlinearity=r_act,
        per_type_energy_scales_trainable=bool(seq.per_type_energy_scale_shift.scales_trainable),
        per_type_energy_shifts_trainable=bool(seq.per_type_energy_scale_shift.shifts_trainable),
        model_dtype=dtype_name,
    )
    # avg_num_neighbors, scales and shifts: copied as tensors below (exact), recorded as values
    norm_const = allegro.avg_num_neighbors_norm.norm_const.detach().reshape(-1)
    avg = [float(1.0 / c**2) for c in norm_const]
    hp["avg_num_neighbors"] = avg[0] if len(avg) == 1 else dict(zip(type_names, avg))
    pts = seq.per_type_energy_scale_shift
    for key, t in (("per_type_energy_scales", pts.scales), ("per_type_energy_shifts", pts.shifts)):
        if t.numel() > 0:
            vals = [float(v) for v in t.detach().reshape(-1)]
            hp[key] = vals[0] if len(vals) == 1 else dict(zip(type_names, vals))

    model = build("allegro", type_names, r_max, **hp)
    e = model.energy
    with torch.no_grad():
        e.bessel.bessel_weights.copy_(bessel.bessel_weights.detach())
        e.center_embed.weight.copy_(type_embed.center_embed.weight.detach())
        e.neighbor_embed.weight.copy_(type_embed.neighbor_embed.weight.detach())
        n = e.norm_const.shape[0]
        e.norm_const.copy_(norm_const.reshape(-1, 1).expand(n, 1))
        for ours, theirs in ((e.scales, pts.scales), (e.shifts, pts.shifts)):
            if theirs.numel() > 0:
                ours.copy_(theirs.detach().reshape(-1, 1).expand_as(ours))
        for layer, (tp_ours, tp_theirs) in enumerate(zip(e.tps, allegro.tps)):
            if len(tp_ours.paths) != tp_theirs.num_paths:
                raise ValueError(f"layer {layer}: {tp_theirs.num_paths} nequip paths vs {len(tp_ours.paths)} qallegro")
            tp_ours.weights.copy_(tp_theirs.weights.detach().reshape(tp_ours.weights.shape))
    _copy_mlp(e.basis_linear, type_embed.basis_linear, "radial_chemical_embed.type_embed.basis_linear")
    _copy_mlp(e.scalar_embed_mlp, seq.scalar_embed_mlp.mlp_module, "scalar_embed_mlp")
    _copy_mlp(e.tensor_embed_linear, tensor_embed.env_embed_linear, "tensor_embed.env_embed_linear")
    _copy_mlp(e.first_layer_projection, allegro.first_layer_env_embed_projection, "allegro.first_layer_env_embed_projection")
    for k, (ours, theirs) in enumerate(zip(e.latents, allegro.latents)):
        _copy_mlp(ours, theirs, f"allegro.latents.{k}")
    _copy_mlp(e.readout.net, seq.edge_readout.mlp_module, "edge_readout")
    return model
