"""Train an embedded model: `python -m rsd_jax.train --config configs/train_<model>.yaml [key=value ...]`.

kind=lm trains a causal LM (the draft or the target) on the arithmetic task; kind=prm trains a value-head
PRM on exact step labels of solutions sampled from the LMs in data.sample_from. Interrupted runs resume
from work_dir, which records in run.json whose checkpoints it holds (another run is refused, not resumed).
The final model goes to `out` (orbax) with `manifest.json`: the model config, the command, seed, data version
and the measured metrics; an existing non-empty `out` is refused before training unless overwrite=true, and the
model is written beside it and renamed into place, so `out` never holds a model next to another's manifest.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import jax
import numpy as np

from rsd_jax import flops
from rsd_jax.config import OptimConfig, TrainConfig
from rsd_jax.configlib import describe, load_config, to_dict, to_yaml
from rsd_jax.data import arith
from rsd_jax.data.char_tokenizer import CharTokenizer
from rsd_jax.errors import ConfigError, RSDError
from rsd_jax.outputs import check_destination, staged_folder
from rsd_jax.paths import resolve_path
from rsd_jax.models import Model, ModelConfig, RopeConfig
from rsd_jax.training import lm, prm
from rsd_jax.training.loop import train, trim_padding
from rsd_jax.weights import restore_model, save_model

TOKENIZER_FILE = "char_tokenizer.json"
RUN_FILE = "run.json"  # in work_dir: what run its checkpoints belong to
# keys that may change between an interruption and its resume
_NOT_IDENTITY = ("out", "work_dir", "checkpoint_every", "overwrite")


def model_config(cfg: TrainConfig, vocab_size: int) -> ModelConfig:
    a = cfg.model
    return ModelConfig(vocab_size=vocab_size, hidden_size=a.hidden_size, intermediate_size=a.intermediate_size,
                       num_layers=a.num_layers, num_heads=a.num_heads, num_kv_heads=a.num_kv_heads,
                       head_dim=a.hidden_size // a.num_heads, rope=RopeConfig(theta=a.rope_theta),
                       tie_word_embeddings=a.tie_word_embeddings,
                       head="value" if cfg.kind == "prm" else "lm", max_position_embeddings=1024,
                       bos_token_id=CharTokenizer.bos_id, eos_token_id=CharTokenizer.eos_ids)


def lm_accuracy(model: Model, tok: CharTokenizer, problems: list[arith.Problem]) -> dict[str, float]:
    """Greedy accuracy overall and per level, and the share of correct steps by kind (each step judged given
    the previous ones): easy "+"/"-" steps, hard "*" steps, answer steps."""
    texts = prm.sample_solutions(model, tok, problems, temperature=0.0, seed=0)
    right = np.array([arith.is_correct(p, t) for p, t in zip(problems, texts)])
    levels = np.array([p.level for p in problems])
    by_kind: dict[str, list[bool]] = {"add_sub": [], "multiply": [], "answer": []}
    for p, t in zip(problems, texts):
        for i, ok in enumerate(arith.check_steps(p, arith.split_steps(t))):
            kind = "answer" if i >= p.level else "multiply" if p.operations[i][0] == "*" else "add_sub"
            by_kind[kind].append(ok)
    return {"accuracy": float(right.mean()),
            **{f"accuracy_level_{L}": float(right[levels == L].mean()) for L in sorted(set(levels.tolist()))},
            **{f"step_accuracy_{k}": float(np.mean(v)) for k, v in by_kind.items() if v}}


def run_lm(cfg: TrainConfig, tok: CharTokenizer, config: ModelConfig, optim: OptimConfig, work: Path,
           config_file: str | None):
    problems = arith.generate_problems(cfg.data.n_train, cfg.data.seed, cfg.data.levels)
    tokens, mask = lm.encode_examples(tok, problems, cfg.data.sequence_length)
    model = train(config, initial_params(cfg, config, config_file), lm.lm_loss,
                  lm.batch_sampler(tokens, mask, cfg.optim.batch_size, cfg.seed), optim, work,
                  checkpoint_every=cfg.checkpoint_every, desc=f"train {Path(cfg.out).name}")
    held_out = arith.generate_problems(cfg.data.n_eval, cfg.data.seed + 1000, cfg.data.levels)
    return model, lm_accuracy(model, tok, held_out)


def reference_cuts(problems: list[arith.Problem], seed: int, cut: int) -> list[int]:
    """How many reference steps each problem's solution starts from: none for cut 0 (the whole solution is the
    LM's own), otherwise k uniform in 1..level, drawn from (seed, cut)."""
    if cut == 0:
        return [0] * len(problems)
    return [1 + int(r) for r in np.random.default_rng([seed, cut]).integers(0, [p.level for p in problems])]


