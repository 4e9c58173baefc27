"""Golden numbers for the forgetting metrics: 3 target positions, a 4-word vocabulary, worked out by hand.

The invariant tests (KL >= 0, KL = 0 at identity, CE = H + KL) pass for a metric normalised over the wrong
axis, or with base and fine-tuned swapped; these values do not. Reference values were computed with
mpmath at 30 digits from the logits below: ``log p = z - logsumexp(z)`` per row, then
``KL_t = sum_v p_b(v) (log p_b(v) - log p_ft(v))``, ``CE_t = -sum_v p_b(v) log p_ft(v)``,
``top1_t = -log p_ft(argmax p_b)``, ``data_t = -log p_ft(x_t)``. For instance the fine-tuned row 0,
logits (1, 1, 0, 0), has ``logsumexp = 1 + log 2 + log(1 + 1/e)``, so ``top1_0 = -log p_ft(0) =
log 2 + log(1 + 1/e) = 1.00640886807817`` and ``data_0 = -log p_ft(2) = 1 + top1_0``.
"""

from __future__ import annotations

import pytest
import torch

from forgetscale.forgetting import position_metrics
from forgetscale.forward import logprobs

BASE_LOGITS = [[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 3.0], [1.0, -2.0, 0.5, 0.0]]
TUNED_LOGITS = [[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 2.0], [2.0, -1.0, 0.0, 0.0]]
TARGETS = [2, 1, 3]  # the corpus' next tokens; argmax p_b is (0, 3, 0)
GOLDEN = {  # per position, 15 significant digits
    "forget_kl": (0.178074826124860, 0.181336736934659, 0.204006282995984),
    "forget_ce": (1.12561179010029, 0.710397531469892, 1.31452828612699),
    "base_entropy": (0.947536963975426, 0.529060794535233, 1.11052200313101),
    "forget_top1_ce": (1.00640886807817, 0.493811709072239, 0.277978369575558),
    "data_loss": (2.00640886807817, 1.49381170907224, 2.27797836957556),
}
MEAN_KL = 0.187805948685168
"""Token-weighted mean KL. A log-softmax over the positions instead of the vocabulary gives 0.2195, KL with
base and fine-tuned swapped 0.2111, base position t against fine-tuned t+1 (a lost shift) 1.475."""


def _metrics(logp: torch.Tensor, logq: torch.Tensor) -> dict[str, torch.Tensor]:
    top1 = logp.argmax(-1)
    m = position_metrics(logp, logq, top1, torch.tensor(TARGETS))
    m["base_entropy"] = -(logp.exp() * logp).sum(-1)
    return m


def test_metrics_on_exact_log_probs_equal_the_hand_computed_values():
    logp = torch.log_softmax(torch.tensor(BASE_LOGITS, dtype=torch.float64), -1)
    logq = torch.log_softmax(torch.tensor(TUNED_LOGITS, dtype=torch.float64), -1)
    m = _metrics(logp, logq)
    for name, want in GOLDEN.items():
        # float64 sums of 4 terms of magnitude < 4: rounding ~1e-15, the table's 15 digits ~1e-14
        assert m[name].tolist() == pytest.approx(want, rel=1e-13, abs=1e-13), name


def test_the_package_normalisation_of_fp32_logits_gives_the_golden_kl():
    # logits as a model returns them (fp32), normalised by the package's own log-softmax, which rounds each
    # log-prob to fp32 on purpose: |log p| < 3.8, so each is off by at most ulp(4)/2 = 2.4e-7 and each KL_t
    # (a p-weighted sum of differences of two such) by at most 4.8e-7. 1e-6 holds that with room and is
    # 20,000 times smaller than the 0.023 the nearest wrong normalisation above moves the mean.
    logp = logprobs(torch.tensor(BASE_LOGITS))
    logq = logprobs(torch.tensor(TUNED_LOGITS))
    m = _metrics(logp, logq)
    assert m["forget_kl"].tolist() == pytest.approx(GOLDEN["forget_kl"], abs=1e-6)
    assert float(m["forget_kl"].mean()) == pytest.approx(MEAN_KL, abs=1e-6)
    assert float(m["forget_ce"].mean()) == pytest.approx(sum(GOLDEN["forget_ce"]) / 3, abs=1e-6)
