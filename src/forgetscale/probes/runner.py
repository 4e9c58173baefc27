"""Probing a study: the base model once, then each run's adapter, side by side; results stored.

Which probes there are and how one model answers one is :mod:`~forgetscale.probes.inference`;
this module chooses the runs, skips what is stored, compares with the base and stores the results,
for the shipped probes (:func:`probe_study`) and for lm-evaluation-harness tasks (:func:`lm_eval_study`).

Every fine-tuned result is compared item by item with the base model's own
answers (:func:`~forgetscale.probes.scoring.summarize`): accuracy can stay flat
while agreement shows how many answers changed, and the printed rows count the items that went
right -> wrong and wrong -> right with an exact McNemar test (:mod:`~forgetscale.probes.flips`).

The base model is loaded once; adapters are swapped on it with PEFT and
unloaded at the end, so the shared base model comes back untouched. Results
that were already stored with the same settings (model, adapter, items,
decoding) are not recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgetscale.config import ProbesConfig, RunConfig, StudyConfig, canonical_json, validate
from forgetscale.errors import UserError
from forgetscale.models import check_adapter, file_digest
from forgetscale.probes import scoring
from forgetscale.probes.flips import item_flips
from forgetscale.probes.inference import PROBES, run_probe, swapped_adapters
from forgetscale.probes.lm_eval_logs import side_by_side
from forgetscale.probes.sets import ProbeItem, load_probe_set
from forgetscale.store import Store, open_study, open_study_to_write

if TYPE_CHECKING:  # the Workspace loads models (torch); probing a study takes one from its caller
    from forgetscale.workspace import Workspace

__all__ = [
    "BASE",
    "compare",
    "lm_eval_study",
    "load_probes_config",
    "probe_names",
    "probe_study",
    "summary_row",
]

BASE = "base"
"""The run id under which the base model's own probe results are stored."""

log = logging.getLogger(__name__)

ROW_KEYS = (
    "n",
    "accuracy",
    "base_accuracy",
    "agreement",
    "refusal_rate",
    "base_refusal_rate",
    "accuracy_norm",
    "base_accuracy_norm",
    "agreement_norm",
)


def probe_names(kinds: Sequence[str]) -> list[str]:
    """The probes run for ``kinds``, in a fixed order.

    >>> probe_names(["safety", "reasoning"])
    ['reasoning_loglik', 'reasoning_gen', 'safety']
    """
    unknown = [k for k in kinds if k not in PROBES]
    if unknown:
        raise UserError(f"unknown probe kind(s) {unknown}; choose from {', '.join(PROBES)}")
    return [p for k in PROBES if k in kinds for p in PROBES[k]]


def _kind(probe: str) -> str:
    return next(k for k, names in PROBES.items() if probe in names)

# ----------------------------------------------------------------------------- comparison


def _item_result(record: dict[str, Any], norm: bool = False) -> scoring.ItemResult:
    if norm:
        return scoring.ItemResult(record["id"], record["answer_norm"], record["correct_norm"])
    return scoring.ItemResult(record["id"], record["answer"], record["correct"])