def continue_prefixes(model: Model, tok: CharTokenizer, problems: list[arith.Problem], ks: list[int], *,
                      temperature: float, seed: int) -> list[str]:
    """Each problem's first k reference steps followed by the LM's continuation (the whole solution for k = 0)."""
    prefixes = [arith.reference_prefix(p, k) for p, k in zip(problems, ks)]
    texts = prm.sample_solutions(model, tok, problems, temperature=temperature, seed=seed,
                                 prefixes=prefixes if any(ks) else None)
    return [prefix + text for prefix, text in zip(prefixes, texts)]


def prm_dataset(cfg: TrainConfig, tok: CharTokenizer, problems: list[arith.Problem], seed: int,
                lms: list[Model], temperature: float, copies: int, greedy: bool = False, cuts: int = 0,
                perturbed: float = 0.0, perturb_kinds: tuple[str, ...] = arith.PERTURBATIONS):
    """Token, mask and label arrays of `copies` solutions per problem sampled from each LM at `temperature`, plus
    each LM's greedy solution when `greedy`, every step labelled by the exact checker; with `cuts`, the same
    again for each of `cuts` reference prefixes per problem, the LM continuing it and only its own steps
    labelled; with `perturbed`, that many reference solutions per problem cut after one near-miss wrong step of
    one of `perturb_kinds` (its fractional part: one for that share of the problems, drawn at random)."""
    rows_p, rows_t, rows_first = [], [], []
    for cut in range(cuts + 1):
        ks = reference_cuts(problems, seed, cut)
        for k, model in enumerate(lms):
            for c, temp in enumerate([temperature] * copies + [0.0] * greedy):
                rows_t += continue_prefixes(model, tok, problems, ks, temperature=temp,
                                            seed=seed + 97 * k + c + 7919 * cut)
                rows_p += problems
                rows_first += ks
    rng = np.random.default_rng([seed, 1 + cuts, 271828])
    whole, part = divmod(perturbed, 1.0)
    for copy in range(int(whole) + (part > 0)):  # the whole copies first: their draws do not depend on `part`
        chosen = problems if copy < whole else perturbed_share(problems, part, rng)
        rows_t += [arith.perturbed_solution(p, rng, perturb_kinds) for p in chosen]
        rows_p += chosen
        rows_first += [0] * len(chosen)
    return prm.encode_prm_examples(tok, rows_p, rows_t, cfg.data.sequence_length, rows_first)


def perturbed_share(problems: list[arith.Problem], share: float, rng: np.random.Generator) -> list[arith.Problem]:
    """round(share * len(problems)) of the problems, drawn without replacement, in their order."""
    picked = rng.choice(len(problems), round(share * len(problems)), replace=False)
    return [problems[i] for i in sorted(picked)]


