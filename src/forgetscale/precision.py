"""Training precision ``auto``: the faster of fp32 and bf16 on this machine, measured, cached per machine.

CPU flags do not say which is faster: on an Intel Xeon with AVX512-BF16 (no
AMX) a bf16 matmul ran at 154 GFLOP/s against 277 for fp32 and bf16 training at
0.71x fp32, while on an AMD EPYC with AVX512-BF16 bf16 ran 4x the fp32 matmul
rate and trained 1.9x faster. So ``auto`` times the kernel a LoRA step spends
its time in (a frozen linear layer, forward and input-gradient backward) in
both precisions, side by side, and keeps the answer in the cache directory
under a key naming the machine. A study resolves ``auto`` once, when it is
created, and records the result (:func:`pin_for_study`).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgetscale.fsutil import atomic_write
from forgetscale.models import cache_dir
from forgetscale.store import open_store

if TYPE_CHECKING:
    from forgetscale.config import StudyConfig

BF16_MARGIN = 1.15
"""bf16 must time at least this much faster than fp32 to be chosen: it changes the trajectory (and with it
every number) relative to fp32, and the casts mixed precision adds around the matmuls are not in the
micro-benchmark."""


def choose(fp32_seconds: float, bf16_seconds: float, margin: float = BF16_MARGIN) -> str:
    """The precision to train in, from the two timings of the same work.

    >>> choose(1.0, 0.5), choose(1.0, 0.95), choose(1.0, 1.4)
    ('bf16', 'fp32', 'fp32')
    """
    return "bf16" if fp32_seconds >= margin * bf16_seconds else "fp32"


def resolve(precision: str, cache: Path | None = None) -> str:
    """``auto`` -> ``fp32`` or ``bf16`` as measured on this machine; any other value unchanged."""
    if precision != "auto":
        return precision
    return measured(cache_dir() if cache is None else cache)


def pin_for_study(study: StudyConfig, out: Path, cache: Path | None = None) -> StudyConfig:
    """``study`` with ``train.precision: auto`` replaced by a concrete precision, once per study.

    The value recorded when the study in ``out`` was created wins; a new study
    takes this machine's measured choice (:func:`resolve`). So run ids, resume
    and the numbers do not depend on the machine a study resumes on.
    """
    swept = "train.precision" in study.sweep
    if study.train.precision != "auto" and not (swept and "auto" in study.sweep["train.precision"]):
        return study
    recorded = None
    if (out / "study.sqlite").is_file():
        with open_store(out, create=False) as store:
            recorded = ((store.get_meta("study") or {}).get("train") or {}).get("precision")
    if recorded not in ("fp32", "bf16"):
        recorded = resolve("auto", cache)
    update: dict[str, Any] = {}
    if study.train.precision == "auto":
        update["train"] = study.train.model_copy(update={"precision": recorded})
    if swept:
        axis = tuple(recorded if v == "auto" else v for v in study.sweep["train.precision"])
        update["sweep"] = {**study.sweep, "train.precision": tuple(dict.fromkeys(axis))}
    return study.model_copy(update=update)


def measured(cache: Path) -> str:
    """The cached choice for this machine, measuring it first when there is none."""
    import torch

    if torch.backends.mps.is_available() or (torch.cuda.is_available() and not torch.cuda.is_bf16_supported()):
        return "fp32"
    path = cache / "precision.json"
    key = machine_key()
    known = _read(path)
    if isinstance(known.get(key), dict) and known[key].get("choice") in ("fp32", "bf16"):
        return known[key]["choice"]
    fp32_s, bf16_s = time_kernels()
    entry = {"choice": choose(fp32_s, bf16_s), "fp32_seconds": fp32_s, "bf16_seconds": bf16_s, "at": time.time()}
    _write(path, {**_read(path), key: entry})
    return entry["choice"]


def kernel_record(cache: Path) -> dict[str, Any] | None:
    """This machine's cached measurement (choice, fp32_seconds, bf16_seconds), or None if not measured yet."""
    entry = _read(cache / "precision.json").get(machine_key())
    return entry if isinstance(entry, dict) and isinstance(entry.get("fp32_seconds"), float) else None


def machine_key() -> str:
    """What the answer depends on: the device, its thread count, torch's version."""
    import torch

    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = f"{_cpu_model()} x{torch.get_num_threads()}"
    return f"{device} | torch {torch.__version__}"


def time_kernels(m: int = 512, k: int = 576, n: int = 1536, reps: int = 3, rounds: int = 3) -> tuple[float, float]:
    """Best seconds per frozen-linear forward + input-gradient backward, in fp32 and under bf16 autocast.

    The sizes are a SmolLM2 MLP projection over a 4 x 128-token batch. Rounds
    alternate between the precisions so that a neighbour's load hits both; a
    plain answer (a factor of 2) ends the measurement early.
    """
    import torch
    import torch.nn.functional as F

    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device="cpu").manual_seed(0)
    w = torch.randn(n, k, generator=gen).to(device)
    x = torch.randn(m, k, generator=gen).to(device).requires_grad_(True)

    def step(bf16: bool) -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            y = F.linear(x, w)
        y.float().sum().backward()
        x.grad = None

    best = {False: float("inf"), True: float("inf")}
    for bf16 in (False, True):  # warm-up: kernel selection, allocations
        step(bf16)
    for _ in range(rounds):
        for bf16 in (False, True):
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(reps):
                step(bf16)
            if device == "cuda":
                torch.cuda.synchronize()
            best[bf16] = min(best[bf16], (time.perf_counter() - t) / reps)
        if max(best.values()) > 2 * min(best.values()):  # plainly decided (emulated bf16 is ~15x slower)
            break
    return best[False], best[True]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent or damaged: it is a cache, measure again
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=1))
