"""The official evaluation harness's record layout (the Qwen2.5-Math harness the official RSD code vendors), beside
ours: every record carries the fields it writes, so its tools can re-grade our outputs and a problem-by-problem
diff against the official code's outputs is possible (rsd_jax.export, rsd_jax.compare).

Per problem the harness writes `idx` (the row's idx, else its position in the file), `question` (with the choices
of a multiple-choice set), `gt_cot` (the reference solution, "None" where the set has none), `gt` (the reference
answer), the dataset's own fields among HARNESS_ROW_FIELDS, then `code` (the responses, one per sample), `pred`
(the extracted answers), `report` (None for chain-of-thought prompts) and, once graded, `score` (one bool per
sample); the official RSD code adds `token_counts` (accepted draft tokens, target tokens, discarded draft tokens),
`turn_info` ([step, 1 = draft or 2 = target] per step) and `reward` (the draft step's PRM reward per step).
Greedy decoding has one sample: the lists hold one entry. Our own extraction and grading fill `pred` and `score`
(rsd_jax.data.datasets), so they can differ from the harness's in the form of an answer, never in its source.
"""

from __future__ import annotations

from typing import Any

#: the dataset fields the harness copies into each record, in its order (math_eval.py)
HARNESS_ROW_FIELDS = ("level", "type", "unit", "solution_type", "choices", "solution", "ques_type", "ans_type",
                      "answer_type", "dataset", "subfield", "filed", "theorem", "answer")
#: the fields it writes, in its order (the dataset's fields go between gt and code)
HEAD_FIELDS = ("idx", "question", "gt_cot", "gt")
TAIL_FIELDS = ("code", "pred", "report", "score")
RSD_FIELDS = ("token_counts", "turn_info", "reward")
#: the harness's prompt type of the paper's runs, in its output file names
PROMPT_TYPE = "qwen25-math-cot"


def gt_cot(row: dict | None) -> str:
    """The reference solution as the harness writes it (str(None) where the set has none)."""
    row = row or {}
    return str(row.get("solution") if "solution" in row else None).strip()


def harness_fields(item, text: str, steps: list[dict], accounting: dict, correct: bool | None) -> dict[str, Any]:
    """The official fields of one problem's record (see the module docstring). `item` an rsd_jax.data.item.Item;
    steps / accounting as a record holds them. Our fields keep their names: the dataset's own `answer` (which
    ours, the reference answer, would clash with) goes under dataset_fields with the other copied fields."""
    pred = item.extract(text) if item.extract is not None and text else None
    fields: dict[str, Any] = {"idx": item.idx, "gt_cot": gt_cot(item.row), "gt": item.answer,
                              "code": [text], "pred": ["" if pred is None else str(pred)], "report": [None],
                              "score": [bool(correct)] if correct is not None else []}
    row = item.row or {}
    fields["dataset_fields"] = {k: row[k] for k in HARNESS_ROW_FIELDS if k in row}
    if steps and any(s["source"] in ("draft", "target") for s in steps) and "draft_discarded_tokens" in accounting:
        fields["token_counts"] = [accounting.get("draft_accepted_tokens", 0), accounting.get("target_tokens", 0),
                                  accounting.get("draft_discarded_tokens", 0)]
        fields["turn_info"] = [[k, 1 if s["source"] == "draft" else 2] for k, s in enumerate(steps)]
        fields["reward"] = [s["reward"] for s in steps]
    return fields


def to_harness(record: dict) -> dict[str, Any]:
    """A record in the harness's JSONL layout and field order (the dataset's fields between gt and code)."""
    out = {k: record.get(k) for k in HEAD_FIELDS}
    out.update(record.get("dataset_fields") or {})
    out.update({k: record.get(k) for k in TAIL_FIELDS})
    out.update({k: record[k] for k in RSD_FIELDS if k in record})
    return out


def output_name(n_problems: int | None = None, seed: int = 0, temperature: float = 0.0) -> str:
    """The harness's output file name (math_eval.py): split, prompt type, number of test samples (-1: all), seed,
    temperature, start and end of the slice."""
    return (f"test_{PROMPT_TYPE}_{n_problems if n_problems else -1}_seed{seed}_t{temperature:.1f}"
            f"_s0_e{n_problems if n_problems else -1}.jsonl")


def metrics(records: list[dict], seconds: float) -> dict[str, Any]:
    """The harness's metrics file of one set (accuracy = mean score x 100, rounded to 0.1), with the official RSD
    code's token counts where the records have them."""
    scores = [bool(r["score"][0]) for r in records if r.get("score")]
    out: dict[str, Any] = {"num_samples": len(records), "num_scores": len(scores), "timeout_samples": 0,
                           "empty_samples": sum(1 for r in records if not (r.get("pred") or [""])[-1]),
                           "acc": round(100 * sum(scores) / len(scores), 1) if scores else 0.0,
                           "time_use_in_second": seconds,
                           "time_use_in_minite": f"{int(seconds // 60)}:{int(seconds % 60):02d}"}
    counts = [r["token_counts"] for r in records if "token_counts" in r]
    if counts:
        accepted, target, discarded = (sum(c[i] for c in counts) for i in range(3))
        out["acceptance_rate"] = accepted / (accepted + discarded) if accepted else 0
        out["num_draft_tokens"] = accepted + discarded
        out["num_target_tokens"] = target
    return out