def run_prm(cfg: TrainConfig, tok: CharTokenizer, config: ModelConfig, optim: OptimConfig, work: Path,
            config_file: str | None):
    if not cfg.data.sample_from:
        raise RSDError("a PRM needs data.sample_from: the LM checkpoints whose steps it learns to score")
    problems = arith.generate_problems(cfg.data.n_train, cfg.data.seed, cfg.data.levels)
    if not all(arith.perturbable_steps(p, cfg.data.perturb_kinds) for p in problems):
        raise RSDError(f"data.perturb_kinds {list(cfg.data.perturb_kinds)}: some training problems have no step "
                       "such a perturbation can replace")
    if cfg.lm_loss_weight and not config.tie_word_embeddings:
        raise RSDError("lm_loss_weight needs model.tie_word_embeddings: a value-head PRM has no other LM head")
    init = initial_params(cfg, config, config_file)  # a wrong init_from fails here, before the sampling
    lms = [restore_model(resolve_path(p, config_file)) for p in cfg.data.sample_from]
    copies = (cfg.data.samples_per_problem + cfg.data.greedy) * (1 + cfg.data.prefix_cuts)
    n_perturbed = round(len(problems) * cfg.data.perturbed)
    print(f"sampling {len(problems) * len(lms) * copies} solutions to label"
          f"{f', and {n_perturbed} perturbed references' if n_perturbed else ''} ...")
    tokens, mask, labels = prm_dataset(cfg, tok, problems, cfg.data.seed, lms, cfg.data.temperature,
                                       cfg.data.samples_per_problem, cfg.data.greedy, cfg.data.prefix_cuts,
                                       cfg.data.perturbed, cfg.data.perturb_kinds)
    print(f"{int(mask.sum())} labelled steps, {labels[mask > 0].mean():.1%} correct")
    arrays = (tokens, mask, labels)
    if cfg.lm_loss_weight:
        arrays += (prm.solution_lm_weights(tokens, mask, labels, tok.encode("\n")[0], tok.delimiter_id),)

    def batch_at(step: int):
        idx = np.random.default_rng([cfg.seed, step]).integers(0, len(tokens), cfg.optim.batch_size)
        return trim_padding(tuple(a[idx] for a in arrays))

    loss_fn = functools.partial(prm.prm_loss, lm_weight=cfg.lm_loss_weight)
    model = train(config, init, loss_fn, batch_at, optim, work,
                  checkpoint_every=cfg.checkpoint_every, desc=f"train {Path(cfg.out).name}")
    held_out = arith.generate_problems(cfg.data.n_eval, cfg.data.seed + 1000, cfg.data.levels)
    metrics = {}
    for name, model_lm in zip(("draft", "target", "lm2", "lm3"), lms):
        for label, temp in (("greedy", 0.0), ("sampled", cfg.data.temperature)):
            t, m, y = prm_dataset(cfg, tok, held_out, cfg.data.seed + 1000, [model_lm], temp, 1)
            scores = prm.score_examples(model, t, m)
            metrics[f"auroc_{name}_{label}"] = prm.auroc(scores, y[m > 0])
            labels = y[m > 0]
            metrics[f"step_accuracy_{name}_{label}"] = float(labels.mean()) if labels.size else float("nan")
        ks = reference_cuts(held_out, cfg.data.seed + 1000, 1)  # greedy continuations of reference prefixes
        texts = continue_prefixes(model_lm, tok, held_out, ks, temperature=0.0, seed=0)
        t, m, y = prm.encode_prm_examples(tok, held_out, texts, cfg.data.sequence_length, ks)
        metrics[f"auroc_{name}_continued"] = prm.auroc(prm.score_examples(model, t, m), y[m > 0])
    return model, metrics


def initial_params(cfg: TrainConfig, config: ModelConfig, config_file: str | None) -> dict:
    """The parameters training starts from: a seeded fresh init, or with `init_from` the LM checkpoint's arrays
    (all of them for an LM that continues it; all but the value head, which starts fresh, for a PRM)."""
    init = Model.init(config, cfg.seed).pure_dict()
    if not cfg.init_from:
        return init
    base = restore_model(resolve_path(cfg.init_from, config_file)).pure_dict()
    merged = merge_backbone(init, base)
    fresh = [jax.tree_util.keystr(path)  # the arrays init_from did not supply
             for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(merged), jax.tree_util.tree_leaves(init))
             if a is b]
    if any("v_head" not in name for name in fresh):
        raise RSDError(f"init_from {cfg.init_from}: its arrays do not match the model's architecture (no array "
                       f"of the same shape for {', '.join(n for n in fresh if 'v_head' not in n)})")
    return merged


