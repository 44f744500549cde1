"""RSD with a perfect PRM on the embedded task: what a better reward model could still buy.

The exact step checker (`arith.check_steps`) stands in for the PRM: a draft step is accepted iff it is correct
given the steps before it, otherwise the target writes that step. This is the lower bound on RSD's cost for a
given draft and target, next to which the learned PRM's measured sweep shows how much of RSD's compute goes to
the PRM's errors (correct steps rejected, wrong steps accepted).

The loop runs on the host one step per round, each round one batched `generate` of one step per unfinished
problem. Its accounting follows the jitted loop's useful FLOPs (`rsd_jax.flops.span_flops`; the LM head only
where a model writes): the draft reads every committed token and writes every proposal, rejected ones included;
the PRM reads the same tokens in its view (BOS first, so one position later) and is charged as the learned PRM
would be; the target reads everything up to the end of the last step it writes. The checker costs nothing.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rsd_jax import flops
from rsd_jax.api import generate
from rsd_jax.engine import Engine, RSDModels
from rsd_jax.methods import BY_NAME
from rsd_jax.results import target_only_flops
from rsd_jax.data import arith
from rsd_jax.decoding.spec import DecodeSpec


@dataclasses.dataclass
class Trajectory:
    steps: list[str] = dataclasses.field(default_factory=list)  # committed steps (no delimiter)
    sources: list[str] = dataclasses.field(default_factory=list)  # "draft" or "target", per step
    rejected: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (step index, the draft's proposal)


def _first_steps(engine: Engine, method: str, prompts: list[str], questions: list[str], spec: DecodeSpec,
                 batch_size: int) -> list[str]:
    """The first step `method` writes after each prompt ("" when it writes none)."""
    out = []
    for s in range(0, len(prompts), batch_size):
        out += generate(engine, prompts[s:s + batch_size], method=BY_NAME[method](), decoding=spec,
                        questions=questions[s:s + batch_size])
    return [(arith.split_steps(r.text) or [""])[0] for r in out]


def decode(engine: Engine, problems: list[arith.Problem], spec: DecodeSpec, batch_size: int = 100,
           ) -> list[Trajectory]:
    """RSD with the exact checker as the PRM, greedy, until each problem has its answer step or max_steps."""
    one_step = spec.replace(max_steps=1, speculative_gamma=0, budget=False, online_budget=False)
    runs = [Trajectory() for _ in problems]
    active = list(range(len(problems)))
    while active:
        prompts = [arith.format_prompt(problems[i]) + "".join(s + arith.DELIMITER for s in runs[i].steps)
                   for i in active]
        questions = [problems[i].question for i in active]
        proposals = _first_steps(engine, "draft", prompts, questions, one_step, batch_size)
        rejected = []
        for j, (i, step) in enumerate(zip(active, proposals)):
            run = runs[i]
            if arith.check_steps(problems[i], run.steps + [step])[-1]:
                run.steps.append(step), run.sources.append("draft")
            else:
                run.rejected.append((len(run.steps), step))
                rejected.append(j)
        if rejected:
            written = _first_steps(engine, "target", [prompts[j] for j in rejected],
                                   [questions[j] for j in rejected], one_step, batch_size)
            for j, step in zip(rejected, written):
                runs[active[j]].steps.append(step), runs[active[j]].sources.append("target")
        active = [i for i in active if len(runs[i].steps) <= problems[i].level
                  and len(runs[i].steps) < spec.max_steps]
    return runs


def useful_flops(models: RSDModels, problem: arith.Problem, run: Trajectory) -> dict[str, float]:
    """Useful FLOPs of one trajectory by model, and the target-only FLOPs of the same tokens."""
    tok = models.tokenizer
    ends = [len(tok.encode(arith.format_prompt(problem)))]
    for step in run.steps:
        ends.append(ends[-1] + len(tok.encode(step + arith.DELIMITER)))
    draft_cfg, prm_cfg, target_cfg = models.draft.config, models.prm.config, models.target.config
    by_target = sum(ends[k + 1] - ends[k] for k, source in enumerate(run.sources) if source == "target")
    cost = {"draft": float(flops.span_flops(draft_cfg, 0, ends[-1], with_head=False)
                           + (ends[-1] - ends[0] - by_target) * flops.head_flops_per_token(draft_cfg)),
            "prm": float(flops.span_flops(prm_cfg, 0, ends[-1] + 1)), "target": 0.0}
    for k, proposal in run.rejected:
        n = len(tok.encode(proposal + arith.DELIMITER))
        cost["draft"] += float(flops.span_flops(draft_cfg, ends[k], n))
        cost["prm"] += float(flops.span_flops(prm_cfg, ends[k] + 1, n))
    written = [k for k, source in enumerate(run.sources) if source == "target"]
    if written:  # it reads everything up to its last step, and writes its own steps
        cost["target"] = float(flops.span_flops(target_cfg, 0, ends[written[-1] + 1], with_head=False)
                               + by_target * flops.head_flops_per_token(target_cfg))
    cost["target_only"] = target_only_flops(models.target, ends[0], ends[-1])
    return cost


def summarize(problems: list[arith.Problem], runs: list[Trajectory], costs: list[dict[str, float]]) -> dict:
    """Accuracy, FLOPs relative to target-only (total and by model), and how often the target wrote."""
    target_only = sum(c["target_only"] for c in costs)
    parts = {m: sum(c[m] for c in costs) / target_only for m in ("draft", "prm", "target")}
    steps = sum(len(r.sources) for r in runs)
    return {"accuracy": float(np.mean([arith.is_correct(p, arith.DELIMITER.join(r.steps))
                                       for p, r in zip(problems, runs)])),
            "flops_vs_target_only": sum(parts.values()), "flops_by_model": parts,
            "draft_acceptance": sum(r.sources.count("draft") for r in runs) / max(steps, 1),
            "problems_with_target_steps": float(np.mean([("target" in r.sources) for r in runs]))}