def compare(ft: list[dict[str, Any]], base: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Summary and side-by-side items of a fine-tuned model's records against the base's.

    Returns:
        ``(summary, items)``: the summary is :func:`~forgetscale.probes.scoring.summarize`'s
        (plus ``accuracy_norm``/``base_accuracy_norm``/``agreement_norm`` for
        log-likelihood records); each item holds the prompt, the reference, the
        fine-tuned output and answer and the base's as ``base_*``, and ``agree``.
    """
    summary = scoring.summarize([_item_result(r) for r in ft], [_item_result(r) for r in base])
    if ft and "answer_norm" in ft[0]:
        norm = scoring.summarize([_item_result(r, True) for r in ft], [_item_result(r, True) for r in base])
        summary.update(
            accuracy_norm=norm["accuracy"], base_accuracy_norm=norm["base_accuracy"], agreement_norm=norm["agreement"]
        )
    by_id = {r["id"]: r for r in base}
    shared = ("id", "prompt", "reference", "choices")
    items = []
    for r in ft:
        b = by_id[r["id"]]
        item = {k: r[k] for k in shared if k in r}
        for k in (k for k in r if k not in shared):
            item[k], item[f"base_{k}"] = r[k], b[k]
        item["agree"] = r["answer"] == b["answer"]
        items.append(item)
    return summary, items


def summary_row(
    run_id: str, probe: str, summary: dict[str, Any], items: Sequence[dict[str, Any]] = ()
) -> dict[str, Any]:
    """The printable row of one stored (run, probe): its summary, and its flips against the base from ``items``.

    Every row has the same keys (:data:`ROW_KEYS`, then :data:`~forgetscale.probes.flips.COLUMNS`: ``n10``,
    ``n01``, ``mcnemar_p``, each rate's 95% Wilson ``_lo``/``_hi``...); what does not apply is None.
    """
    row = {"run_id": run_id, "probe": probe, **{k: summary.get(k) for k in ROW_KEYS}}
    row.update((k, v) for k, v in item_flips(items).items() if k not in row)
    return row


# ----------------------------------------------------------------------------- a study


def probe_study(
    out: Path,
    ws: Workspace,
    cfg: ProbesConfig,
    run_ids: list[str] | None = None,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Probe the base model and each finished run's adapter of the study in ``out``; store the results.

    Args:
        out: the study directory (``study.sqlite``, ``adapters/<run_id>/``).
        ws: supplies the base model (loaded once).
        cfg: which probe kinds, how many items, decoding length, batch size.
        run_ids: runs to probe (default: every run whose status is 'done');
            ``"base"`` alone probes just the base model.
        force: recompute results already stored with the same settings.

    Returns:
        One :func:`summary_row` per (run, probe), the base's first, with its flips against the base.

    Raises:
        UserError: no study in ``out``, an unknown or unfinished run, a missing adapter.
    """
    probes = probe_names(cfg.kinds)
    sets = {k: load_probe_set(k)[: cfg.max_items] for k in PROBES if k in cfg.kinds}
    with _open(out, write=True) as store:
        groups = _plan(store, out, run_ids)
        stored = {(r["run_id"], r["probe"]): r["summary"].get("settings") for r in store.probes()}
        rows = []
        for base_id, model_run, runs in groups:
            lm = ws.model(model_run)
            settings = {
                (rid, p): _settings(p, sets[_kind(p)], lm.fingerprint, adapter, cfg)
                for rid, adapter in [(base_id, None), *runs]
                for p in probes
            }
            todo = {
                rid: [p for p in probes if force or stored.get((rid, p)) != settings[rid, p]]
                for rid, _ in [(base_id, None), *runs]
            }
            base_needed = [p for p in probes if any(p in ps for ps in todo.values())]
            if not base_needed:
                log.info(f"probes: {base_id} and {len(runs)} run(s) already probed with these settings; skipping")
            base_records: dict[str, list[dict[str, Any]]] = {}
            for p in base_needed:
                base_records[p] = _logged_probe(lm.model, lm.tokenizer, p, sets[_kind(p)], cfg, f"{base_id} {p}")
                if p in todo[base_id]:
                    _put(store, base_id, p, base_records[p], base_records[p], settings[base_id, p])
            from forgetscale.fold import folded

            with swapped_adapters(lm.model) as attach:
                for rid, adapter in runs:
                    if not todo[rid]:
                        continue
                    model = attach(adapter, rid)
                    with folded(model):  # the adapter folded into W + sBA once for all of this run's probes
                        for p in todo[rid]:
                            recs = _logged_probe(model, lm.tokenizer, p, sets[_kind(p)], cfg, f"{rid} {p}")
                            _put(store, rid, p, recs, base_records[p], settings[rid, p])
            stored_rows = {(r["run_id"], r["probe"]): r for r in store.probes()}
            for rid in [base_id, *(rid for rid, _ in runs)]:
                rows.extend(summary_row(rid, p, stored_rows[rid, p]["summary"], stored_rows[rid, p]["items"])
                            for p in probes)  # fmt: skip
        return rows


def _settings(
    probe: str, items: Sequence[ProbeItem], model_fp: str, adapter: Path | None, cfg: ProbesConfig
) -> dict[str, Any]:
    """What a stored result depends on: equal settings, equal result (decoding is greedy)."""
    return {
        "model": model_fp,
        "adapter": _dir_digest(adapter) if adapter else None,
        "items": _digest([asdict(it) for it in items]),
        "n_items": len(items),
        "max_new_tokens": None if probe == "reasoning_loglik" else cfg.max_new_tokens,
        "batch_size": cfg.batch_size,  # padding changes the last bits of the numbers
    }


def _put(
    store: Store, run_id: str, probe: str, recs: list[dict[str, Any]], base: list[dict[str, Any]], settings: dict
) -> None:
    summary, items = compare(recs, base)
    summary["settings"] = settings
    store.put_probe(run_id, probe, summary, items)


def _logged_probe(
    model: Any, tok: Any, probe: str, items: Sequence[ProbeItem], cfg: ProbesConfig, label: str
) -> list[dict[str, Any]]:
    t = time.perf_counter()
    recs = run_probe(model, tok, probe, items, cfg.max_new_tokens, cfg.batch_size)
    scored = [r["correct"] for r in recs if r["correct"] is not None]
    refusals = [r["answer"] for r in recs if isinstance(r["answer"], bool)]
    what = (
        f"accuracy {sum(scored) / len(scored):.3f}" if scored
        else f"refusals {sum(refusals)}/{len(refusals)}" if refusals else ""
    )  # fmt: skip
    log.info(f"probe {label}: {len(recs)} items in {time.perf_counter() - t:.1f}s  {what}")
    return recs


@contextmanager
def _open(out: Path, write: bool = False) -> Iterator[Store]:
    """The study's store; to ``write``, under its run lock (no probing a study another process runs)."""
    with open_study_to_write(Path(out)) if write else open_study(Path(out)) as store:
        if store.get_meta("study") is None:
            raise UserError(f"{out}/study.sqlite holds no study config; was it written by `forgetscale run`?")
        yield store


def load_probes_config(out: Path, **overrides: Any) -> ProbesConfig:
    """The study's ``probes`` section with ``overrides`` (those not None) applied and validated.

    Raises:
        UserError: no study in ``out``; an override of the wrong type or range.
    """
    with _open(out) as store:
        study = StudyConfig.model_validate(store.get_meta("study"))
    data = study.probes.model_dump(mode="json")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate(ProbesConfig, data, "probe options")


def _plan(store: Store, out: Path, run_ids: list[str] | None) -> list[tuple[str, RunConfig, list[tuple[str, Path]]]]:
    """Group the chosen runs by base model: ``[(base id, a run of that model, [(run id, adapter dir)])]``.

    Everything is checked before anything is probed, so bad input writes nothing.
    """
    study = StudyConfig.model_validate(store.get_meta("study"))
    table = {r["run_id"]: r for r in store.runs()}
    wanted = [rid for rid in (run_ids or []) if rid != BASE]
    unknown = [rid for rid in wanted if rid not in table]
    if unknown:
        known = ", ".join(table) or "none"
        raise UserError(f"unknown run id(s) {', '.join(unknown)} in {out} (runs: {known})")
    if run_ids is None:
        wanted = [rid for rid, r in table.items() if r["status"] == "done"]
    not_done = [f"{rid} ({table[rid]['status']})" for rid in wanted if table[rid]["status"] != "done"]
    if not_done:
        raise UserError(f"only finished runs have an adapter to probe; not done: {', '.join(not_done)}")
    configs = {rid: RunConfig.model_validate(r["config"]) for rid, r in table.items()}
    # "base" names the base model when the study has one; a study that sweeps models gets one base per model
    n_models = len({canonical_json(c.model) for c in [*study.runs(), *configs.values()]})
    groups: dict[str, tuple[str, RunConfig, list[tuple[str, Path]]]] = {}
    for rid in wanted:
        adapter = Path(out) / "adapters" / rid
        check_adapter(adapter, f"run {rid}")  # before anything is probed or stored
        run = configs[rid]
        base_id = BASE if n_models == 1 else f"{BASE}:{run.model.name}"
        groups.setdefault(canonical_json(run.model), (base_id, run, []))[2].append((rid, adapter))
    if not groups:  # no run chosen (or none finished yet): the base alone
        run = study.runs()[0]
        groups[""] = (BASE if n_models == 1 else f"{BASE}:{run.model.name}", run, [])
    return list(groups.values())


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _dir_digest(directory: Path) -> str:
    return _digest({f.name: file_digest(f) for f in sorted(Path(directory).iterdir()) if f.is_file()})


# ----------------------------------------------------------------------------- lm-evaluation-harness


def lm_eval_study(
    out: Path,
    ws: Workspace,
    tasks: list[str],
    run_ids: list[str] | None = None,
    batch_size: int = 8,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Run lm-evaluation-harness ``tasks`` on the base model and each chosen run's adapter.

    The base is loaded once and wrapped in ``HFLM(pretrained=<model object>)``;
    adapters are swapped on it as in :func:`probe_study`. Each task's metrics
    are stored as probe ``lm_eval:<task>`` with ``accuracy`` (``acc``) and, when
    lm-eval logged per-sample answers, ``agreement`` with the base's answers. Each run's per-sample
    records are paired with the base's by ``doc_id`` and stored as items, so a task gets the flips the
    shipped probes get (``n10``, ``n01``, McNemar, Wilson; :func:`forgetscale.probes.lm_eval_logs.side_by_side`).
    A task may be a local task's YAML file: its directory is included (lm-eval's ``--include_path``), and
    relative ``data_files`` in it resolve from the working directory, as in ``lm_eval`` itself.

    Raises:
        UserError: lm-eval is not installed; no study in ``out``; an unknown run or task.
    """
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise UserError("--lm-eval needs lm-evaluation-harness: pip install 'forgetscale[lm-eval]'") from None
    tasks, include = local_tasks([t.strip() for t in tasks if t.strip()])
    if not tasks:
        raise UserError("--lm-eval: name at least one task, e.g. --lm-eval arc_challenge,hellaswag")
    _check_tasks(tasks, include)
    with _open(out, write=True) as store:
        groups = _plan(store, out, run_ids)
        rows = []
        for base_id, model_run, runs in groups:
            lm = ws.model(model_run)

            def evaluate(model: Any, label: str, _tok: Any = lm.tokenizer) -> dict[str, Any]:
                t = time.perf_counter()
                res = lm_eval.simple_evaluate(
                    model=HFLM(pretrained=model, tokenizer=_tok, batch_size=batch_size),
                    tasks=tasks,
                    limit=limit,
                    log_samples=True,
                    **({"task_manager": _task_manager(include)} if include else {}),
                )
                log.info(f"lm-eval {label}: {', '.join(tasks)} in {time.perf_counter() - t:.1f}s")
                return res

            base_res = evaluate(lm.model, base_id)
            results = [(base_id, base_res)]
            with swapped_adapters(lm.model) as attach:
                for rid, adapter in runs:
                    results.append((rid, evaluate(attach(adapter, rid), rid)))
            for rid, res in results:
                for task, summary in lm_eval_summaries(res, base_res).items():
                    items = [] if rid == base_id else _paired_items(task, base_res, res)
                    store.put_probe(rid, f"lm_eval:{task}", summary, items)
                    rows.append(summary_row(rid, f"lm_eval:{task}", summary, items))
        return rows


def _task_manager(include: list[str]) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include or None)


def _paired_items(task: str, base: dict[str, Any], res: dict[str, Any]) -> list[dict[str, Any]]:
    """A run's per-sample records of ``task`` beside the base's, as stored items (the first filter's); none when
    lm-eval logged no samples or no right/wrong score."""
    b, r = (base.get("samples") or {}).get(task), (res.get("samples") or {}).get(task)
    if not b or not r:
        return []
    try:
        _metric, by_filter = side_by_side(task, b, r)
    except UserError as e:  # not a right/wrong task (a BLEU score, say): rates only, as before
        log.info(f"lm-eval {task}: no flips ({e})")
        return []
    return next(iter(by_filter.values()), [])


def local_tasks(tasks: list[str]) -> tuple[list[str], list[str]]:
    """Task names, with each ``.yaml`` file among ``tasks`` replaced by the task it defines, and the directories
    of those files (for lm-eval's include path).

    Raises:
        UserError: a YAML file that is missing or names no ``task``.
    """
    import yaml

    names, include = [], []
    for t in tasks:
        if not t.endswith((".yaml", ".yml")):
            names.append(t)
            continue
        path = Path(t)
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise UserError(f"--lm-eval {t}: cannot read the task file ({type(e).__name__})") from None
        if not isinstance(spec, dict) or not isinstance(spec.get("task"), str):
            raise UserError(f"--lm-eval {t}: not an lm-eval task file (no task: name in it)")
        names.append(spec["task"])
        if str(path.resolve().parent) not in include:
            include.append(str(path.resolve().parent))
    return names, include


def _check_tasks(tasks: list[str], include: list[str] | None = None) -> None:
    try:
        known = set(getattr(_task_manager(include or []), "all_tasks", []))
    except Exception:  # an lm-eval without this API: let simple_evaluate judge the names
        return
    unknown = [t for t in tasks if known and t not in known]
    if unknown:
        raise UserError(f"--lm-eval: unknown task(s) {', '.join(unknown)} (see `lm-eval ls tasks`)")


def lm_eval_summaries(res: dict[str, Any], base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-task summaries from ``simple_evaluate`` results, against the base model's results.

    Metric keys lose lm-eval's filter suffix (``"acc,none"`` -> ``"acc"``); ``accuracy``
    is ``acc`` (or ``exact_match``), ``agreement`` the fraction of samples whose
    answer (argmax option, or the filtered generation) equals the base's.
    """
    out = {}
    for task, metrics in res.get("results", {}).items():
        m = {k.split(",")[0]: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "alias"}
        bm = {
            k.split(",")[0]: v for k, v in base.get("results", {}).get(task, {}).items() if isinstance(v, (int, float))
        }
        n = (res.get("n-samples", {}).get(task) or {}).get("effective")
        main = next((k for k in ("acc", "exact_match") if k in m), None)
        out[task] = {
            "n": n,
            "accuracy": m.get(main) if main else None,
            "base_accuracy": bm.get(main) if main else None,
            "agreement": _sample_agreement(res.get("samples", {}).get(task), base.get("samples", {}).get(task)),
            "accuracy_norm": m.get("acc_norm"),
            "base_accuracy_norm": bm.get("acc_norm"),
            "metrics": m,
            "base_metrics": bm,
        }
    return out


def _sample_agreement(ft: list[dict[str, Any]] | None, base: list[dict[str, Any]] | None) -> float | None:
    if not ft or not base:
        return None
    answers = {}
    for s in base:
        answers[s.get("doc_id")] = _sample_answer(s)
    pairs = [(_sample_answer(s), answers.get(s.get("doc_id"), ...)) for s in ft]
    pairs = [(a, b) for a, b in pairs if a is not ... and b is not ...]
    return sum(a == b for a, b in pairs) / len(pairs) if pairs else None


def _sample_answer(sample: dict[str, Any]) -> Any:
    resps = sample.get("filtered_resps")
    if not isinstance(resps, list) or not resps:
        return ...
    first = resps[0]
    if isinstance(first, (list, tuple)) and first and isinstance(first[0], (int, float)):
        lls = [float(r[0]) for r in resps]  # multiple choice: (loglik, is_greedy) per option
        return max(range(len(lls)), key=lambda i: (lls[i], -i))
    return first if len(resps) == 1 else tuple(map(str, resps))