def merge_backbone(init: dict, base: dict) -> dict:
    """init with every array that `base` has at the same path and shape (the LM head and value head differ)."""
    def merge(a, b):
        if isinstance(a, dict):
            return {k: merge(v, b.get(k)) if isinstance(b, dict) else v for k, v in a.items()}
        return b if b is not None and getattr(b, "shape", None) == a.shape else a

    return merge(init, base)


def run_identity(cfg: TrainConfig, config_file: str | None) -> dict:
    """What makes two invocations the same run: the config (less out, work_dir, checkpoint_every), the data
    version, and a digest of each checkpoint the run reads (init_from, data.sample_from), so that a retrained
    draft is a different PRM run."""
    identity = {k: v for k, v in to_dict(cfg).items() if k not in _NOT_IDENTITY}
    identity["data_version"] = arith.DATA_VERSION
    sources = {}
    for ref in ([cfg.init_from] if cfg.init_from else []) + list(cfg.data.sample_from):
        path = resolve_path(ref, config_file)
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else []
        digest = hashlib.sha256()
        for f in files:
            digest.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes())
        sources[ref] = digest.hexdigest() if files else None
    identity["sources"] = sources
    return identity


def _flat(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}.{key}" if prefix else key).items()}


def claim_work_dir(work: Path, identity: dict) -> None:
    """Records the run in work_dir, or checks that the checkpoints already there are this run's; a different
    run's checkpoints would otherwise be resumed silently (ConfigError naming the keys that differ)."""
    checkpoints = work.is_dir() and any(p.name.isdigit() for p in work.iterdir())
    record = work / RUN_FILE
    if checkpoints:
        if not record.is_file():
            raise ConfigError(f"work_dir {work} holds training checkpoints but no {RUN_FILE}, so it cannot tell "
                              f"whose run they are; delete it or pass another work_dir=... to start afresh")
        try:
            old = json.loads(record.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{record} is unreadable ({e}); delete {work} to start afresh") from e
        was, now = _flat(old), _flat(json.loads(json.dumps(identity)))
        diffs = [f"{k}: {was.get(k)!r} there, {now.get(k)!r} now" for k in sorted(set(was) | set(now))
                 if was.get(k) != now.get(k)]
        if diffs:
            raise ConfigError(f"work_dir {work} holds the checkpoints of a different run ({'; '.join(diffs[:4])}"
                              f"{'; ...' if len(diffs) > 4 else ''}); resuming it would mix two runs. Delete it or "
                              f"pass another work_dir=... to start afresh")
        return
    work.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(identity, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsd_jax.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML config (configs/train_*.yaml)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--describe", action="store_true", help="list every config key with its doc and exit")
    parser.add_argument("overrides", nargs="*", help="key.path=value")
    args = parser.parse_intermixed_args(argv)
    if args.describe:
        print(describe(TrainConfig))
        return 0
    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
        if args.print_config:
            print(to_yaml(cfg), end="")
            return 0
        tok = CharTokenizer()
        config = model_config(cfg, tok.vocab_size)
        optim = cfg.optim
        out, work = resolve_path(cfg.out, args.config), resolve_path(cfg.work_dir, args.config)
        check_destination(out, "out", cfg.overwrite, "overwrite=true")  # before any training
        claim_work_dir(work, run_identity(cfg, args.config))
        resumed = sorted(int(p.name) for p in work.glob("[0-9]*") if p.name.isdigit()) if work.is_dir() else []
        start = time.time()
        if cfg.kind == "lm":
            model, metrics = run_lm(cfg, tok, config, optim, work, args.config)
        else:
            model, metrics = run_prm(cfg, tok, config, optim, work, args.config)
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
        with staged_folder(out, cfg.overwrite) as tmp:  # the model and its manifest appear together, or not at all
            save_model(model, tmp, metadata={"data_version": arith.DATA_VERSION})
            tok.save(tmp / TOKENIZER_FILE)
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    except RSDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(out), **metrics}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
