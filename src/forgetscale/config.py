"""Typed, frozen, validated configuration: presets, YAML study files, ``--set``.

A study is one :class:`RunConfig` (the settings every run shares) plus a
``sweep``: a mapping from dotted keys to lists of values. Expanding the sweep
gives the list of run configs; each run's id is a hash of its canonical JSON,
so an unchanged run is recognised across invocations and skipped.

Precedence, lowest to highest: defaults < preset < study file < ``--set``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from forgetscale.errors import UserError
from forgetscale.schema import POST_HOC_METHODS

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TARGET_SETS = {"all": ALL_LINEAR, "attention": ALL_LINEAR[:4], "mlp": ALL_LINEAR[4:]}
"""Named sets of ``lora.target_modules`` (Llama-family names); a method label says ``-attention``, ``-mlp``."""


class _Frozen(BaseModel):
    # extra="forbid" is what turns a typo'd key into an error instead of a silently
    # ignored setting; frozen makes a config safe to hash and share.
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelConfig(_Frozen):
    name: str = "smollm2-135m-instruct"
    """Built-in name, hub id, local directory, or a ``.gguf`` file."""
    revision: str | None = None
    trust_remote_code: bool = False
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """The weights' dtype as loaded; evaluations run the model in it (docs/precision.md)."""
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    """Where the model is placed before its first forward (``auto``: cuda, mps, cpu). Provenance, not part of
    a run id; a study records it and refuses to resume on another device."""


class DataConfig(_Frozen):
    dataset: str = "instruct"  # news | instruct (seeded synthetic), a .jsonl/.txt path, or hf:NAME[:CONFIG]
    n_train: int = Field(256, ge=1)
    n_heldout: int = Field(8, ge=1)
    seed: int = 0
    split: str = "train"  # a hub dataset's split
    examples: Literal["shared", "per_order"] = Field("shared", exclude_if=lambda v: v == "shared")
    """``per_order``: each data order draws its own n_train (seeded by train.seed too); held-out ones stay shared."""


class LoraConfig(_Frozen):
    rank: int = Field(4, ge=1)
    alpha: float = Field(1.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] = ALL_LINEAR
    """Module names, or one of :data:`TARGET_SETS` by name (``attention``, ``mlp``, ``all``)."""
    use_rslora: bool = True
    """rsLoRA scaling alpha/sqrt(r), as in the paper."""

    @field_validator("target_modules", mode="before")
    @classmethod
    def _named_set(cls, v: Any) -> Any:
        # a named set is stored as its modules, so `mlp` and the list it names are one run id
        return TARGET_SETS.get(v, (v,)) if isinstance(v, str) else v


def target_suffix(targets: Any) -> str:
    """``-attention`` or ``-mlp`` for targets that are exactly that named set, else ``""``.

    >>> target_suffix(["up_proj", "gate_proj", "down_proj"]), target_suffix(["q_proj", "v_proj"])
    ('-mlp', '')
    """
    named = [name for name in ("attention", "mlp") if set(TARGET_SETS[name]) == set(targets or ())]
    return f"-{named[0]}" if named else ""


