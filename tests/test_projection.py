"""The projection to accelerators: the roofline's limits, the schedule simulator's invariants, the projection's
monotonicity, and the projection of measured pass counts (rsd_jax.roofline, step_statistics, pass_trace,
projection). Host-side numpy only."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Mapping

import pytest

from rsd_jax import flops, pass_trace, projection, roofline, step_statistics
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.errors import ConfigError
from rsd_jax.models import catalog
from rsd_jax.step_statistics import RowScript

QWEN_7B = catalog.model_config("Qwen2.5-Math-7B-Instruct")
V5E_8 = roofline.Hardware.of_slice("v5e-8")


# ------------------------------------------------------------------------------------------------ the roofline
def test_a_decode_pass_at_batch_1_is_memory_bound_at_weights_over_bandwidth():
    cost = roofline.pass_cost(QWEN_7B, V5E_8, rows=1, tokens=1, context=1, head_rows=1)
    weights_over_bandwidth = roofline.weight_bytes(QWEN_7B) / (8 * 819e9)
    assert cost.memory_bound
    assert cost.memory_s == pytest.approx(weights_over_bandwidth, rel=1e-3)
    assert cost.seconds == pytest.approx(weights_over_bandwidth + 2 * 28 * 10e-6, rel=1e-2)  # + the all-reduces
    assert 13e9 < roofline.weight_bytes(QWEN_7B) < 16e9  # 7.6B parameters in bf16, embedding table not read


def test_a_huge_batch_is_compute_bound_at_flops_over_peak():
    rows = 1e6
    cost = roofline.pass_cost(QWEN_7B, V5E_8, rows=rows, tokens=1, context=1, head_rows=rows)
    assert not cost.memory_bound
    expected = rows * flops.flops_per_token(QWEN_7B, 1) / (8 * 197e12)
    assert cost.compute_s == pytest.approx(expected, rel=1e-6)


def test_pass_time_grows_with_rows_tokens_and_context_and_one_chip_has_no_collectives():
    base = dict(rows=8, tokens=1, context=500, head_rows=8)
    t = roofline.pass_seconds(QWEN_7B, V5E_8, **base)
    for change in ({"rows": 64, "head_rows": 64}, {"tokens": 32}, {"context": 4000}):
        assert roofline.pass_seconds(QWEN_7B, V5E_8, **{**base, **change}) > t
    one = roofline.Hardware.of_slice("1x H100")
    assert roofline.pass_cost(QWEN_7B, one, **base).collective_s == 0
    assert roofline.pass_seconds(QWEN_7B, V5E_8, rows=0, tokens=1, context=5) == 0  # nothing fed, nothing paid


def test_chip_figures_and_errors():
    h100 = roofline.Hardware.of_slice("8x H100")
    assert (h100.chips, h100.hbm_bytes_per_s, h100.flops_per_s) == (8, 3350e9, 989e12)
    assert (V5E_8.chips, V5E_8.hbm_bytes_per_s, V5E_8.flops_per_s) == (8, 819e9, 197e12)
    with pytest.raises(ConfigError, match="no accelerator slice named 'v9z-8'"):
        roofline.Hardware.of_slice("v9z-8")
    with pytest.raises(ConfigError, match="rows, tokens, context >= 0"):
        roofline.pass_cost(QWEN_7B, V5E_8, rows=-1, tokens=1, context=1)


def test_the_72b_setting_does_not_fit_a_v5e_8_but_fits_8_h100():
    big, small = projection.SETTINGS["7B/72B/7B"], projection.SETTINGS["1.5B/7B/1.5B"]
    assert not projection.fits(big, V5E_8, batch=1, context=1000)
    assert projection.fits(big, roofline.Hardware.of_slice("8x H100"), batch=64, context=1000)
    assert projection.fits(small, V5E_8, batch=64, context=1000)


# ------------------------------------------------------------------------------------------------ step statistics
def test_a_solution_is_split_at_blank_lines_and_counted_with_the_delimiter():
    counted = step_statistics.count_solution("q?", "a\n\nbb\n\n\n\nccc", encode=list)  # one "token" per char
    assert counted.steps == (3, 4, 5)
    assert counted.prm_prompt == 1 + len("q?\n")


def test_math500_statistics_and_common_random_draws():
    solutions = step_statistics.math500_solutions()
    stats = step_statistics.summary(solutions)
    assert stats["problems"] == 500 and 1 < stats["steps_per_solution"] < 10 and 30 < stats["tokens_per_step"] < 400
    low, high = (step_statistics.draw_rows(solutions, n=50, acceptance=a, seed=3) for a in (0.5, 0.9))
    assert [r.steps for r in low] == [r.steps for r in high]
    assert all(h or not lo for a, b in zip(low, high) for lo, h in zip(a.accepted, b.accepted))  # nested
    assert sum(map(sum, (r.accepted for r in high))) > sum(map(sum, (r.accepted for r in low)))
    with pytest.raises(ConfigError, match="acceptance must be in"):
        step_statistics.draw_rows(solutions, n=2, acceptance=1.5, seed=0)


# ------------------------------------------------------------------------------------------------ the simulator
def _rows(acceptance: float, n: int, seed: int = 0) -> list[RowScript]:
    return step_statistics.draw_rows(step_statistics.math500_solutions(), n=n, acceptance=acceptance, seed=seed)


def _written(trace, model):
    return sum(p.head_rows for p in trace if p.model == model)


@pytest.mark.parametrize("schedule", ["sync", "async_k1", "async_k3"])
def test_every_row_tokens_are_written_once_by_the_right_model(schedule):
    rows = _rows(0.5, 24, seed=5)
    assert sum(not ok for r in rows for ok in r.accepted[:-1]) >= 3  # target steps that the draft then follows
    trace = (pass_trace.synchronous(rows, chunk=64) if schedule == "sync" else
             pass_trace.asynchronous(rows, chunk=64, k=int(schedule[-1])))
    assert _written(trace, "draft") == sum(sum(r.proposals) for r in rows)
    assert _written(trace, "target") == sum(s for r in rows for s, ok in zip(r.steps, r.accepted) if not ok)
    # the PRM reads its prompt, every proposal, and every target step that a later step follows
    prm = sum(r.prm_prompt + sum(r.proposals) + sum(s for s, ok in zip(r.steps[:-1], r.accepted[:-1]) if not ok)
              for r in rows)
    assert pass_trace.tokens_fed(trace, "prm") == prm
    # the draft reads its prompt and writes every proposal; it catches up on each target step a step follows (the
    # last committed token is re-fed by the write); the target never rolls back: it reads up to its last step
    draft = sum(r.prompt - 1 + sum(r.proposals) + sum(s - 1 for s, ok in zip(r.steps[:-1], r.accepted[:-1]) if not ok)
                for r in rows)
    assert pass_trace.tokens_fed(trace, "draft") == draft
    last = [max([j for j, ok in enumerate(r.accepted) if not ok], default=None) for r in rows]
    target = sum(r.prompt - 1 + sum(r.steps[:j + 1]) for r, j in zip(rows, last) if j is not None)
    assert pass_trace.tokens_fed(trace, "target") == target
    assert all(p.rows >= 1 and p.tokens >= 1 and p.head_rows <= p.rows for p in trace)


def test_target_only_makes_one_pass_per_token_of_the_longest_row():
    rows = _rows(0.9, 8)
    trace = pass_trace.target_only(rows, chunk=32)
    writes = [p for p in trace if p.head_rows]
    assert len(writes) == max(r.response for r in rows)
    assert [p.rows for p in writes] == [sum(r.response > i for r in rows) for i in range(len(writes))]
    assert len(trace) - len(writes) == -(-(max(r.prompt for r in rows) - 1) // 32)  # the prompts' catch-up


def test_async_with_k_1_at_acceptance_1_and_0_makes_the_obvious_passes():
    ok = RowScript(prompt=5, prm_prompt=3, steps=(4, 2, 3), accepted=(True,) * 3, proposals=(4, 2, 3))
    counts = pass_trace.counts(pass_trace.asynchronous([ok], chunk=64, k=1))
    assert counts["target"]["passes"] == 0
    assert (counts["draft"]["passes"], counts["draft"]["write_passes"]) == (1 + 9, 9)  # prompt, then 9 tokens
    assert counts["prm"]["passes"] == 3  # one per step
    rejected = RowScript(prompt=5, prm_prompt=3, steps=(4, 2, 3), accepted=(False,) * 3, proposals=(6, 6, 6))
    counts = pass_trace.counts(pass_trace.asynchronous([rejected], chunk=64, k=1))
    assert (counts["target"]["passes"], counts["target"]["write_passes"]) == (1 + 9, 9)
    # the draft: prompt, 18 proposed tokens, and a catch-up on each target step a step follows (4 and 2 tokens)
    assert (counts["draft"]["passes"], counts["draft"]["write_passes"]) == (1 + 18 + 2, 18)
    assert counts["prm"]["passes"] == 3


def test_at_batch_1_the_async_schedule_is_the_sync_schedule():
    for seed in range(6):
        rows = _rows(0.6, 1, seed=seed)
        assert pass_trace.asynchronous(rows, chunk=48, k=1) == pass_trace.synchronous(rows, chunk=48)


def test_the_async_schedule_does_the_same_work_and_its_quorum_batches_the_target():
    rows = _rows(0.8, 32, seed=2)
    sync = pass_trace.counts(pass_trace.synchronous(rows, chunk=64))
    by_k = [pass_trace.counts(pass_trace.asynchronous(rows, chunk=64, k=k)) for k in (1, 4, 16)]
    for c in by_k:
        assert all(c[m]["tokens"] == sync[m]["tokens"] for m in pass_trace.MODELS)
    # no row's draft waits for another row's step at k = 1; a larger quorum means fewer, fuller target passes
    assert by_k[0]["draft"]["passes"] < sync["draft"]["passes"]
    assert by_k[0]["target"]["passes"] > by_k[1]["target"]["passes"] > by_k[2]["target"]["passes"]
    assert by_k[2]["target"]["rows"] / by_k[2]["target"]["passes"] > by_k[0]["target"]["rows"] / by_k[0]["target"][
        "passes"]
    with pytest.raises(ConfigError, match="quorum k must be >= 1"):
        pass_trace.asynchronous(rows, chunk=64, k=0)


# ------------------------------------------------------------------------------------------------ the projection
def test_the_projection_is_monotone_in_acceptance_and_hardware():
    kw = dict(settings=("1.5B/7B/1.5B",), hardware=("v5e-8", "8x H100"), batches=(8,), quorums=(1,), problems=32)
    by_acceptance = [projection.project(acceptance=a, **kw) for a in (0.3, 0.7, 1.0)]
    for slice_name in ("v5e-8", "8x H100"):
        case = f"1.5B/7B/1.5B {slice_name} b8"
        for sched in ("sync", "async_k1"):
            speedups = [p[case][f"{sched}_speedup"] for p in by_acceptance]
            assert speedups == sorted(speedups) and speedups[0] < speedups[-1], (sched, speedups)
        assert by_acceptance[0][case]["target_only_s"] == by_acceptance[-1][case]["target_only_s"]
    one = by_acceptance[1]
    assert one["1.5B/7B/1.5B 8x H100 b8"]["target_only_s"] < one["1.5B/7B/1.5B v5e-8 b8"]["target_only_s"]
    slow = [roofline.Hardware.of_slice(n, collective_latency_s=50e-6) for n in kw["hardware"]]
    slower = projection.project(acceptance=0.7, **{**kw, "hardware": slow})
    assert slower["1.5B/7B/1.5B v5e-8 b8"]["target_only_s"] > one["1.5B/7B/1.5B v5e-8 b8"]["target_only_s"]


def test_batching_amortises_the_target_and_the_table_has_every_case():
    cases = projection.project(settings=("7B/72B/7B",), hardware=("8x H100",), batches=(1, 8), quorums=(1, 4),
                               problems=16)
    b1, b8 = cases["7B/72B/7B 8x H100 b1"], cases["7B/72B/7B 8x H100 b8"]
    assert b8["target_only_s"] < b1["target_only_s"] / 2  # 8 rows share each pass (until the longest ends)
    assert "async_k4_speedup" in b8 and "async_k4_speedup" not in b1  # k above the batch is not projected
    assert b1["sync_speedup"] == pytest.approx(b1["async_k1_speedup"])
    lines = projection.table(cases).splitlines()
    assert len(lines) == 4 and "| 7B/72B/7B | 8x H100 | 8 | yes |" in lines[3]


def project_measured(batch_passes: Mapping[str, Mapping[str, int] | tuple[int, int]], setting: str, hardware: str,
                     *, context: float, tokens: float = 1.0) -> dict[str, float]:
    """(test-side) Projected seconds of a real run from its pass counts: `batch_passes` is an accounting's
    {"draft"|"target"|"prm": {"passes": P, "rows": R}} (rsd_jax.results), or the (P, R) pairs rsd_jax.bench's
    batch_passes sums over batches. A run's counts do not say how many tokens a pass fed or at what
    context: every pass is taken to carry R/P rows of `tokens` tokens at mean context `context`, the draft's and
    target's rows each sampling a token."""
    if setting not in projection.SETTINGS:
        raise ConfigError(f"unknown setting {setting!r}; known: {', '.join(projection.SETTINGS)}")
    hw = roofline.Hardware.of_slice(hardware)
    configs = projection.SETTINGS[setting].configs
    out = {}
    for role, counts in batch_passes.items():
        if role not in configs:
            raise ConfigError(f"batch_passes names {role!r}; the models are {', '.join(configs)}")
        passes, rows = (counts if isinstance(counts, tuple) else (counts["passes"], counts["rows"]))
        per_pass = rows / passes if passes else 0.0
        out[role] = passes * float(roofline.pass_seconds(configs[role], hw, rows=per_pass, tokens=tokens,
                                                         context=context,
                                                         head_rows=per_pass if role != "prm" else 0.0))
    out["total"] = sum(out.values())
    return out


