"""The one list of the names a spec may give: samplers, pruners and built-in objectives.

Everything else (the spec's validation, the factories, the CLI's help) reads these.
"""

from __future__ import annotations

#: A spec's ``sampler.type`` -> the Optuna class that implements it.
SAMPLER_CLASSES = {
    "grid": "RandomSampler",
    "random": "RandomSampler",
    "tpe": "TPESampler",
    "cmaes": "CmaEsSampler",
    "gp": "GPSampler",
    "qmc": "QMCSampler",
    "nsgaii": "NSGAIISampler",
    "nsgaiii": "NSGAIIISampler",
    "bruteforce": "BruteForceSampler",
}
#: A spec's ``pruner.type`` -> the Optuna class that implements it.
PRUNER_CLASSES = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "patient": "PatientPruner",
    "threshold": "ThresholdPruner",
    "wilcoxon": "WilcoxonPruner",
}

#: A spec's built-in ``objective`` name -> ``module:function``.
BUILTIN_OBJECTIVES: dict[str, str] = {
    "mlp": "hpo.objectives.mlp:objective",
    "cnn": "hpo.objectives.cnn:objective",
    "sequence": "hpo.objectives.sequence:objective",
    "diabetes": "hpo.objectives.diabetes:objective",
}

SAMPLERS = tuple(SAMPLER_CLASSES)
PRUNERS = tuple(PRUNER_CLASSES)
