"""Train an embedded model: `python -m rsd_jax.train --config configs/train_<model>.yaml [key=value ...]`.

kind=lm trains a causal LM (the draft or the target) on the arithmetic task; kind=prm trains a value-head
PRM on exact step labels of solutions sampled from the LMs in data.sample_from. Interrupted runs resume
from work_dir, which records in run.json whose checkpoints it holds (another run is refused, not resumed).
The final model goes to `out` (orbax) with `manifest.json`: the model config, the command, seed, data version
and the measured metrics; an existing non-empty `out` is refused before training unless overwrite=true, and the
model is written beside it and renamed into place, so `out` never holds a model next to another's manifest.

The command reads the config and hands its values to rsd_jax.training: the loop, the data sets (`lm`, `prm_data`),
where training starts (`backbone`), the held-out metrics (`held_out`) and the run's identity (`run_dir`).
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from rsd_jax import flops
from rsd_jax.config import TrainConfig
from rsd_jax.configlib import add_config_flags, describe_if_asked, load_config, print_config_if_asked, to_dict
from rsd_jax.data import arith
from rsd_jax.data.char_tokenizer import CharTokenizer
from rsd_jax.errors import RSDError
from rsd_jax.models import Model, ModelConfig, RopeConfig
from rsd_jax.outputs import check_destination, staged_folder
from rsd_jax.paths import resolve_path
from rsd_jax.training import held_out, lm, prm, run_dir, self_scoring
from rsd_jax.training.backbone import initial_params
from rsd_jax.training.loop import train, trim_padding
from rsd_jax.training.prm_data import Labelling, prm_dataset
from rsd_jax.weights import restore_model, save_model
from rsd_jax.weights.integrity import write_checksums

TOKENIZER_FILE = "char_tokenizer.json"
# keys that may change between an interruption and its resume
_NOT_IDENTITY = ("out", "work_dir", "checkpoint_every", "overwrite")
HEADS = {"lm": "lm", "prm": "value", "self_scoring": "lm+value"}  # the head each kind of model has


def model_config(cfg: TrainConfig, vocab_size: int) -> ModelConfig:
    arch = cfg.model
    return ModelConfig(vocab_size=vocab_size, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
                       num_layers=arch.num_layers, num_heads=arch.num_heads, num_kv_heads=arch.num_kv_heads,
                       head_dim=arch.hidden_size // arch.num_heads, rope=RopeConfig(theta=arch.rope_theta),
                       tie_word_embeddings=arch.tie_word_embeddings,
                       head=HEADS[cfg.kind], max_position_embeddings=1024,
                       bos_token_id=CharTokenizer.bos_id, eos_token_id=CharTokenizer.eos_ids)


def starting_params(cfg: TrainConfig, config: ModelConfig, config_file: str | None) -> dict:
    """rsd_jax.training.backbone.initial_params of the config's seed and init_from."""
    return initial_params(config, cfg.seed, resolve_path(cfg.init_from, config_file) if cfg.init_from else None)


def run_lm(cfg: TrainConfig, tok: CharTokenizer, config: ModelConfig, work: Path, config_file: str | None):
    problems = arith.generate_problems(cfg.data.n_train, cfg.data.seed, cfg.data.levels)
    tokens, mask = lm.encode_examples(tok, problems, cfg.data.sequence_length)
    model = train(config, starting_params(cfg, config, config_file), lm.lm_loss,
                  lm.batch_sampler(tokens, mask, cfg.optim.batch_size, cfg.seed), cfg.optim, work,
                  checkpoint_every=cfg.checkpoint_every, desc=f"train {Path(cfg.out).name}")
    problems = arith.generate_problems(cfg.data.n_eval, cfg.data.seed + 1000, cfg.data.levels)
    return model, held_out.lm_accuracy(model, tok, problems)


def run_prm(cfg: TrainConfig, tok: CharTokenizer, config: ModelConfig, work: Path, config_file: str | None):
    data = cfg.data
    if not data.sample_from:
        raise RSDError("a PRM needs data.sample_from: the LM checkpoints whose steps it learns to score")
    problems = arith.generate_problems(data.n_train, data.seed, data.levels)
    if not all(arith.perturbable_steps(p, data.perturb_kinds) for p in problems):
        raise RSDError(f"data.perturb_kinds {list(data.perturb_kinds)}: some training problems have no step "
                       "such a perturbation can replace")
    if cfg.lm_loss_weight and not config.tie_word_embeddings:
        raise RSDError("lm_loss_weight needs model.tie_word_embeddings: a value-head PRM has no other LM head")
    init = starting_params(cfg, config, config_file)  # a wrong init_from fails here, before the sampling
    lms = [restore_model(resolve_path(p, config_file)) for p in data.sample_from]
    copies = (data.samples_per_problem + data.greedy) * (1 + data.prefix_cuts)
    n_perturbed = round(len(problems) * data.perturbed)
    print(f"sampling {len(problems) * len(lms) * copies} solutions to label"
          f"{f', and {n_perturbed} perturbed references' if n_perturbed else ''} ...")
    labelling = Labelling(copies=data.samples_per_problem, temperature=data.temperature, greedy=data.greedy,
                          cuts=data.prefix_cuts, perturbed=data.perturbed, perturb_kinds=data.perturb_kinds)
    tokens, mask, labels = prm_dataset(tok, problems, lms, labelling, seed=data.seed,
                                       sequence_length=data.sequence_length)
    print(f"{int(mask.sum())} labelled steps, {labels[mask > 0].mean():.1%} correct")
    arrays = (tokens, mask, labels)
    if cfg.lm_loss_weight:
        arrays += (prm.solution_lm_weights(tokens, mask, labels, tok.encode("\n")[0], tok.delimiter_id),)

    def batch_at(step: int):
        idx = np.random.default_rng([cfg.seed, step]).integers(0, len(tokens), cfg.optim.batch_size)
        return trim_padding(tuple(a[idx] for a in arrays))

    loss_fn = functools.partial(prm.prm_loss, lm_weight=cfg.lm_loss_weight)
    model = train(config, init, loss_fn, batch_at, cfg.optim, work,
                  checkpoint_every=cfg.checkpoint_every, desc=f"train {Path(cfg.out).name}")
    problems = arith.generate_problems(data.n_eval, data.seed + 1000, data.levels)
    return model, held_out.prm_metrics(model, tok, lms, problems, seed=data.seed + 1000,
                                       temperature=data.temperature, sequence_length=data.sequence_length)


