"""qallegro.train: configs, the training loop (``fit``) and evaluation (``evaluate``).

    from qallegro.train import fit, evaluate, load_config
    result = fit(load_config("configs/ethanol_allegro.yaml"), time_budget=600)
    print(result.best_metrics["val_forces_mae"], result.checkpoint_path)
    metrics = evaluate(result.model, structures)      # meV, meV/atom, meV/Å
"""

from qallegro.train.config import TrainConfig, config_from_dict, load_config
from qallegro.train.evaluate import evaluate
from qallegro.train.trainer import TrainResult, fit

__all__ = ["TrainConfig", "TrainResult", "config_from_dict", "evaluate", "fit", "load_config"]
