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
