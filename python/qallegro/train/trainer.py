"""The training loop: ``fit(config, ...) -> TrainResult``.

One epoch = the training structures in a seeded order (new each epoch), in global batches of
``training.batch_size`` shared over the DDP ranks; then validation with the EMA weights, scheduler
and early-stopping bookkeeping, and checkpoints (``last.pt`` every epoch, ``best.pt`` on
improvement), all written by rank 0. Everything that changes during training (weights, optimizer,
scheduler, EMA, RNG states, epoch, history) is in ``last.pt``, so ``resume=True`` continues exactly.

``time_budget`` stops at a step boundary. If that is inside an epoch, the epoch is not counted: it
is neither validated nor logged, and ``last.pt`` records how many of its steps were taken (with
their training-error sums), so a resumed run takes the remaining steps and ends bit-for-bit where
an uninterrupted run ends. A loss or weight that becomes NaN/inf stops training with
:class:`~qallegro.errors.TrainingDiverged` before anything non-finite is saved.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
from torch.nn.parallel import DistributedDataParallel

from qallegro.errors import TrainingDiverged
from qallegro.train import checkpoint as ckpt_io
from qallegro.train import distributed as D
from qallegro.train.config import TrainConfig, builder_accepts, check_hparams_against, config_from_dict
from qallegro.train.data_setup import TrainData, prepare_data
from qallegro.train.dataset import concat, to_device
from qallegro.train.ema import ExponentialMovingAverage
from qallegro.train.logger import MetricsLogger, format_row
from qallegro.train.loss import compute_loss, loss_counts, loss_from_metrics
from qallegro.train.metrics import ErrorAccumulator
from qallegro.utils import remove_stale_temp_files

Callback = Callable[[int, Dict[str, float]], Optional[bool]]


@dataclass
class TrainResult:
    """What :func:`fit` returns. ``model`` holds the best inference weights (EMA if enabled), in eval mode."""

    model: torch.nn.Module
    best_metrics: Dict[str, float]
    best_epoch: int
    history: List[Dict[str, float]]
    checkpoint_path: Optional[Path]
    last_checkpoint_path: Optional[Path]
    stop_reason: str
    elapsed: float
    model_spec: Dict[str, Any] = field(default_factory=dict)
    config: Optional[TrainConfig] = None


def _builder_spec(builder: Callable) -> str:
    return f"{builder.__module__}:{builder.__qualname__}"


def _device(cfg: TrainConfig, info: D.DistInfo) -> torch.device:
    name = cfg.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and info.enabled:
        name = f"cuda:{info.local_rank}"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"config: device={cfg.device!r} but CUDA is not available")
        torch.cuda.set_device(dev)
    return dev


def _check_compatible(saved: Dict[str, Any], spec: Dict[str, Any], cfg: TrainConfig, what: str) -> None:
    """Errors before training when a checkpoint and the config/data disagree on the model's identity."""
    if not math.isclose(float(saved["r_max"]), float(cfg.model.r_max), rel_tol=0, abs_tol=1e-12):
        raise ValueError(
            f"{what} has r_max={saved['r_max']} Å but the config has model.r_max={cfg.model.r_max} Å; "
            f"the neighbour lists (and the model) would not match"
        )
    if list(saved["type_names"]) != list(spec["type_names"]):
        raise ValueError(
            f"{what} was trained for type_names={list(saved['type_names'])} but the config/data give "
            f"{list(spec['type_names'])}"
        )
    if "kind" in saved and saved["kind"] != spec["kind"]:
        raise ValueError(f"{what} is a {saved['kind']!r} model but the config asks for model.kind={spec['kind']!r}")


def _make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    o = cfg.optimizer
    cls = torch.optim.AdamW if o.name.lower() == "adamw" else torch.optim.Adam
    # foreach: one multi-tensor kernel per update instead of a Python loop over parameters
    return cls(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, amsgrad=o.amsgrad, foreach=True)


