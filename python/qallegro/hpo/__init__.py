"""qallegro.hpo: multi-objective hyperparameter optimisation (SAMO-COBRA) on Optuna storage.

- :func:`qallegro.hpo.samo_cobra.minimize`: the standalone optimiser;
- :class:`qallegro.hpo.SamoCobraSampler`: the same algorithm as an Optuna sampler;
- :mod:`qallegro.hpo.problems`: constrained test problems with known fronts;
- :mod:`qallegro.hpo.objectives`: force error and latency of Allegro models;
- :mod:`qallegro.hpo.space`: YAML search spaces (defaults in ``qallegro/hpo/spaces``).
"""

from typing import Any

__all__ = ["SamoCobraSampler", "minimize"]


def __getattr__(name: str) -> Any:
    # lazy: importing optuna takes a while and most of qallegro never needs it
    if name == "SamoCobraSampler":
        from qallegro.hpo.sampler import SamoCobraSampler

        return SamoCobraSampler
    if name == "minimize":
        from qallegro.hpo.samo_cobra import minimize

        return minimize
    raise AttributeError(f"module 'qallegro.hpo' has no attribute {name!r}")