def run_self_scoring(cfg: TrainConfig, tok: CharTokenizer, config: ModelConfig, work: Path,
                     config_file: str | None):
    """A self-scoring draft: the value loss on the sampled LMs' labelled steps in the draft's own view, plus
    lm_loss_weight times the LM loss on their correct part (rsd_jax.training.self_scoring)."""
    data = cfg.data
    if not data.sample_from:
        raise RSDError("a self-scoring draft needs data.sample_from: the LM checkpoints whose steps it learns to score")
    problems = arith.generate_problems(data.n_train, data.seed, data.levels)
    init = starting_params(cfg, config, config_file)
    lms = [restore_model(resolve_path(p, config_file)) for p in data.sample_from]
    print(f"sampling {len(problems) * len(lms) * (data.samples_per_problem + data.greedy)} solutions to label ...")
    arrays = self_scoring.self_scoring_dataset(
        tok, problems, lms, seed=data.seed, temperature=data.temperature, copies=data.samples_per_problem,
        greedy=data.greedy, sequence_length=data.sequence_length)
    mask, labels = arrays[1], arrays[2]
    print(f"{int(mask.sum())} labelled steps, {labels[mask > 0].mean():.1%} correct")

    def batch_at(step: int):
        idx = np.random.default_rng([cfg.seed, step]).integers(0, len(arrays[0]), cfg.optim.batch_size)
        return trim_padding(tuple(a[idx] for a in arrays))

    loss_fn = functools.partial(self_scoring.self_scoring_loss, lm_weight=cfg.lm_loss_weight)
    model = train(config, init, loss_fn, batch_at, cfg.optim, work,
                  checkpoint_every=cfg.checkpoint_every, desc=f"train {Path(cfg.out).name}")
    held = arith.generate_problems(data.n_eval, data.seed + 1000, data.levels)
    metrics = held_out.lm_accuracy(model, tok, held)
    for label, temp in (("greedy", 0.0), ("sampled", data.temperature)):
        texts = prm.sample_solutions(model, tok, held, temperature=temp, seed=data.seed + 1000)
        metrics[f"auroc_self_{label}"], metrics[f"step_accuracy_self_{label}"] = self_scoring.value_auroc(
            model, tok, held, texts, data.sequence_length)
    return model, metrics


def run_identity(cfg: TrainConfig, config_file: str | None) -> dict:
    """What makes two invocations the same run (rsd_jax.training.run_dir): the config less out, work_dir,
    checkpoint_every and overwrite, and the checkpoints it reads (init_from, data.sample_from)."""
    settings = {k: v for k, v in to_dict(cfg).items() if k not in _NOT_IDENTITY}
    sources = [cfg.init_from] if cfg.init_from else []
    sources += cfg.data.sample_from
    return run_dir.run_identity(settings, {ref: resolve_path(ref, config_file) for ref in sources})


def write_model(out: Path, model: Model, tok: CharTokenizer, manifest: dict, overwrite: bool) -> None:
    """The model, its tokenizer and its manifest into `out`, together or not at all."""
    with staged_folder(out, overwrite) as tmp:
        save_model(model, tmp, metadata={"data_version": arith.DATA_VERSION})
        tok.save(tmp / TOKENIZER_FILE)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        write_checksums(tmp)  # checksums.sha256 over everything: the loaders check every file (weights.integrity)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsd_jax.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML config (configs/train_*.yaml)")
    add_config_flags(parser)
    parser.add_argument("overrides", nargs="*", help="key.path=value")
    args = parser.parse_intermixed_args(argv)
    if describe_if_asked(args, TrainConfig):
        return 0
    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
        if print_config_if_asked(args, cfg):
            return 0
        tok = CharTokenizer()
        config = model_config(cfg, tok.vocab_size)
        out, work = resolve_path(cfg.out, args.config), resolve_path(cfg.work_dir, args.config)
        check_destination(out, "out", cfg.overwrite, "overwrite=true")  # before any training
        run_dir.claim_work_dir(work, run_identity(cfg, args.config))
        resumed = run_dir.checkpoint_steps(work)
        start = time.time()
        run = {"lm": run_lm, "prm": run_prm, "self_scoring": run_self_scoring}[cfg.kind]
        model, metrics = run(cfg, tok, config, work, args.config)
    except RSDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    metrics = {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in metrics.items()}  # JSON null
    manifest = {
        "model": config.to_dict(), "params": model.num_params(),
        "flops_per_token_at_128": flops.flops_per_token(config, 128),
        "command": "python -m rsd_jax.train " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "config": to_dict(cfg), "seed": cfg.seed, "data_version": arith.DATA_VERSION,
        "train_seconds": round(time.time() - start, 1), "metrics": metrics,
        "resumed_from_step": resumed[-1] if resumed else None,
    }
    try:
        write_model(out, model, tok, manifest, cfg.overwrite)
    except RSDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(out), **metrics}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
