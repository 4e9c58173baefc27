"""The default study's `self` corpus ships with the package, so it is the same on every machine."""

from __future__ import annotations

from forgetscale.config import ModelConfig, StudyConfig
from forgetscale.data.corpus import sample_self, shipped_prompts
from forgetscale.models import file_digest, resolve
from forgetscale.presets import PRESETS


def test_default_corpus_is_shipped(tmp_path):
    study = StudyConfig.model_validate(PRESETS["default"])
    kind, path = resolve(ModelConfig())
    assert kind == "builtin" and path is not None
    # no model and an empty cache: only the shipped file can answer (sampling would need the model)
    pairs = sample_self(study.forgetting, None, None, "sha256:" + file_digest(path), tmp_path)
    assert [p for p, _ in pairs] == shipped_prompts()[: study.forgetting.n_prompts]
    assert all(r.strip() for _, r in pairs)
