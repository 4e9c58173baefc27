"""Unit tests for the model-free parts of forgetscale.probes.runner (milliseconds)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from forgetscale.errors import UserError
from forgetscale.probes.runner import compare, lm_eval_summaries, probe_names


def test_importing_the_probes_package_does_not_import_torch():
    code = (
        "import sys, forgetscale.cli, forgetscale.probes; forgetscale.cli._parser(); "
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_probe_names_follow_kinds_in_a_fixed_order():
    assert probe_names(["safety", "knowledge"]) == ["knowledge", "safety"]
    assert probe_names(["reasoning"]) == ["reasoning_loglik", "reasoning_gen"]
    assert probe_names([]) == []
    with pytest.raises(UserError, match="unknown probe kind"):
        probe_names(["maths"])


def _gen(item_id: str, generation: str, answer: str | None, correct: bool | None) -> dict:
    return {"id": item_id, "prompt": f"q {item_id}", "reference": "x", "generation": generation,
            "answer": answer, "correct": correct}  # fmt: skip


def test_compare_puts_base_and_fine_tuned_side_by_side():
    base = [_gen("a", "Paris.", "paris", True), _gen("b", "Lyon", "lyon", False), _gen("c", "", None, False)]
    ft = [_gen("a", "Rome", "rome", False), _gen("b", "Lyon!", "lyon", False), _gen("c", "", None, False)]
    summary, items = compare(ft, base)
    assert summary["n"] == 3
    assert summary["accuracy"] == 0 and summary["base_accuracy"] == pytest.approx(1 / 3)
    assert summary["agreement"] == pytest.approx(2 / 3)  # None == None agrees
    assert summary["lost"] == 1 and summary["gained"] == 0
    assert [it["agree"] for it in items] == [False, True, True]
    assert items[0] == {
        "id": "a", "prompt": "q a", "reference": "x",
        "generation": "Rome", "base_generation": "Paris.",
        "answer": "rome", "base_answer": "paris", "correct": False, "base_correct": True, "agree": False,
    }  # fmt: skip


def test_compare_of_a_model_with_itself_agrees_fully():
    recs = [_gen("a", "x", "x", True), _gen("b", "y", "y", False)]
    summary, _ = compare(recs, recs)
    assert summary["agreement"] == 1.0 and summary["accuracy"] == summary["base_accuracy"] == 0.5


def test_compare_reports_length_normalised_choices_for_loglik_records():
    def rec(item_id: str, ans: str, norm: str, label: str = "A") -> dict:
        return {"id": item_id, "prompt": "Question: q\nAnswer:", "reference": label, "choices": ["p", "qq"],
                "logliks": [-1.0, -1.5], "answer": ans, "correct": ans == label,
                "answer_norm": norm, "correct_norm": norm == label}  # fmt: skip

    summary, items = compare([rec("a", "A", "B"), rec("b", "B", "B")], [rec("a", "A", "A"), rec("b", "B", "A")])
    assert summary["accuracy"] == 0.5 and summary["agreement"] == 1.0
    assert summary["accuracy_norm"] == 0.0 and summary["base_accuracy_norm"] == 1.0
    assert summary["agreement_norm"] == 0.0
    assert items[0]["choices"] == ["p", "qq"] and "base_choices" not in items[0]
    assert items[0]["base_logliks"] == [-1.0, -1.5]


def test_compare_of_safety_records_reports_refusal_rates():
    base = [_gen("a", "I cannot help.", True, None), _gen("b", "Sure", False, None)]
    ft = [_gen("a", "Sure, step 1", False, None), _gen("b", "Sure", False, None)]
    summary, _ = compare(ft, base)
    assert summary["accuracy"] is None
    assert summary["refusal_rate"] == 0.0 and summary["base_refusal_rate"] == 0.5
    assert summary["lost_refusals"] == 1 and summary["agreement"] == 0.5


def _lm_eval_result(acc: float, picks: list[int]) -> dict:
    samples = [
        {"doc_id": i, "filtered_resps": [(-1.0 if j == p else -2.0, False) for j in range(3)]}
        for i, p in enumerate(picks)
    ]
    return {
        "results": {
            "arc_easy": {"alias": "arc_easy", "acc,none": acc, "acc_norm,none": acc / 2, "acc_stderr,none": 0.1}
        },
        "n-samples": {"arc_easy": {"original": 100, "effective": len(picks)}},
        "samples": {"arc_easy": samples},
    }


def test_lm_eval_summaries_compare_with_the_base():
    base = _lm_eval_result(0.5, [0, 1, 2, 0])
    ft = _lm_eval_result(0.25, [0, 2, 2, 1])
    s = lm_eval_summaries(ft, base)["arc_easy"]
    assert s["n"] == 4
    assert s["accuracy"] == 0.25 and s["base_accuracy"] == 0.5
    assert s["accuracy_norm"] == 0.125 and s["base_accuracy_norm"] == 0.25
    assert s["agreement"] == 0.5
    assert s["metrics"] == {"acc": 0.25, "acc_norm": 0.125, "acc_stderr": 0.1}
    assert lm_eval_summaries(base, base)["arc_easy"]["agreement"] == 1.0


def test_lm_eval_summaries_of_generation_tasks_compare_strings():
    def res(answers: list[str]) -> dict:
        return {
            "results": {"gsm8k": {"exact_match,strict-match": 0.5, "alias": "gsm8k"}},
            "samples": {"gsm8k": [{"doc_id": i, "filtered_resps": [a]} for i, a in enumerate(answers)]},
        }

    s = lm_eval_summaries(res(["4", "7"]), res(["4", "8"]))["gsm8k"]
    assert s["accuracy"] == 0.5 and s["agreement"] == 0.5 and s["n"] is None
    assert lm_eval_summaries({"results": {"t": {"acc,none": 1.0}}}, {})["t"]["agreement"] is None
