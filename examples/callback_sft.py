"""Forgetting inside your own training: a plain transformers Trainer + PEFT LoRA, one callback added.

Fine-tunes the embedded SmolLM2-135M-Instruct for 24 steps (a few minutes on a laptop CPU), prints
forgetting against the base at every evaluation, saves the adapter, and prints the
`forgetscale forgetting` command that measures the saved adapter again from scratch.

    python examples/callback_sft.py [OUT_DIR]
"""

import sys
from pathlib import Path

from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

import forgetscale
from forgetscale.data.synthetic import generate  # stand-in for your own fine-tuning data

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/callback-sft")
model, tok = forgetscale.load_base("smollm2-135m-instruct")
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
enc = tok([e["text"] for e in generate("news", 72, seed=0)], truncation=True, max_length=128)
data = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
args = TrainingArguments(
    output_dir=str(out), max_steps=24, per_device_train_batch_size=4, learning_rate=1e-3,
    eval_strategy="steps", eval_steps=8, eval_on_start=True, logging_steps=8, save_strategy="no",
    report_to=[], disable_tqdm=True,
)
forgetting = forgetscale.ForgettingCallback(tok, "self")  # measures at every evaluation above
trainer = Trainer(
    model=model, args=args, train_dataset=data.select(range(64)), eval_dataset=data.select(range(64, 72)),
    data_collator=DataCollatorForLanguageModeling(tok, mlm=False), callbacks=[forgetting],
)
trainer.train()

model.save_pretrained(out / "adapter")
last = forgetting.history[-1]
print(f"\nbase reference: {forgetting.base_source}")
print(f"last measurement, step {last['step']}: forget_ce {last['forget_ce']:.6f}  forget_kl {last['forget_kl']:.6f}")
print("the same number from the saved adapter, measured from scratch:")
print(f"  forgetscale forgetting --base smollm2-135m-instruct --adapter {out / 'adapter'} --data self")
