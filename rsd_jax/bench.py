"""Side-by-side benchmark: `python -m rsd_jax.bench --out FILE.json [--quick]`, a table printed last.

decode   tokens/s of our jitted decoder and of transformers' `generate` (torch CPU, the same weights) on a
         GPT-2-small-sized Qwen2 config at batch 1 and 16, their ratio, and our fraction of the memory-bandwidth
         roofline (bytes read per step over the best copy bandwidth of the run, timed before and between the
         rounds of runs: `copy_bandwidth_spread` is how far it moved); transformers' fraction
         of the same roofline and of the machine's matmul peak (a large f32 GEMM timed in the same run) say how
         far either could still go: `ceiling_ratio_vs_hf` is the largest ratio the roofline allows. The share
         counts the prompt's prefill as decode time; `step_roofline_fraction` is the decode steps alone (a run of
         one new token subtracted), and `matvec_roofline_fraction` the same weights' matrix products alone, one
         step's worth after another (`weight_stream`): the most any f32 decoder built on XLA's dot gets here;
         `step_vs_matvec` is the decode step against those products (no bandwidth figure in it).
rsd      the embedded benchmark at batch 1, 8 and 64: wall-clock speedup of RSD over target-only decoding of the
         same problems with the shipped defaults (the asynchronous schedule), next to the lock-step setting
         (`sync_*`: decoding.schedule sync) and a CPU-tuned one (`async_*`: quorum a quarter of the batch, passes
         gathered up to 16 rows in six sizes, catch-up chunk 8), next to the useful- and executed-FLOPs
         ratios, each model's sequential passes, and what the draft and PRM loops alone (every step accepted) cost
         relative to target-only. Each is timed in interleaved rounds, the fastest round kept.
layouts  the embedded engine's loops alone (target-only, speculative, best-of-n, beam search, RSD as shipped and
         CPU-tuned; their jitted calls, no host results) with the layer copies a CPU gets (`Engine.create`) against
         the stacked layers (which `rsd_decode` and `beam_search` pick), the rsd section's problems:
         wall time (fastest round) and process CPU time (median round) of each; run it with
         XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" on a shared machine, where
         the CPU time of one thread is what stays comparable.
compile  seconds to compile the RSD loop, and the compilations over a δ sweep and over new prompts of the same
         length bucket; seconds to compile (and run) the asynchronous loop with 3 and 6 pass sizes.
projection  a projection, not a measurement (rsd_jax.projection): RSD's speedup over target-only for the paper's
         settings on TPU v5e-8 and 8x H100 at batch 1, 8, 64, synchronous and asynchronous side by side, from
         simulated pass traces and a roofline; its assumptions as a case of their own.
Ratios are measured in one process, one after the other: report ratios, not absolute times. The commit and date
measured are printed first and written into the json ("measured"): a table quoting these figures names its commit.
On a CPU our decoder runs with per-layer weight copies (`Model.with_layer_copies`, what `Engine.create` gives a CPU);
`scan_*` is the same decoder scanning the stacked layers, as a TPU or GPU runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from rsd_jax import exits
from rsd_jax.api import encode_prompts, generate
from rsd_jax.compilations import compilations
from rsd_jax.data import arith
from rsd_jax.decoding.rsd import rsd_decode
from rsd_jax.decoding.rsd_state import Knobs
from rsd_jax.decoding.single import decode_model
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.engine import Engine
from rsd_jax.errors import RSDError
from rsd_jax.methods import RSD, TargetOnly
from rsd_jax.outputs import check_output_file, write_text_atomic

GPT2_SMALL = dict(vocab_size=32000, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=1024,
                  tie_word_embeddings=True)


def copy_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes per second of a large array copy (read + write), the roofline's bandwidth."""
    src = np.ones(megabytes * 2**20 // 4, np.float32)
    dst = np.empty_like(src)
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(repeats))
    return 2 * src.nbytes / best


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large f32 matrix product under jit, the compute roofline."""
    a = jax.numpy.ones((n, n), jax.numpy.float32)
    dot = jax.jit(lambda x: x @ x)
    jax.block_until_ready(dot(a))
    return 2 * n**3 / min(_timed(lambda: jax.block_until_ready(dot(a))) for _ in range(repeats))


def measured_at(root: Path) -> dict:
    """The commit this run measures ("+dirty" with uncommitted changes to tracked files; "unknown" outside a git
    checkout) and the UTC date."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout
    try:
        dirty = git("status", "--porcelain", "--untracked-files=no").strip()
        commit = git("rev-parse", "--short", "HEAD").strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"commit": commit, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_decode(quick: bool) -> dict:
    import torch
    import transformers

    from rsd_jax.decoding.generator import TokenTables
    from rsd_jax.decoding.prompts import Prompts
    from rsd_jax.weights import load_hf_model

    torch.set_num_threads(max(1, len(jax.devices("cpu")) and torch.get_num_threads()))
    new, prompt_len = (32, 16) if quick else (128, 32)
    folder = Path(tempfile.mkdtemp()) / "gpt2-small-qwen2"
    torch.manual_seed(0)
    hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**GPT2_SMALL)).eval()
    hf.save_pretrained(folder)
    model = load_hf_model(folder)
    copied = model.with_layer_copies()
    bandwidths, peak = [copy_bandwidth()], matmul_peak()
    weight_bytes = model.num_params() * 4
    cfg = model.config
    kv_per_token = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 4
    spec = DecodeSpec(max_new_tokens=new, chunk=prompt_len)
    no_ends = TokenTables(stop=jax.numpy.zeros(cfg.vocab_size, bool), eos=jax.numpy.zeros(cfg.vocab_size, bool))
    out = {}
    for batch in (1, 16):
        ids = np.random.default_rng(batch).integers(0, cfg.vocab_size, (batch, prompt_len))
        tokens = np.zeros((batch, prompt_len + new), np.int32)
        tokens[:, :prompt_len] = ids
        prompts = Prompts(jax.numpy.asarray(tokens), jax.numpy.full((batch,), prompt_len, jax.numpy.int32),
                          jax.numpy.zeros((batch, 1), jax.numpy.int32), jax.numpy.ones((batch,), jax.numpy.int32))
        runs = {name: functools.partial(_decode, m, prompts, no_ends, spec)
                for name, m in (("ours", copied), ("scan", model))}
        runs["one"] = functools.partial(_decode, copied, prompts, no_ends, spec.replace(max_new_tokens=1))
        runs["matvecs"] = functools.partial(weight_stream, copied, batch, new)
        tokens = {name: run() for name, run in runs.items()}  # compiles
        best = {name: float("inf") for name in runs}
        for _ in range(2 if quick else 3):  # interleaved rounds, the fastest of each
            for name, run in runs.items():
                best[name] = min(best[name], _timed(run))
            bandwidths.append(copy_bandwidth(repeats=2))  # timed between the runs: the same machine's moments
        bandwidth = max(bandwidths)
        ours, scan = best["ours"], best["scan"]
        step = (ours - best["one"]) / (new - 1)  # one decode step, the prefill and the loop's entry taken out
        with torch.no_grad():
            t_ids = torch.tensor(ids)
            gen = lambda: hf.generate(t_ids, max_new_tokens=new, min_new_tokens=new, do_sample=False,  # noqa
                                      pad_token_id=0, eos_token_id=None)
            gen()
            theirs = min(_timed(gen) for _ in range(2 if quick else 3))
        bytes_per_step = weight_bytes + batch * (prompt_len + new / 2) * kv_per_token
        flops_per_step = batch * 2 * model.num_params()
        floor = max(bytes_per_step / bandwidth, flops_per_step / peak)  # seconds per step at the roofline
        out[f"batch_{batch}"] = {"ours_tok_s": batch * new / ours, "hf_tok_s": batch * new / theirs,
                                 "ratio_vs_hf": theirs / ours,
                                 "roofline_fraction": bytes_per_step / (ours / new) / bandwidth,
                                 "step_roofline_fraction": bytes_per_step / step / bandwidth,
                                 "matvec_roofline_fraction": weight_bytes / (best["matvecs"] / new) / bandwidth,
                                 # the decode step against XLA's dot streaming the same weights (no bandwidth timed)
                                 "step_vs_matvec": bytes_per_step / step / (weight_bytes / (best["matvecs"] / new)),
                                 "prefill_share": 1 - step * (new - 1) / ours,
                                 "hf_roofline_fraction": bytes_per_step / (theirs / new) / bandwidth,
                                 "matmul_peak_fraction": flops_per_step / (ours / new) / peak,
                                 "hf_matmul_peak_fraction": flops_per_step / (theirs / new) / peak,
                                 "ceiling_ratio_vs_hf": (theirs / new) / floor,
                                 "scan_tok_s": batch * new / scan, "scan_ratio_vs_hf": theirs / scan,
                                 "scan_roofline_fraction": bytes_per_step / (scan / new) / bandwidth,
                                 "scan_same_tokens": float(np.mean(tokens["ours"] == tokens["scan"]))}
    out["copy_bandwidth_gb_s"] = max(bandwidths) / 1e9  # the best of the run's timings, each between runs
    out["copy_bandwidth_spread"] = max(bandwidths) / min(bandwidths)  # how much the machine moved during the run
    out["matmul_peak_gflop_s"] = peak / 1e9
    out["params"] = model.num_params()
    return out


