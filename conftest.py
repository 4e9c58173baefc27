"""Set-up for the whole suite, doctests in ``src`` included: no network, and a module whose import needs an
optional dependency that is not installed (Ray, lm-eval) is left out of doctest collection."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

# Set before transformers/huggingface_hub are imported anywhere: the suite never touches the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

SRC = Path(__file__).parent / "src"


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """Skip a package module only when importing it fails for want of a third-party package."""
    if collection_path.suffix != ".py" or SRC not in collection_path.parents:
        return None
    name = ".".join(collection_path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        return True if e.name and e.name.split(".")[0] != "forgetscale" else None
    except Exception:  # any other failure: let the doctest collector report it against this module
        return None
    return None