def test_a_measured_pass_count_is_projected_like_the_trace_it_came_from():
    rows = _rows(0.9, 8)
    trace = [p for p in pass_trace.target_only(rows, chunk=32) if p.head_rows]  # one-token passes only
    setting = projection.SETTINGS["1.5B/7B/1.5B"]
    simulated = projection.trace_seconds(trace, setting, V5E_8)["target"]
    counts = {"target": {"passes": len(trace), "rows": sum(p.rows for p in trace)}}
    mean_context = sum(p.context * p.rows for p in trace) / counts["target"]["rows"]
    measured = project_measured(counts, "1.5B/7B/1.5B", "v5e-8", context=mean_context)
    assert measured["total"] == measured["target"] == pytest.approx(simulated, rel=0.05)
    doubled = project_measured({"target": {"passes": 2 * len(trace), "rows": 2 * counts["target"]["rows"]}},
                                          "1.5B/7B/1.5B", "v5e-8", context=mean_context)
    assert doubled["total"] == pytest.approx(2 * measured["total"])
    as_bench_sums = {"target": (len(trace), counts["target"]["rows"])}  # rsd_jax.bench.batch_passes' form
    assert project_measured(as_bench_sums, "1.5B/7B/1.5B", "v5e-8", context=mean_context) == measured
    with pytest.raises(ConfigError, match="batch_passes names 'verifier'"):
        project_measured({"verifier": {"passes": 1, "rows": 1}}, "1.5B/7B/1.5B", "v5e-8", context=10)


