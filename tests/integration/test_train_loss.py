"""The targets-only training loss is the stock Trainer's loss: same value, same gradients."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from forgetscale import train
from forgetscale.config import LoraConfig
from forgetscale.data.encode import IGNORE_INDEX


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 300, (3, 10), generator=g)
    attn = torch.ones_like(ids)
    attn[1, 7:] = 0  # right padding
    labels = ids.clone()
    labels[0, :4] = IGNORE_INDEX  # a prompt that is not trained on
    labels[2, :9] = IGNORE_INDEX  # only the last token scored
    labels[attn == 0] = IGNORE_INDEX
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


@pytest.mark.parametrize("num_items", [None, 11])
def test_targets_only_loss_equals_the_stock_loss(tiny_model, tmp_path, num_items):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    peft_model = train.attach_lora(model, LoraConfig(rank=2), seed=0)
    for name, p in peft_model.named_parameters():  # a moved adapter, so its gradients are not trivial
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    results = []
    for cls in (Trainer, train.TargetsOnlyTrainer):
        trainer = cls(model=peft_model, args=args)
        peft_model.zero_grad()
        loss = trainer.compute_loss(peft_model, _batch(), num_items_in_batch=num_items)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in peft_model.named_parameters() if p.requires_grad}
        results.append((float(loss.detach()), grads))
    (stock, g_stock), (ours, g_ours) = results
    assert ours == pytest.approx(stock, rel=1e-6)
    assert g_ours.keys() == g_stock.keys() and g_ours
    for n in g_stock:
        torch.testing.assert_close(g_ours[n], g_stock[n], rtol=1e-5, atol=1e-7)


def test_kl_term_is_the_kl_to_the_disabled_adapter(tiny_model, tmp_path):
    """``kl_weight``: loss = (CE + lambda * sum KL(p_base || p_ft)) / n over the labelled positions, the base
    read from the same model with its adapter disabled; the base weights get no gradient."""
    import torch.nn.functional as F

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    peft_model = train.attach_lora(model, LoraConfig(rank=2), seed=0)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = train.TargetsOnlyTrainer(model=peft_model, args=args)
    batch = _batch()
    plain = float(trainer.compute_loss(peft_model, batch).detach())
    trainer.kl_weight = 3.0
    loss = trainer.compute_loss(peft_model, batch)
    loss.backward()
    with torch.no_grad():
        mask = batch["labels"][:, 1:] != IGNORE_INDEX
        ft = F.log_softmax(peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                           .logits[:, :-1][mask].float(), -1)  # fmt: skip
        with peft_model.disable_adapter():
            base = F.log_softmax(peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                                 .logits[:, :-1][mask].float(), -1)  # fmt: skip
        kl = (base.exp() * (base - ft)).sum(-1).mean()
    assert kl > 1e-4  # the moved adapter is not the base
    # the same sums in another order (masked logits vs full logits then masked): fp32 rounding, 1e-5 relative
    assert float(loss.detach()) == pytest.approx(plain + 3.0 * float(kl), rel=1e-5)
    assert all(p.grad is None for n, p in peft_model.named_parameters() if "lora_" not in n)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in peft_model.named_parameters() if "lora_A" in n)