class MethodConfig(_Frozen):
    """What a run trains, whose trainable parameter count is its P (docs/methods.md; :mod:`forgetscale.methods`):
    ``lora``/``dora`` read the ``lora`` section, ``ia3`` uses PEFT's default modules, ``full`` trains a copy."""

    kind: Literal["lora", "dora", "ia3", "full"] = "lora"
    blocks: int | None = Field(None, ge=1)
    """``full``: train only the last ``blocks`` transformer blocks (None: every weight, embeddings and LM
    head included; the hidden reference then falls back to logits, since the head changes)."""

    @field_validator("blocks")
    @classmethod
    def _blocks_for_full(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and info.data.get("kind") != "full":
            raise ValueError("method.blocks applies to method.kind full only")
        return v

    def uses_lora_section(self) -> bool:
        return self.kind in ("lora", "dora")


class TrainConfig(_Frozen):
    steps: int = Field(16, ge=1)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(2e-3, gt=0)
    optimizer: Literal["adamw", "adafactor"] = "adamw"
    scheduler: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    seq_len: int = Field(96, ge=8)
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"
    """Training matmul precision: fp32 (the default: the same study and numbers on every machine) or bf16
    autocast (fp32 adapter weights and optimizer state). ``auto`` (opt-in) takes the faster one, measured,
    once per study. Evaluations run in the weights' dtype, never under autocast (docs/precision.md). fp16
    is refused: see :meth:`_no_fp16`."""
    sampling: Literal["random", "group_by_length"] = "random"
    """Plain random order (batches exchangeable across steps, as laws in N assume), or batches of similar
    length (less padding, but transformers' sampler sorts each mega-batch long-to-short: a curriculum
    that restarts every few dozen steps and confounds N with example length)."""
    n_evals: int = Field(6, ge=2)
    """Evaluations at step 0 plus ``n_evals - 1`` log-spaced steps ending at ``steps``."""
    eval_steps: tuple[int, ...] | None = None
    """Explicit evaluation steps; overrides ``n_evals``. Step 0 is always added."""

    @field_validator("precision")
    @classmethod
    def _no_fp16(cls, v: str) -> str:
        # fp16 needs a loss scaler, which skips the optimizer step when gradients overflow while the
        # Trainer's global_step still advances (transformers' training loop): "step N" would then be
        # fewer than N updates, and every law in N would be fitted to the wrong N.
        if v == "fp16":
            raise ValueError("fp16 is not supported: its loss scaler skips updates on overflow while the step count "
                             "still advances, so N would not count updates; use bf16 (same speed, no scaler) or fp32")
        return v

    @field_validator("eval_steps")
    @classmethod
    def _sorted_steps(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and any(s < 0 for s in v):
            raise ValueError("evaluation steps must be >= 0")
        return None if v is None else tuple(sorted(set(v)))


class ForgettingConfig(_Frozen):
    corpus: str = "self"
    """``self`` (the base model's own sampled responses), ``wikitext``, or a text file."""
    seq_len: int = Field(128, ge=2)
    """Block length for text corpora (the corpus protocol)."""
    max_blocks: int | None = Field(None, ge=1)
    n_prompts: int = Field(12, ge=1)
    """``self``: how many of the shipped prompts to answer."""
    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(1.0, gt=0)
    seed: int = 0
    batch_size: int = Field(8, ge=1)
    top_k: int | None = Field(None, ge=1)
    """Keep only the top-K base log-probs + a tail bucket per position (a KL lower bound); None: exact."""
    reference: Literal["hidden", "logits"] = "hidden"
    """Exact (``top_k: null``) reference storage. ``hidden``: d floats per position from the base's final
    hidden states (576 for SmolLM2, not 49152), exact while the LM head is the base's (any dtype: a bf16 head
    is applied in fp32); a LoRA on the head, or a head that is not linear, gets ``logits``: the full
    log-probabilities, valid for any fine-tune."""


_POST_HOC_FIELDS = {"rescale": ("scales", "rescale_steps"),
                    "intruders": ("intruder_lambdas", "intruder_top_k", "intruder_epsilon")}  # fmt: skip
"""The fields each post-hoc method reads (they enter a run id only when the method is measured)."""


class MitigationConfig(_Frozen):
    """A scheme meant to forget less than plain LoRA at equal fine-tuning loss (``forgetscale compare``)."""

    kind: Literal["none", "replay", "kl", "rescale"] = "none"
    """``replay``: part of every training batch comes from ``replay_source``. ``kl``: ``kl_weight`` times
    KL(p_base || p_ft) at the batch's labelled positions is added to the loss (the base is the same model
    with its adapter disabled). ``rescale``: trains as ``none``, then also measures the adapter at each of
    ``scales`` (WiSE-FT: for LoRA, weight interpolation with the base), stored as rows keyed by scale."""
    replay_fraction: float = Field(0.1, ge=0, lt=1)
    """``replay``: the fraction of every training batch's examples that are replayed (rounded per batch,
    the remainder carried to the next, so the fraction holds on average)."""
    replay_source: str = "self"
    """``replay``: ``self`` (the base model's own sampled responses to shipped prompts that the ``self``
    forgetting corpus does not use), a .jsonl/.txt file, or ``hf:NAME[:CONFIG]``."""
    replay_examples: int = Field(48, ge=1)
    """``replay``: how many replay examples (for ``self``: prompts answered, from the end of the list)."""
    kl_weight: float = Field(1.0, ge=0)
    """``kl``: lambda, the weight of the KL-to-base term."""
    post_hoc: tuple[Literal["rescale", "intruders"], ...] = ()
    """Post-hoc mitigations measured on a plainly trained run's final adapter, without retraining (kinds
    ``none`` and ``rescale``, which implies its own; ``replay`` and ``kl`` ignore it): ``rescale`` at each
    of ``scales``, ``intruders`` at each of ``intruder_lambdas``. Their rows go to their own table, keyed
    by method and strength, and are judged against the same run's own rows."""
    scales: tuple[float, ...] = (0.25, 0.5, 0.75)
    """``rescale``: adapter scales measured besides 1 (0: the base model)."""
    rescale_steps: Literal["final", "all"] = "final"
    """``rescale``: measure the scaled adapter at the final step only, or at every scheduled step."""
    intruder_lambdas: tuple[float, ...] = (0.75,)
    """``intruders``: PEFT's ``mitigation_lambda``, the share of each intruder dimension kept: 0 removes them;
    1 changes nothing (it reproduces the run's own rows through PEFT's refactoring, a check)."""
    intruder_top_k: int = Field(10, ge=1)
    """``intruders``: how many of a merged weight's leading singular vectors are examined for intruders."""
    intruder_epsilon: float = Field(0.5, gt=0, le=1)
    """``intruders``: an intruder's largest |cosine| with the base weight's singular vectors is below this."""

    @field_validator("scales")
    @classmethod
    def _scales(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 <= s < 1e3 for s in v):
            raise ValueError("adapter scales must be >= 0")
        return tuple(sorted(set(v) - {1.0}))  # scale 1 is the run's own rows

    @field_validator("post_hoc")
    @classmethod
    def _post_hoc(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(m for m in POST_HOC_METHODS if m in v)  # one order, so one run id

    @field_validator("intruder_lambdas")
    @classmethod
    def _lambdas(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 <= s <= 1 for s in v):
            raise ValueError("intruder lambdas are shares kept, in [0, 1]")
        # lambda 1 is kept when asked for: PEFT refactors the adapter even then, so its row checks that
        # path against the run's own row
        return tuple(sorted(set(v)))

    def strength(self) -> float | None:
        """The kind's strength: replay fraction, KL weight; None for ``none`` and ``rescale`` (per row)."""
        return {"replay": self.replay_fraction, "kl": self.kl_weight}.get(self.kind)

    def post_hoc_methods(self) -> tuple[str, ...]:
        """The post-hoc methods measured on this run's final adapter, in :data:`POST_HOC_METHODS` order.

        >>> MitigationConfig(kind="rescale", post_hoc=("intruders",)).post_hoc_methods()
        ('rescale', 'intruders')
        >>> MitigationConfig(kind="kl", post_hoc=("intruders",)).post_hoc_methods()
        ()
        """
        if self.kind not in ("none", "rescale"):
            return ()
        methods = {*self.post_hoc, *(("rescale",) if self.kind == "rescale" else ())}
        return tuple(m for m in POST_HOC_METHODS if m in methods)

    def id_fields(self) -> dict[str, Any] | None:
        """What of this section enters a run id: only the fields its kind and post-hoc methods use (None for
        ``none`` without post-hoc methods, so that plain runs keep the ids they had before mitigations
        existed; ``post_hoc`` only when set, so that ``rescale`` runs keep theirs)."""
        used = {"none": (), "replay": ("replay_fraction", "replay_source", "replay_examples"),
                "kl": ("kl_weight",), "rescale": ()}[self.kind]  # fmt: skip
        methods = self.post_hoc_methods()
        used += tuple(f for m in methods for f in _POST_HOC_FIELDS[m])
        used += ("post_hoc",) if self.post_hoc and methods else ()
        if self.kind == "none" and not methods:
            return None
        return {"kind": self.kind, **{k: v for k, v in self.model_dump(mode="json").items() if k in used}}


class RunConfig(_Frozen):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    method: MethodConfig = MethodConfig()
    lora: LoraConfig = LoraConfig()
    train: TrainConfig = TrainConfig()
    forgetting: ForgettingConfig = ForgettingConfig()
    mitigation: MitigationConfig = MitigationConfig()

    @model_validator(mode="after")
    def _method_supports_mitigation(self) -> RunConfig:
        kind, m = self.method.kind, self.mitigation
        if m.kind == "kl" and kind == "full":
            # the KL term reads the base through the disabled adapter; a full fine-tune has none
            raise ValueError("mitigation.kind kl needs an adapter to disable; method.kind full has none")
        if m.post_hoc_methods() and kind != "lora":
            # rescaling is weight interpolation with the base only for a plain LoRA update (DoRA's magnitude,
            # IA3's product and a full fine-tune are not scaled that way); intruder reduction is PEFT's for LoRA
            raise ValueError(f"mitigation post-hoc methods (rescale, intruders) apply to method.kind lora, not {kind}")
        return self

    @property
    def run_id(self) -> str:
        """Stable id: the first 12 hex digits of the SHA-256 of the canonical JSON (of the mitigation
        section only the fields its kind uses, and nothing for ``none``; the method section only when it is
        not plain LoRA, and the lora section only for the methods that read it)."""
        d = self.model_dump(mode="json")
        d["model"].pop("device", None)  # provenance, not identity (ModelConfig.device)
        mitigation = self.mitigation.id_fields()
        if mitigation is None:
            d.pop("mitigation", None)
        else:
            d["mitigation"] = mitigation
        if self.method.kind == "lora":  # runs stored before methods existed keep their ids
            d.pop("method")
        if not self.method.uses_lora_section():
            d.pop("lora")
        text = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def method_label(self) -> str:
        """The method as studies group runs by it: the kind, and for ``lora``/``dora`` the named target set
        ``attention`` or ``mlp`` when the targets are exactly one of them (``lora-mlp``); any other list is
        plain ``lora``. A method's size (rank, blocks) is its P axis, not part of its label.

        >>> RunConfig(lora={"target_modules": "mlp"}).method_label, RunConfig(method={"kind": "ia3"}).method_label
        ('lora-mlp', 'ia3')
        """
        kind = self.method.kind
        if not self.method.uses_lora_section():
            return kind
        return kind + target_suffix(self.lora.target_modules)

    @property
    def size(self) -> int:
        """The method's size setting, the knob that moves its P: the LoRA rank (``lora``, ``dora``), the trained
        blocks (``full``; 0 for every weight), 0 for ``ia3``."""
        kind = self.method.kind
        return self.lora.rank if self.method.uses_lora_section() else (self.method.blocks or 0) if kind == "full" else 0

    def eval_schedule(self) -> tuple[int, ...]:
        """Steps at which the run is measured: 0, then log-spaced up to ``train.steps``."""
        t = self.train
        if t.eval_steps is not None:
            return tuple(sorted({0, *(s for s in t.eval_steps if s <= t.steps), t.steps}))
        return log_schedule(t.steps, t.n_evals)


class FitConfig(_Frozen):
    min_step: int = Field(1, ge=1)
    """Exclude steps below this from law fits (the paper excluded the first 50)."""
    laws: tuple[str, ...] | None = None
    n_boot: int = Field(1000, ge=0)
    """Parameter draws kept per fit (bands of the fitted mean); the intervals are t intervals (laws/intervals.py)."""
    delta: float | Literal["auto"] = "auto"
    """Huber threshold on log residuals; ``auto``: 1.345 x their robust sd (laws/fit.py)."""

    @field_validator("delta")
    @classmethod
    def _delta_positive(cls, v: float | str) -> float | str:
        if v != "auto" and not v > 0:
            raise ValueError("must be 'auto' or a positive number")
        return v


class ProbesConfig(_Frozen):
    enabled: bool = False
    """Probe the base and every run's final adapter at the end of ``forgetscale run``."""
    kinds: tuple[Literal["knowledge", "reasoning", "safety"], ...] = ("knowledge", "reasoning", "safety")
    max_items: int | None = Field(None, ge=1)
    """Use the first N items of each probe set (None: all)."""
    max_new_tokens: int = Field(32, ge=1)
    batch_size: int = Field(8, ge=1)
    runs: Literal["all", "largest_rank"] = "all"
    """Which runs ``forgetscale run`` probes: all, or per dataset the largest rank (the most forgetting
    a study has, where lost agreement with the base shows first: more items for the same time)."""


class ExecutorConfig(_Frozen):
    """Where a study's runs execute. Not part of any run's config: it never changes a run id."""

    kind: Literal["local", "processes", "ray"] = "local"
    """``local``: one run after another here. ``processes``: ``workers`` runs at once in worker processes sharing
    the threads (docs/scale-out.md: rows equal to float rounding). ``ray``: Ray tasks (``forgetscale[ray]``)."""
    workers: int = Field(2, ge=1)
    """``processes``: how many runs train at once (each worker loads its own copy of the model)."""
    address: str | None = None
    """Ray cluster to join (``auto``, ``HOST:PORT``); None: a local cluster (or this process's Ray session)."""
    cpus_per_run: float = Field(1.0, gt=0)
    gpus_per_run: float | None = Field(None, ge=0)
    """None: 1 when the cluster has GPUs, else 0."""
    memory_per_run: float | None = Field(None, gt=0)
    """GiB of memory Ray reserves for each run (scheduling only); None: no reservation."""
    max_retries: int = Field(2, ge=0)
    """How often a run whose worker was lost (killed, out of memory, node gone) is started again."""


class StudyConfig(RunConfig):
    name: str = "study"
    sweep: dict[str, tuple[Any, ...]] = Field(default_factory=dict)
    """Axes of the grid: a dotted key and its values; or a *bundle*: a name (``method``) whose values are
    mappings of dotted keys, each set together (a method with its own learning rate:
    ``{method.kind: full, method.blocks: 2, train.lr: 1e-4}``)."""
    sweep_exclude: tuple[dict[str, Any], ...] = ()
    """Combinations of the sweep to leave out: each entry assigns values to some sweep axes, and a
    combination that agrees with every assignment of an entry is not run (``[{lora.rank: 4,
    mitigation.kind: kl}]``: no ``kl`` run at rank 4)."""
    fit: FitConfig = FitConfig()
    probes: ProbesConfig = ProbesConfig()
    executor: ExecutorConfig = ExecutorConfig()

    @field_validator("sweep")
    @classmethod
    def _nonempty_axes(cls, v: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"sweep axis {key!r} has no values")
        return v

    @field_validator("sweep_exclude")
    @classmethod
    def _exclusions_name_axes(cls, v: tuple[dict[str, Any], ...], info: ValidationInfo) -> tuple[dict[str, Any], ...]:
        axes = set(info.data.get("sweep") or {})  # declared before sweep_exclude, so validated already
        for entry in v:
            unknown = sorted(set(entry) - axes)
            if not entry or unknown:
                raise ValueError(f"entry {entry}: {unknown or 'no key'} not among the sweep's axes {sorted(axes)}")
        return v

    def probed_runs(self) -> list[RunConfig]:
        """The runs ``forgetscale run`` probes, as ``probes.runs`` selects them, in sweep order."""
        runs = self.runs()
        if self.probes.runs == "all":
            return runs
        def _largest(r: RunConfig) -> int:  # sizes in the order of P: a full fine-tune of every weight above all
            return r.size or (1 << 30 if r.method.kind == "full" else 0)

        top: dict[tuple[str, str], int] = {}
        for r in runs:
            key = (r.data.dataset, r.method_label)
            top[key] = max(top.get(key, 0), _largest(r))
        return [r for r in runs if _largest(r) == top[(r.data.dataset, r.method_label)]]

    def base_run(self) -> RunConfig:
        return RunConfig(**{k: getattr(self, k) for k in RunConfig.model_fields})

    def runs(self) -> list[RunConfig]:
        """Expand the sweep (a Cartesian product, in the order written, less ``sweep_exclude``) into run configs."""
        base = self.base_run().model_dump(mode="json")
        keys = list(self.sweep)
        out = []
        for combo in itertools.product(*(self.sweep[k] for k in keys)):
            point = dict(zip(keys, combo, strict=True))
            if any(all(point[k] == v for k, v in entry.items()) for entry in self.sweep_exclude):
                continue
            d = json.loads(json.dumps(base))
            for k, v in zip(keys, combo, strict=True):
                for key, value in (v.items() if isinstance(v, dict) else [(k, v)]):  # a bundle sets its keys
                    _set_dotted(d, key, value)
            out.append(validate(RunConfig, d, f"sweep {dict(zip(keys, combo, strict=True))}"))
        # combinations that differ only in a section the method ignores (lora.rank for ia3) are one run
        first: dict[str, RunConfig] = {}
        for r in out:
            first.setdefault(r.run_id, r)
        return list(first.values())




def canonical_json(cfg: BaseModel) -> str:
    return json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def log_schedule(steps: int, n: int) -> tuple[int, ...]:
    """Step 0 plus up to ``n - 1`` distinct, roughly log-spaced steps ending at ``steps``.

    >>> log_schedule(32, 6)
    (0, 2, 4, 8, 16, 32)
    >>> log_schedule(3, 6)
    (0, 1, 2, 3)
    """
    k = n - 1
    picked: set[int] = set()
    for i in range(k):
        # geometric from steps / 2**(k-1) up to steps, rounded; duplicates dropped
        picked.add(max(1, round(steps / 2 ** (k - 1 - i))))
    if len(picked) < k:  # short runs: fill from the start so there are still k points
        picked |= set(range(1, min(steps, k) + 1))
        picked = set(sorted(picked)[-k:]) | {steps}
    return (0, *sorted(s for s in picked if s <= steps))


def load_config(
    path: str | Path | None = None,
    preset: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> StudyConfig:
    """Build a validated study config: preset, then the YAML file, then ``key=value`` overrides.

    Raises:
        UserError: unknown preset/key, wrong type, unreadable file; the message names it.
    """
    from forgetscale.presets import PRESETS  # the presets are built from this module's classes

    if preset is None:
        preset = "default" if path is None else None
    data: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
        data = json.loads(json.dumps(PRESETS[preset]))
    source = f"preset {preset!r}" if preset else "defaults"
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"study file not found: {path}") from None
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not a YAML study file (not UTF-8 text, byte {e.start})") from None
        except OSError as e:
            raise UserError(f"cannot read study file {path}: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise UserError(f"{path}: not valid YAML ({e})".replace("\n", " ")) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UserError(f"{path}: a study file must be a mapping of keys, not {type(loaded).__name__}")
        if "sweep" not in loaded:  # a value the file sets explicitly is no longer swept
            _drop_axes(data, _flat_keys(loaded))
        _merge(data, loaded)
        if "sweep" in loaded and "sweep_exclude" not in loaded:  # the preset's exclusions, on axes kept
            axes = set(data.get("sweep") or {})
            data["sweep_exclude"] = [e for e in data.get("sweep_exclude") or () if set(e) <= axes]
        source = str(path)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        if key.startswith("sweep."):
            data.setdefault("sweep", {})[key[len("sweep.") :]] = value
        else:
            _drop_axes(data, [key])  # --set train.x=v beats a sweep over train.x
            _set_dotted(data, key, value)
        source = f"{source} with --set"
    study = validate(StudyConfig, data, source)
    # expanding once here surfaces bad sweep keys/values before anything is written
    study.runs()
    return study


def validate(cls: type[BaseModel], data: dict[str, Any], source: str) -> Any:
    """``cls`` built from ``data``; a validation error becomes one line naming ``source`` and the key."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise UserError(f"{source}: {_describe(e, cls)}") from None


def _describe(e: ValidationError, cls: type[BaseModel]) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        parent = err["loc"][:-1]
        valid = _fields_at(cls, parent)
        return f"unknown key {loc!r} (valid keys here: {', '.join(valid)})"
    return f"{loc}: {err['msg']} (got {err.get('input')!r})"


def _fields_at(cls: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    for part in path:
        ann = cls.model_fields[str(part)].annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        cls = ann
    return list(cls.model_fields)


def _flat_keys(d: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out.extend(_flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"])
    return out


def _drop_axes(data: dict[str, Any], keys: list[str]) -> None:
    sweep = data.get("sweep")
    if isinstance(sweep, dict):
        for k in keys:
            sweep.pop(k, None)
        for axis, values in list(sweep.items()):  # a bundle loses the keys set explicitly, too
            if isinstance(values, list | tuple) and any(isinstance(v, dict) for v in values):
                sweep[axis] = [{b: x for b, x in v.items() if b not in keys} if isinstance(v, dict) else v
                               for v in values]  # fmt: skip
    exclude = data.get("sweep_exclude")
    if isinstance(exclude, list | tuple):  # an exclusion on a dropped axis no longer names a combination
        data["sweep_exclude"] = [e for e in exclude if not (isinstance(e, dict) and set(e) & set(keys))]


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if k != "sweep" and isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v  # a sweep in the study file replaces the preset's whole grid


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for p in parents:
        nxt = d.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise UserError(f"cannot set {key!r}: {p!r} is not a section")
        d = nxt
    d[last] = value