# ------------------------------------------------------------------------------------------------ against the loop
@functools.cache
def _embedded():
    from rsd_jax import bench

    return bench.embedded_engine(Path(__file__).resolve().parents[1])


def _decoded(engine, method, spec: DecodeSpec) -> tuple[list[RowScript], dict]:
    """Eight arithmetic problems decoded by a real loop: each row's script (prompt length, steps, sources; a row's
    discarded draft tokens shared evenly among its rejected steps, the loop does not record them per step) and the
    batch's measured passes."""
    from rsd_jax.api import generate
    from rsd_jax.data import arith

    problems = arith.generate_problems(8, seed=777)
    prompts, questions = [arith.format_prompt(p) for p in problems], [p.question for p in problems]
    results = generate(engine, prompts, questions=questions, method=method, decoding=spec, pad_batch_to=8)
    tok, scripts = engine.models.tokenizer, []
    for prompt, r in zip(prompts, results):
        length = len(tok.encode(prompt)) + (tok.bos_id is not None)
        steps = tuple(s.n_tokens for s in r.steps)
        accepted = tuple(s.source == "draft" for s in r.steps)
        share = r.accounting.get("draft_discarded_tokens", 0) // max(accepted.count(False), 1)
        scripts.append(RowScript(length, length, steps, accepted,
                                 tuple(n if ok else share for n, ok in zip(steps, accepted))))
    return scripts, results[0].accounting["batch_passes"]


