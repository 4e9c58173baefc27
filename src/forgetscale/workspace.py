"""The Workspace: each base model, dataset, base reference and replay set loaded once per process.

Every stage that needs a study's inputs (preparation, the runs, the probes) asks the Workspace,
which loads on first use and hands the same object out afterwards. One base model is kept in
memory at a time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgetscale.config import RunConfig, canonical_json
from forgetscale.data.corpus import build_corpus
from forgetscale.data.encode import Sequence, encode_example, fingerprint
from forgetscale.data.sources import load_splits
from forgetscale.errors import UserError
from forgetscale.intruders import BaseSpectra
from forgetscale.mitigation import replay_sequences
from forgetscale.models import LoadedModel, load_model
from forgetscale.reference import BaseReference, base_reference, reference_identity, reference_mode
from forgetscale.task import task_reference

log = logging.getLogger(__name__)


@dataclass
class Workspace:
    """Loads each base model, dataset, base reference and replay set once per process and hands them out.

    Args:
        cache: the cache directory (converted models, references, sampled corpora).
    """

    cache: Path
    phases: dict[str, float] = field(default_factory=dict, kw_only=True)
    """Wall seconds spent per set-up phase in this process (for the benchmark's breakdown)."""
    _models: dict[str, LoadedModel] = field(default_factory=dict, kw_only=True)
    _data: dict[str, tuple[list[Sequence], list[Sequence]]] = field(default_factory=dict)
    _refs: dict[str, BaseReference] = field(default_factory=dict)
    _raw: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = field(default_factory=dict)
    _base_evals: dict[str, dict[str, float]] = field(default_factory=dict)
    _replay: dict[str, list[Sequence]] = field(default_factory=dict)
    _task_refs: dict[str, BaseReference] = field(default_factory=dict)
    _spectra: dict[str, BaseSpectra] = field(default_factory=dict)

    def _phase(self, name: str, since: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - since

    def model(self, run: RunConfig) -> LoadedModel:
        key = canonical_json(run.model)
        if key not in self._models:
            self._models.clear()  # one base model in memory at a time
            t = time.perf_counter()
            self._models[key] = load_model(run.model)
            self._phase("load_model", t)
            log.info(f"loaded base model {run.model.name} in {time.perf_counter() - t:.1f}s")
        return self._models[key]

    def data(self, run: RunConfig) -> tuple[list[Sequence], list[Sequence]]:
        """Encoded (train, held-out) sequences for the run's dataset."""
        key = self._data_key(run)
        if key not in self._data:
            d = run.data
            train, held = self.raw_data(run)
            tok = self.model(run).tokenizer
            enc = []
            for name, part in (("train", train), ("held-out", held)):
                seqs = [s for s in (encode_example(e, tok, run.train.seq_len) for e in part) if s is not None]
                if not seqs:
                    raise UserError(f"dataset {d.dataset}: no {name} example has a token to train on")
                enc.append(seqs)
            self._data[key] = (enc[0], enc[1])
        return self._data[key]

    @staticmethod
    def _data_key(run: RunConfig) -> str:
        """What the encoded (train, held-out) sequences depend on."""
        return json.dumps([canonical_json(run.data), _order(run), run.train.seq_len, canonical_json(run.model)])

    def raw_data(self, run: RunConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(train, held-out) examples before tokenization: checks the dataset without loading a model."""
        d = run.data
        key = json.dumps([canonical_json(d), _order(run)])
        if key not in self._raw:
            self._raw[key] = load_splits(d.dataset, d.n_train, d.n_heldout, d.seed, d.split, _order(run))
        return self._raw[key]

    def reference(self, run: RunConfig) -> BaseReference:
        """The base reference for the run's (model, corpus), from the disk cache when present."""
        lm = self.model(run)
        mode = reference_mode(run, lm.model)  # a method that trains the head needs the logits reference
        memo = canonical_json(run.model) + canonical_json(run.forgetting) + mode
        if memo in self._refs:
            return self._refs[memo]
        f = run.forgetting
        t = time.perf_counter()
        seqs = build_corpus(f, lm.tokenizer, lm.model, lm.fingerprint, self.cache)
        self._phase("forgetting_corpus", t)
        t = time.perf_counter()
        ref = base_reference(lm.model, self.identity(run), lm.tokenizer, seqs, f.top_k, mode, f.batch_size, self.cache)
        assert ref is not None  # computed when not cached
        self._phase("base_reference", t)  # a cached one: the time to load it
        self._refs[memo] = ref
        return ref

    def identity(self, run: RunConfig) -> dict[str, Any]:
        """The base model's identity in every reference key (:func:`forgetscale.reference.reference_identity`)."""
        lm = self.model(run)
        return reference_identity(lm.model, lm.fingerprint)

    def task_reference(self, run: RunConfig) -> BaseReference:
        """The base reference on the run's held-out examples (``task_kl``, :mod:`forgetscale.task`), cached like
        the corpus reference and computed, when it is not, from the base before any adapter exists."""
        memo = self._data_key(run) + canonical_json(run.forgetting) + reference_mode(run, self.model(run).model)
        if memo not in self._task_refs:
            lm, (_, held), f = self.model(run), self.data(run), run.forgetting
            t = time.perf_counter()
            ref = task_reference(lm.model, lm.tokenizer, self.identity(run), held, f.top_k,
                                 reference_mode(run, lm.model), f.batch_size, self.cache)
            assert ref is not None  # computed when not cached
            self._task_refs[memo] = ref
            self._phase("task_reference", t)
        return self._task_refs[memo]

    def replay(self, run: RunConfig) -> list[Sequence]:
        """The run's encoded replay examples (``mitigation.kind: replay``), sampled by the unadapted base."""
        m = run.mitigation
        key = json.dumps([canonical_json(run.model), m.replay_source, m.replay_examples, run.train.seq_len,
                          run.data.seed, canonical_json(run.forgetting)])  # fmt: skip
        if key not in self._replay:
            lm = self.model(run)
            self._replay[key] = replay_sequences(run, lm.tokenizer, lm.model, lm.fingerprint, self.cache)
        return self._replay[key]

    def spectra(self, run: RunConfig) -> BaseSpectra:
        """The base weights' singular vectors for ``intruders`` (filled as layers ask), one per base model."""
        return self._spectra.setdefault(canonical_json(run.model), BaseSpectra())

    def base_evaluation(self, run: RunConfig, compute: Callable[[], dict[str, float]]) -> dict[str, float]:
        """The step-0 measurement shared by every run on the same (model, data, corpus).

        A fresh LoRA adapter is the identity (B = 0), so every run of a sweep on
        one dataset starts from the same numbers: ``compute`` runs once per key.
        """
        key = self._data_key(run) + canonical_json(run.forgetting)  # the held-out data and the base reference
        if key not in self._base_evals:
            self._base_evals[key] = compute()
        return dict(self._base_evals[key])

    def data_fingerprint(self, run: RunConfig) -> str:
        train, held = self.data(run)
        return fingerprint(train + held)


def _order(run: RunConfig) -> int | None:
    """The data order whose own training examples the run draws (``data.examples: per_order``), else None."""
    return run.train.seed if run.data.examples == "per_order" else None