def _nonfinite_tensors(tensors: Dict[str, torch.Tensor]) -> List[str]:
    """Names of the floating-point tensors that hold a NaN or inf."""
    return [k for k, v in tensors.items() if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _diverged(what: str, epoch: int, step: int, cfg: TrainConfig, saved: str) -> TrainingDiverged:
    return TrainingDiverged(
        f"training diverged at epoch {epoch}, step {step}: {what}. Nothing from this point was saved{saved}. "
        f"Lower optimizer.lr (now {cfg.optimizer.lr:g}) or set training.grad_clip_norm, and train again"
    )


def _evaluate_graphs(model, graphs, batch_size, device, dtype, type_names, info) -> Dict[str, float]:
    """Metrics of ``model`` on ``graphs`` (sharded over ranks, then reduced)."""
    acc = ErrorAccumulator(type_names)
    mine = list(range(len(graphs)))[info.rank :: info.world_size]
    was_training = model.training
    model.eval()
    for start in range(0, len(mine), batch_size):
        batch = to_device(concat([graphs[i] for i in mine[start : start + batch_size]]), device, dtype)
        with torch.enable_grad():  # forces are -dE/dpos even at evaluation
            pred = model(batch)
        acc.update({k: v.detach() for k, v in pred.items()}, batch)
    model.train(was_training)
    acc.reduce()
    return acc.compute()


def fit(
    config: Union[Dict[str, Any], TrainConfig],
    train_structures: Optional[Sequence] = None,
    val_structures: Optional[Sequence] = None,
    *,
    resume: Union[bool, str, Path] = False,
    run_dir: Optional[Union[str, Path]] = None,
    max_epochs: Optional[int] = None,
    time_budget: Optional[float] = None,
    write_files: bool = True,
    progress: Optional[bool] = None,
    callback: Optional[Callback] = None,
    model_builder: Optional[Callable[..., torch.nn.Module]] = None,
) -> TrainResult:
    """Train a model as ``config`` says and return the best one.

    config: a dict (validated like a YAML file) or a :class:`TrainConfig`.
    train_structures / val_structures: ``qallegro.data.Structure`` lists that replace the config's
    ``data.train`` / ``data.val`` files (without ``val_structures`` the training set is split).
    resume: True continues from ``<run_dir>/last.pt``; a path names the checkpoint.
    max_epochs, time_budget (seconds, per call), run_dir, progress: override the config.
    write_files: False keeps everything in memory (no checkpoints, CSV or TensorBoard).
    callback(epoch, row) -> True stops training (e.g. an Optuna pruner); ``row`` holds that epoch's
    metrics (``train_*``, ``val_*`` in eV, eV/atom, eV/Å; ``lr``; ``time`` in s).
    model_builder: replaces ``model.builder`` (must be importable as ``module:qualname`` to rebuild).
    """
    cfg = config_from_dict(config)
    if run_dir is not None:
        cfg.run_dir = str(run_dir)
    if max_epochs is not None:
        cfg.training.max_epochs = int(max_epochs)
    if time_budget is not None:
        cfg.training.time_budget = float(time_budget)
    if progress is not None:
        cfg.training.progress = bool(progress)
    if model_builder is not None:
        cfg.model.builder = _builder_spec(model_builder)
    builder = model_builder or ckpt_io.import_builder(cfg.model.builder)
    # the time budget starts after the (slow, once per process) imports, as Lightning's max_time does
    t0 = time.monotonic()
    check_hparams_against(builder, cfg.model.hparams, kind=cfg.model.kind)
    if "model_dtype" not in cfg.model.hparams and builder_accepts(builder, cfg.model.kind, "model_dtype"):
        # build directly in the training precision (buffers such as Clebsch-Gordan tables included)
        cfg.model.hparams["model_dtype"] = cfg.dtype

    device_kind = "cuda" if (cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())) else "cpu"
    info = D.setup(device_kind)
    try:
        device = _device(cfg, info)
        dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
        run_path = Path(cfg.run_dir)
        resume_ckpt = None
        if resume:
            resume_path = run_path / "last.pt" if resume is True else Path(resume)
            resume_ckpt = ckpt_io.load_checkpoint(resume_path)
        data: TrainData = prepare_data(cfg, train_structures, val_structures, resume_ckpt)

        spec = {"builder": cfg.model.builder, "kind": cfg.model.kind, "type_names": data.type_names,
                "r_max": float(cfg.model.r_max), "hparams": {**cfg.model.hparams, **data.statistics}}
        if resume_ckpt is not None:
            _check_compatible(resume_ckpt["model_spec"], spec, cfg, f"checkpoint {resume_path}")
            saved_hp = resume_ckpt["model_spec"]["hparams"]
            changed = sorted(k for k, v in cfg.model.hparams.items() if k in saved_hp and saved_hp[k] != v)
            if changed:
                raise ValueError(
                    f"checkpoint {resume_path} was trained with different model hyperparameters: "
                    + ", ".join(f"model.{k}: {saved_hp[k]!r} in the checkpoint, {cfg.model.hparams[k]!r} in the config"
                                for k in changed)
                    + "; resume needs the same model (use model.initialize_from to fine-tune a different one)"
                )
            spec = resume_ckpt["model_spec"]  # its statistics, not recomputed ones
            builder = ckpt_io.import_builder(spec["builder"]) if model_builder is None else builder

        torch.manual_seed(cfg.seed)
        model = builder(spec["kind"], list(spec["type_names"]), spec["r_max"], **spec["hparams"])
        model = model.to(device=device, dtype=dtype)
        if cfg.model.initialize_from and resume_ckpt is None:
            init = ckpt_io.load_any_model(cfg.model.initialize_from)
            _check_compatible({"r_max": init.r_max, "type_names": init.type_names}, spec, cfg,
                              f"model.initialize_from={cfg.model.initialize_from}")
            model.load_state_dict(init.state_dict())
        train_model = model
        if info.enabled:
            train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

        optimizer = _make_optimizer(cfg, model.parameters())
        scheduler = None
        if cfg.scheduler.name.lower() == "plateau":
            s = cfg.scheduler
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=s.factor, patience=s.patience, min_lr=s.min_lr, threshold=s.threshold
            )
        ema = ExponentialMovingAverage(model, cfg.training.ema_decay) if cfg.training.ema_decay is not None else None

        state: Dict[str, Any] = {"epoch": 0, "step": 0, "best": math.inf, "best_epoch": 0, "bad_epochs": 0,
                                 "history": [], "best_metrics": {}, "elapsed": 0.0,
                                 # an epoch cut off by time_budget: {epoch, steps_done, train_sums}
                                 "partial": None}
        if resume_ckpt is not None:
            ts = resume_ckpt["training_state"]
            model.load_state_dict(resume_ckpt["model_state"])
            optimizer.load_state_dict(ts["optimizer"])
            if scheduler is not None and ts.get("scheduler") is not None:
                scheduler.load_state_dict(ts["scheduler"])
            if ema is not None and ts.get("ema") is not None:
                ema.load_state_dict(ts["ema"])
            for k in state:
                state[k] = ts.get(k, state[k])  # checkpoints without "partial" ended on an epoch boundary
            ckpt_io.set_rng_state(ts["rng"])

        elapsed_before = float(state["elapsed"])
        writes = write_files and info.is_main
        logger = None
        if writes:
            run_path.mkdir(parents=True, exist_ok=True)
            # a process killed inside atomic_write leaves its temporary file; this run owns the folder
            remove_stale_temp_files(run_path)
            logger = MetricsLogger(run_path, state["history"], cfg.training.tensorboard)
        best_eval_state = copy.deepcopy(resume_ckpt["eval_state"]) if resume_ckpt is not None else None
        best_path = run_path / "best.pt"
        last_path = run_path / "last.pt"
        if best_eval_state is not None and best_path.exists():  # every rank reads it (returned model)
            best_eval_state = ckpt_io.load_checkpoint(best_path)["eval_state"]

        def eval_state() -> Dict[str, torch.Tensor]:
            if ema is None:
                return copy.deepcopy(model.state_dict())
            with ema.average_parameters(model):
                return copy.deepcopy(model.state_dict())

        def save(path: Path, estate) -> None:
            ckpt_io.atomic_save({
                "format": ckpt_io.FORMAT, "version": ckpt_io.VERSION, "model_spec": spec,
                "model_state": model.state_dict(), "eval_state": estate, "config": cfg.to_dict(),
                "training_state": {
                    **state,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "ema": ema.state_dict() if ema is not None else None,
                    "rng": ckpt_io.rng_state(),
                },
            }, path)

        t = cfg.training
        stop_reason = "max_epochs"
        monitor_split = "val" if data.val_graphs else "train"
        monitor_key = f"{monitor_split}_{t.monitor}"
        from tqdm.auto import tqdm

        def saved_note() -> str:
            return f" ({last_path} holds the last finite state)" if writes and last_path.exists() else ""

        def check_weights(where_epoch: int) -> None:
            bad = _nonfinite_tensors(model.state_dict())
            if ema is not None:
                bad += [f"EMA of {k}" for k in _nonfinite_tensors(ema.shadow)]
            if D.any_rank(bool(bad), info):
                raise _diverged(f"non-finite weights ({', '.join(bad[:3]) or 'on another rank'})",
                                where_epoch, state["step"], cfg, saved_note())

        epoch = state["epoch"]
        if epoch >= t.max_epochs:
            stop_reason = "max_epochs (already reached by the resumed checkpoint)"
        while epoch < t.max_epochs:
            epoch += 1
            order = D.epoch_order(len(data.train_graphs), cfg.seed, epoch, t.shuffle)
            steps = D.step_batches(order, t.batch_size, info)
            acc = ErrorAccumulator(data.type_names)
            steps_done = 0
            if state["partial"] is not None:  # resume inside an epoch cut off by time_budget
                partial = state["partial"]
                if (int(partial["epoch"]) != epoch or int(partial.get("num_steps", len(steps))) != len(steps)
                        or not 0 < int(partial["steps_done"]) < len(steps)):
                    raise ValueError(
                        f"checkpoint {resume_path} stopped after step {partial['steps_done']} of "
                        f"{partial.get('num_steps', '?')} in epoch {partial['epoch']}, but this run has "
                        f"{len(steps)} steps per epoch from epoch {epoch}: resuming inside an epoch needs "
                        f"the same training data and training.batch_size"
                    )
                steps_done = int(partial["steps_done"])
                if info.is_main:  # the saved sums are already summed over ranks
                    acc.sums = partial["train_sums"].clone().to(torch.float64)
                state["partial"] = None
            out_of_time = False
            bar = tqdm(steps[steps_done:], desc=f"epoch {epoch}", leave=False, initial=steps_done, total=len(steps),
                       disable=not (t.progress and info.is_main))
            model.train()
            for global_idx, local_idx in bar:
                # a rank without structures in this step runs a zero-weighted forward so DDP's
                # gradient all-reduce still sees every rank
                graph = concat([data.train_graphs[i] for i in (local_idx or global_idx[:1])])
                batch = to_device(graph, device, dtype)
                counts = loss_counts(batch, cfg.loss) if local_idx else torch.zeros(3, dtype=torch.float64)
                global_counts = D.all_reduce_sum(counts, info)
                pred = train_model(batch)
                loss, terms = compute_loss(pred, batch, cfg.loss, global_counts)
                if not local_idx:
                    loss = loss * 0.0
                loss_value = float(loss.detach())
                # checked before the update, so non-finite values never reach the weights
                if D.any_rank(not math.isfinite(loss_value), info):
                    raise _diverged(f"the loss is {loss_value}", epoch, state["step"] + 1, cfg, saved_note())
                optimizer.zero_grad(set_to_none=True)
                # DDP averages gradients over ranks; the loss is already a global mean, so scale back
                (loss * info.world_size).backward()
                if t.grad_clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip_norm)
                optimizer.step()
                if ema is not None:
                    ema.update(model)
                if local_idx:
                    acc.update({k: v.detach() for k, v in pred.items()}, batch)
                state["step"] += 1
                steps_done += 1
                bar.set_postfix(loss=f"{loss_value:.4g}")
                if t.time_budget is not None:
                    out_of_time = D.any_rank(time.monotonic() - t0 > t.time_budget, info)
                    if out_of_time:
                        break
            bar.close()
            check_weights(epoch)
            acc.reduce()
            if out_of_time and steps_done < len(steps):
                # stopped inside the epoch: record the position instead of counting the epoch
                state.update(epoch=epoch - 1, elapsed=elapsed_before + time.monotonic() - t0,
                             partial={"epoch": epoch, "steps_done": steps_done, "num_steps": len(steps),
                                      "train_sums": acc.sums.clone()})
                if writes:
                    save(last_path, eval_state())
                stop_reason = (f"time_budget ({t.time_budget:g} s) after {steps_done} of {len(steps)} steps of "
                               f"epoch {epoch} (not counted; --resume continues it)")
                break
            train_metrics = acc.compute()
            row: Dict[str, float] = {"epoch": epoch, "step": state["step"], "lr": optimizer.param_groups[0]["lr"]}
            row.update({f"train_{k}": v for k, v in train_metrics.items()})
            row["train_loss"] = loss_from_metrics(train_metrics, cfg.loss)
            # not `or out_of_time`: an extra validation would step the scheduler where an
            # uninterrupted run does not, and resume would no longer be exact
            validated = epoch % t.validate_every == 0 or epoch == t.max_epochs
            improved = False
            if validated:
                if data.val_graphs:
                    if ema is not None:
                        with ema.average_parameters(model):
                            vm = _evaluate_graphs(model, data.val_graphs, t.val_batch_size, device, dtype, data.type_names, info)
                    else:
                        vm = _evaluate_graphs(model, data.val_graphs, t.val_batch_size, device, dtype, data.type_names, info)
                    row.update({f"val_{k}": v for k, v in vm.items()})
                    row["val_loss"] = loss_from_metrics(vm, cfg.loss)
                if monitor_key not in row:
                    raise ValueError(
                        f"training.monitor={t.monitor!r}: no metric {monitor_key!r}; available: "
                        f"{sorted(k for k in row if k.startswith(monitor_split))}"
                    )
                value = row[monitor_key]
                if not math.isfinite(value):
                    raise _diverged(f"{monitor_key} is {value}", epoch, state["step"], cfg, saved_note())
                if scheduler is not None:
                    scheduler.step(value)
                improved = value < state["best"] - t.early_stopping_min_delta
                if improved:
                    state.update(best=value, best_epoch=epoch, bad_epochs=0,
                                 best_metrics={k: v for k, v in row.items() if k.startswith(("val_", "train_"))})
                    best_eval_state = eval_state()
                else:
                    state["bad_epochs"] += 1
            row["time"] = elapsed_before + time.monotonic() - t0  # over all resumed runs
            state["elapsed"] = row["time"]
            state["epoch"] = epoch
            state["history"].append(row)
            if writes:
                if improved:
                    save(best_path, best_eval_state)
                save(last_path, eval_state())
                logger.log(row, state["history"])
            if info.is_main and t.progress:
                tqdm.write(format_row(row) + ("  *" if improved else ""))
            stop = False
            if out_of_time and epoch < t.max_epochs:  # at the last epoch, max_epochs is the reason
                stop, stop_reason = True, f"time_budget ({t.time_budget:g} s)"
            elif (validated and t.early_stopping_patience is not None
                  and state["bad_epochs"] >= t.early_stopping_patience):
                stop, stop_reason = True, f"early_stopping (no improvement of {monitor_key} in {state['bad_epochs']} epochs)"
            if callback is not None and not stop:
                stop = D.any_rank(bool(callback(epoch, row)), info)
                if stop:
                    stop_reason = "callback"
            if stop:
                break
        if logger is not None:
            logger.close()
        if best_eval_state is None:  # no validated epoch (e.g. a time budget shorter than one epoch)
            best_eval_state = eval_state()
        bad = _nonfinite_tensors(best_eval_state)
        if bad:  # never hand out (or write as best_model.pt) a model with NaN/inf weights
            raise _diverged(f"non-finite weights in the final model ({', '.join(bad[:3])})", epoch, state["step"], cfg, saved_note())
        model.load_state_dict(best_eval_state)
        model.eval()
        if writes and hasattr(model, "hparams") and hasattr(model, "kind"):
            # the deployable file (qallegro.model.io format) for export / ASE / evaluate
            from qallegro.model.io import save_model

            save_model(model, run_path / "best_model.pt")
        return TrainResult(
            model=model, best_metrics=dict(state["best_metrics"]), best_epoch=int(state["best_epoch"]),
            history=list(state["history"]), checkpoint_path=best_path if write_files and best_path.exists() else None,
            last_checkpoint_path=last_path if write_files and last_path.exists() else None,
            stop_reason=stop_reason, elapsed=time.monotonic() - t0, model_spec=spec, config=cfg,
        )
    finally:
        D.teardown(info)
