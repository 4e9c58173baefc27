"""Behaviour probes: knowledge, reasoning and safety, base vs fine-tuned.

- :mod:`~forgetscale.probes.sets`: the shipped probe sets, user JSONL files, ARC-Challenge and AdvBench;
- :mod:`~forgetscale.probes.scoring`: pure scoring (answers, letters, refusals, agreement with the base);
- :mod:`~forgetscale.probes.flips`: pure paired flips against the base (McNemar, Wilson intervals);
- :mod:`~forgetscale.probes.inference`: one model on one probe (generation, option log-likelihoods), adapters swapped;
- :mod:`~forgetscale.probes.runner`: a study's base model once and every run's adapter, compared and stored.

Importing this package does not import torch.
"""

from forgetscale.probes.flips import flips, item_flips, mcnemar_exact, wilson
from forgetscale.probes.inference import PROBES, option_logliks, run_probe, swapped_adapters
from forgetscale.probes.runner import (
    BASE,
    compare,
    lm_eval_study,
    load_probes_config,
    probe_names,
    probe_study,
)
from forgetscale.probes.scoring import ItemResult, summarize
from forgetscale.probes.sets import PROBE_KINDS, load_probe_file, load_probe_set

__all__ = [
    "BASE",
    "PROBES",
    "PROBE_KINDS",
    "ItemResult",
    "compare",
    "flips",
    "item_flips",
    "lm_eval_study",
    "load_probe_file",
    "load_probe_set",
    "load_probes_config",
    "mcnemar_exact",
    "option_logliks",
    "probe_names",
    "probe_study",
    "run_probe",
    "summarize",
    "swapped_adapters",
    "wilson",
]
