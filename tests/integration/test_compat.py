"""The key/value-cache argument follows the model's own forward signature (transformers 4.x and 5.x)."""

from types import SimpleNamespace

from forgetscale.compat import cache_kwargs, output_cache


class NewStyle:
    def forward(self, input_ids=None, cache=None, use_cache=None): ...


class OldStyle:
    def forward(self, input_ids=None, past_key_values=None, use_cache=None): ...


class PeftLike:
    """A wrapper whose forward takes **kwargs: the name comes from the model it wraps."""

    def __init__(self, base):
        self.base = base

    def get_base_model(self):
        return self.base

    def forward(self, *args, **kwargs): ...


def test_cache_kwarg_follows_signature():
    c = object()
    assert cache_kwargs(NewStyle(), c) == {"cache": c}
    assert cache_kwargs(OldStyle(), c) == {"past_key_values": c}
    assert cache_kwargs(PeftLike(OldStyle()), c) == {"past_key_values": c}
    assert cache_kwargs(PeftLike(NewStyle()), c) == {"cache": c}


def test_output_cache_reads_either_field():
    c = object()
    assert output_cache(SimpleNamespace(cache=c)) is c
    assert output_cache(SimpleNamespace(past_key_values=c)) is c
    assert output_cache(SimpleNamespace(cache=None, past_key_values=c)) is c
    assert output_cache(SimpleNamespace(logits=1)) is None


def test_installed_transformers_forward_accepts_the_chosen_name(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    out = model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True)
    cache = output_cache(out)
    assert cache is not None
    more = model(input_ids=torch.tensor([[4]]), use_cache=True, **cache_kwargs(model, cache))
    assert more.logits.shape[1] == 1 and output_cache(more).get_seq_length() == 4


def test_a_rejected_mask_does_not_corrupt_the_shared_prefix_cache(tiny_model):
    """A forward that runs its layers (appending to the KV cache) and only then rejects the boolean
    ``logits_to_keep`` mask must not leave the retry a cache that already holds the batch."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from forgetscale.compat import _MASK_SUPPORT
    from forgetscale.data.encode import Sequence
    from forgetscale.forward import target_logprobs

    inner = AutoModelForCausalLM.from_pretrained(tiny_model).eval()

    class RejectsMaskLate(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids=None, attention_mask=None, logits_to_keep=0, cache=None, use_cache=None):
            kw = cache_kwargs(self.inner, cache) if cache is not None else {}
            if isinstance(logits_to_keep, torch.Tensor):
                self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache, **kw)
                raise TypeError("logits_to_keep must be an int")
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep,
                              use_cache=use_cache, **kw)  # fmt: skip

    prefix = list(range(5, 17))  # 12 shared tokens: above MIN_SHARED_PREFIX, so the cache is used
    seqs = [
        Sequence(tuple(prefix + tail), tuple([False] * len(prefix) + [True] * len(tail)))
        for tail in ([40, 41, 42, 43], [50, 51, 52], [60, 61, 62, 63, 64])
    ]
    rejecting = RejectsMaskLate()
    got = {tuple(r): q for r, q, _ in target_logprobs(rejecting, seqs, batch_size=3)}
    assert _MASK_SUPPORT[RejectsMaskLate] is False  # the fallback path really ran
    # the reference: the plain model, every sequence computed in full (no prefix cache)
    want = {tuple(r): q for r, q, _ in target_logprobs(inner, seqs, batch_size=3, min_prefix=10**9)}
    assert got.keys() == want.keys()
    for rows in want:
        # same arithmetic up to the cache split and padding: fp32 rounding (~1e-6); the corrupted
        # cache gave errors up to 0.044
        np.testing.assert_allclose(got[rows].numpy(), want[rows].numpy(), atol=1e-4)
    # the second batch reuses the learnt answer (no trial), and is still right
    again = {tuple(r): q for r, q, _ in target_logprobs(rejecting, seqs, batch_size=3)}
    for rows in want:
        np.testing.assert_allclose(again[rows].numpy(), want[rows].numpy(), atol=1e-4)