def test_the_synchronous_simulation_makes_the_jitted_loops_passes():
    """The embedded default decoded by the real loops (RSD and target-only, batch 8, chunk 8): replaying each row's
    steps, sources and prompt length through the simulator gives the draft's and the target's pass counts exactly
    (a rejected proposal's length is not recorded per step: a row's discarded tokens are shared evenly among its
    rejected steps, so rows carried may differ slightly; the PRM's view of a step is not its token count)."""
    from rsd_jax.methods import RSD, TargetOnly

    engine, delta = _embedded()
    for method in (RSD(delta=delta), TargetOnly()):
        scripts, measured = _decoded(engine, method, DecodeSpec(max_new_tokens=112, max_steps=12, max_step_tokens=24,
                                                                chunk=8, schedule="sync"))
        if isinstance(method, TargetOnly):
            simulated = pass_trace.counts(pass_trace.target_only(scripts, chunk=8))
            assert measured["target"] == {k: simulated["target"][k] for k in ("passes", "rows")}
            continue
        assert sum(not ok for s in scripts for ok in s.accepted) >= 5  # the target wrote steps
        simulated = pass_trace.counts(pass_trace.synchronous(scripts, chunk=8))
        for model in ("draft", "target"):
            assert measured[model]["passes"] == simulated[model]["passes"], model
            assert abs(measured[model]["rows"] - simulated[model]["rows"]) <= 0.02 * measured[model]["rows"], model
        assert abs(measured["prm"]["passes"] - simulated["prm"]["passes"]) <= 1


@pytest.mark.parametrize("k", [1, 4])
def test_the_asynchronous_simulation_makes_about_the_async_loops_passes(k):
    """The same for the asynchronous loop (rsd_jax.decoding.rsd, quorum k): the simulated passes of each model
    are within 10% of the loop's (the shared-out proposal lengths move when rows hand over to each other)."""
    from rsd_jax.methods import RSD

    engine, delta = _embedded()
    spec = DecodeSpec(max_new_tokens=112, max_steps=12, max_step_tokens=24, chunk=8, schedule="async", quorum=k)
    scripts, measured = _decoded(engine, RSD(delta=delta), spec)
    assert sum(not ok for s in scripts for ok in s.accepted) >= 5
    simulated = pass_trace.counts(pass_trace.asynchronous(scripts, chunk=8, k=k))
    for model in pass_trace.MODELS:
        assert abs(measured[model]["passes"] - simulated[model]["passes"]) <= 0.1 * measured[model]["passes"], model
        assert abs(measured[model]["rows"] - simulated[model]["rows"]) <= 0.02 * measured[model]["rows"], model