def weight_stream(model, batch: int, steps: int) -> np.ndarray:
    """`steps` times, one after the other, the products of a [batch, E] activation with every weight matrix of
    `model` (its layer copies, then the tied embedding as the LM head, as `Decoder.logits` takes it), each product's
    input the previous one's output: the weights streamed from memory by XLA's dot alone, nothing else a decode
    step does. Returns the last activation [batch, E] (run it to time it)."""
    names = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
             "mlp.up_proj", "mlp.down_proj")
    kernels = [layer[outer][inner]["kernel"][...] for layer in model.layer_copies
               for outer, inner in (n.split(".") for n in names)]
    x = jax.numpy.full((batch, model.config.hidden_size), 0.01, jax.numpy.float32)
    return np.asarray(jax.block_until_ready(_stream(kernels, model.params["embed_tokens"]["embedding"][...], x, steps)))


@functools.partial(jax.jit, static_argnames="steps")
def _stream(kernels, table, x, steps: int):
    jnp = jax.numpy

    def fit(y, n):  # the activation to width n (the products' widths differ), no copy of a weight
        return y[:, :n] if y.shape[1] >= n else jnp.tile(y, (1, -(-n // y.shape[1])))[:, :n]

    def step(_, x):
        y = x
        for w in kernels:
            y = jnp.tanh(fit(y, w.shape[0]) @ w)
        logits = jax.lax.dot_general(table, fit(y, table.shape[1]), (((1,), (1,)), ((), ())))  # [V, batch]
        return x + 1e-3 * fit(logits.T, x.shape[1])

    return jax.lax.fori_loop(0, steps, step, x)


def _decode(model, prompts, tables, spec) -> np.ndarray:
    out = decode_model(model, prompts=prompts, tables=tables, key=jax.random.key(0), spec=spec)
    return np.asarray(jax.block_until_ready(out).tokens)


def embedded_engine(root: Path) -> tuple[Engine, float]:
    """The embedded default's engine and its default δ (configs/arith_tiny.yaml)."""
    from rsd_jax.config import RunConfig
    from rsd_jax.configlib import load_config
    from rsd_jax.loading import load_engine

    cfg = load_config(RunConfig, str(root / "configs" / "arith_tiny.yaml"))
    return load_engine(cfg, str(root / "configs" / "arith_tiny.yaml")), cfg.rsd.delta


def async_spec(spec: DecodeSpec, batch: int) -> DecodeSpec:
    """The asynchronous schedule as the bench runs it on a CPU: the target starts when a quarter of the batch waits,
    passes gathered up to 16 rows (a CPU pass costs about the rows it carries), catch-up in chunks of 8 tokens (a
    gathered pass pads each row's catch-up to the chunk), six pass sizes (less padding, a longer compile)."""
    return spec.replace(schedule="async", quorum=0, pass_rows=min(batch, 16), chunk=8, pass_sizes=6)


def bench_rsd(engine: Engine, delta: float, quick: bool) -> dict:
    spec = DecodeSpec(max_new_tokens=112, max_steps=12, max_step_tokens=24, chunk=32)
    out = {}
    for batch in (1, 8, 64):
        n = batch * (2 if batch < 64 else 1) if quick else max(batch, 16)
        problems = arith.generate_problems(n, seed=777)
        prompts, questions = [arith.format_prompt(p) for p in problems], [p.question for p in problems]
        # "rsd@0" accepts every draft step: the draft and PRM loops alone, what RSD pays before any target work
        variants = {"target": (TargetOnly(), spec), "rsd": (RSD(delta=delta), spec),
                    "rsd-sync": (RSD(delta=delta), spec.replace(schedule="sync")),
                    "rsd-async": (RSD(delta=delta), async_spec(spec, batch)), "rsd@0": (RSD(delta=0.0), spec)}

        def run(method, decoding):
            return [r for s in range(0, n, batch) for r in generate(
                engine, prompts[s:s + batch], questions=questions[s:s + batch], method=method, decoding=decoding,
                pad_batch_to=batch)]

        results = {name: run(*v) for name, v in variants.items()}  # compiles each
        timings = {name: float("inf") for name in variants}
        for _ in range(2 if quick else 3):  # interleaved rounds, the fastest of each: a shared machine's noise
            for name, v in variants.items():
                start = time.perf_counter()
                run(*v)
                timings[name] = min(timings[name], time.perf_counter() - start)
        flops = {name: (sum(r.accounting["useful_flops_total"] for r in rs),
                        sum(r.accounting.get("executed_flops", r.accounting["useful_flops_total"]) for r in rs))
                 for name, rs in results.items()}
        passes = {name: batch_passes([rs[s] for s in range(0, n, batch)]) for name, rs in results.items()}
        target_only_passes = passes["target"]["target"][0]
        out[f"batch_{batch}"] = {"wall_speedup": timings["target"] / timings["rsd"],
                                 "sync_wall_speedup": timings["target"] / timings["rsd-sync"],
                                 "async_wall_speedup": timings["target"] / timings["rsd-async"],
                                 "useful_flops_ratio": flops["target"][0] / flops["rsd"][0],
                                 "executed_flops_ratio": flops["target"][1] / flops["rsd"][1],
                                 "executed_over_useful": flops["rsd"][1] / flops["rsd"][0],
                                 "async_executed_over_useful": flops["rsd-async"][1] / flops["rsd-async"][0],
                                 "draft_prm_wall_fraction": timings["rsd@0"] / timings["target"],
                                 "draft_prm_flops_fraction": flops["rsd@0"][0] / flops["target"][0],
                                 # sequential passes, where the time goes: RSD's target passes (and the rows each
                                 # carried) against target-only's, and the draft's and PRM's passes
                                 "target_passes_vs_target_only": passes["rsd"]["target"][0] / target_only_passes,
                                 "rows_per_target_pass": _per_pass(passes["rsd"]["target"]),
                                 "async_target_passes_vs_target_only":
                                     passes["rsd-async"]["target"][0] / target_only_passes,
                                 "async_rows_per_target_pass": _per_pass(passes["rsd-async"]["target"]),
                                 "draft_passes_vs_target_only": passes["rsd"]["draft"][0] / target_only_passes,
                                 "async_draft_passes_vs_target_only":
                                     passes["rsd-async"]["draft"][0] / target_only_passes,
                                 "prm_passes_vs_target_only": passes["rsd"]["prm"][0] / target_only_passes}
    return out


def bench_layouts(engine: Engine, delta: float, quick: bool) -> dict:
    """Each loop's jitted call with the engine's layer copies (what `Engine.create` gives a CPU) against the stacked
    layers (see the module's doc): the loops' inner jitted functions, so the layout an entry picks is bypassed."""
    from rsd_jax.decoding.beam_search import _beam_search
    from rsd_jax.decoding.best_of_n import tile_prompts
    from rsd_jax.decoding.speculative import speculative_decode

    spec = RSD(delta=delta).spec(DecodeSpec(max_new_tokens=112, max_steps=12, max_step_tokens=24, chunk=32))
    engines = {"copies": engine.with_layer_copies(), "stacked": engine.stacked()}
    key, out = jax.random.key(0), {}
    for batch in (1,) if quick else (1, 8):
        problems = arith.generate_problems(2 * batch, seed=777)  # the rsd section's problems, two batches
        sets = [encode_prompts(engine.models, [arith.format_prompt(p) for p in problems[s:s + batch]],
                               [p.question for p in problems[s:s + batch]], spec, batch_multiple=batch)
                for s in (0, batch)]
        loops = {"target": lambda e, b: decode_model(e.target, prompts=b, tables=e.tables, key=key, spec=spec),
                 "speculative": lambda e, b: speculative_decode(e, prompts=b, key=key, spec=spec, gamma=4),
                 # best-of-n's loop: the RSD loop over n = 4 samples a prompt, every step accepted, no target
                 "best_of_n": lambda e, b: _rsd_loop_call(e.drafting_only(), tile_prompts(b, 4),
                                                          Knobs.accept_all(spec), spec),
                 "beam": lambda e, b: _beam_search(e, prompts=b, key=key, spec=spec, width=2, expansions=2)}
        for name, sp in (("rsd", spec), ("rsd_cpu_tuned", async_spec(spec, batch))):
            loops[name] = functools.partial(_rsd_loop_call, knobs=RSD(delta=delta).knobs(sp, batch), spec=sp)
        cases = [(e, name) for name in loops for e in engines]
        wall = {c: float("inf") for c in cases}
        cpu = {c: [] for c in cases}
        for round_ in range(6 if quick else 12):  # round 0 compiles
            for e, name in cases:
                start, start_cpu = time.perf_counter(), time.process_time()
                for b in sets:
                    jax.block_until_ready(loops[name](engines[e], b))
                if round_:
                    wall[e, name] = min(wall[e, name], time.perf_counter() - start)
                    cpu[e, name].append(time.process_time() - start_cpu)
        out[f"batch_{batch}"] = {**{f"{e}_{name}_wall_ms": 1e3 * wall[e, name] for e, name in cases},
                                 **{f"{e}_{name}_cpu_ms": 1e3 * float(np.median(cpu[e, name])) for e, name in cases}}
    return out


def _rsd_loop_call(engine: Engine, prompts, knobs, spec: DecodeSpec):
    """The RSD loop's jitted call on the engine as given (`rsd_decode` picks the stacked layers itself)."""
    from rsd_jax.decoding.rsd import _rsd_loop
    from rsd_jax.decoding.rsd_state import new_caches

    return _rsd_loop(engine, prompts=prompts, knobs=knobs, key=jax.random.key(0), caches=new_caches(engine, prompts),
                     spec=spec)


def batch_passes(firsts: list) -> dict[str, tuple[int, int]]:
    """Each model's (passes, rows carried) summed over batches, from the first result of each batch."""
    total: dict[str, tuple[int, int]] = {}
    for result in firsts:
        for model, p in result.accounting["batch_passes"].items():
            before = total.get(model, (0, 0))
            total[model] = (before[0] + p["passes"], before[1] + p["rows"])
    return total


def _per_pass(passes_rows: tuple[int, int]) -> float:
    return passes_rows[1] / passes_rows[0] if passes_rows[0] else 0.0


def bench_compile(engine: Engine) -> dict:
    """Seconds to compile the RSD loop, and how many compilations JAX reports for a δ sweep and for new prompts of
    the same bucket (both should be none: δ is traced, prompts are bucketed)."""
    spec = DecodeSpec(max_new_tokens=64, max_steps=10, max_step_tokens=24, chunk=32)
    problems = arith.generate_problems(16, seed=4242)

    def batch_of(ps):
        return encode_prompts(engine.models, [arith.format_prompt(p) for p in ps], [p.question for p in ps], spec)

    def run(batch, delta):
        return jax.block_until_ready(rsd_decode(engine, prompts=batch, knobs=Knobs.create(delta=delta),
                                                key=jax.random.key(0), spec=spec))

    first, second = batch_of(problems[:8]), batch_of(problems[8:16])
    start = time.perf_counter()
    with compilations() as count:
        run(first, 0.7)
    seconds, first_call = time.perf_counter() - start, count()
    with compilations() as sweep:
        for d in (0.3, 0.5, 0.7, 0.9):
            run(first, d)
    with compilations() as new_prompts:
        run(second, 0.7)
    result = {"seconds": seconds, "compilations_first_call": first_call, "compilations": sweep(),
              "compilations_new_prompts_same_bucket": new_prompts()}
    for sizes in (3, 6):  # the asynchronous loop, passes gathered up to 8 rows (each size a copy of the models)
        timed = async_spec(spec, 8).replace(pass_rows=8, pass_sizes=sizes)
        start = time.perf_counter()
        jax.block_until_ready(rsd_decode(engine, prompts=first, knobs=Knobs.create(delta=0.7), key=jax.random.key(0),
                                         spec=timed))
        result[f"async_seconds_{sizes}_sizes"] = time.perf_counter() - start
    return result


def bench_projection() -> dict:
    """The projection's cases and, as the case "assumptions", the numbers it rests on."""
    from rsd_jax import projection

    return {"assumptions": projection.assumptions(), **projection.project()}


def table(result: dict) -> str:
    lines = ["| section | case | metric | value |", "|---|---|---|---|"]
    for section, cases in result.items():
        for case, metrics in cases.items():
            if isinstance(metrics, dict):
                for k, v in metrics.items():
                    lines.append(f"| {section} | {case} | {k} | {v:.3f} |")
            else:
                lines.append(f"| {section} | – | {case} | {metrics:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsd_jax.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="JSON file for the results")
    parser.add_argument("--quick", action="store_true", help="fewer tokens and problems (under five minutes)")
    parser.add_argument("--only", choices=("decode", "rsd", "layouts", "compile", "projection"), action="append", help="sections to run")
    args = parser.parse_args(argv)
    try:
        out = check_output_file(args.out)  # before any benchmarking
    except RSDError as e:
        return exits.error(e)
    sections = args.only or ["decode", "rsd", "compile"]
    root = Path(__file__).resolve().parents[1]
    measured = measured_at(root)
    print(f"measured at commit {measured['commit']}, {measured['date']}", flush=True)
    result = {}
    if "decode" in sections:
        result["decode"] = bench_decode(args.quick)
    if "projection" in sections:
        result["projection"] = bench_projection()
    if {"rsd", "layouts", "compile"} & set(sections):
        engine, delta = embedded_engine(root)
        if "rsd" in sections:
            result["rsd"] = bench_rsd(engine, delta, args.quick)
        if "layouts" in sections:
            result["layouts"] = bench_layouts(engine, delta, args.quick)
        if "compile" in sections:
            result["compile"] = bench_compile(engine)
    print(table(result))
    result = {"measured": measured, **result}
    try:
        write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    except RSDError as e:
        print(json.dumps(result))  # the results are not lost: they are on stdout
        return exits.error(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
