"""A small resumable training loop: optax AdamW with warmup + cosine decay, a progress bar, periodic orbax
checkpoints of (params, optimizer state, step), and resume after an interruption.

Batches are a pure function of (seed, step), so a resumed run sees exactly the batches it would have seen.
`trim_padding` cuts each batch to the width its longest row needs, so short rows do not pay for the longest
possible one (the step compiles once per width).
The loss is `loss_fn(model, batch) -> (loss, metrics)` on a `Model`; parameters travel as a pure dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from tqdm import tqdm

from rsd_jax.models.config import ModelConfig
from rsd_jax.models.model import Model

LossFn = Callable[[Model, Any], tuple[jax.Array, dict[str, jax.Array]]]


class OptimizerSettings(Protocol):
    """What the loop reads of the optimizer's settings (the fields of rsd_jax.config.OptimConfig)."""

    learning_rate: float  # peak AdamW learning rate
    warmup_steps: int  # linear warm-up
    total_steps: int  # then cosine decay to 5% of the peak
    weight_decay: float
    grad_clip: float  # global gradient-norm clip
    b1: float
    b2: float


def make_optimizer(o: OptimizerSettings) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(0.0, o.learning_rate, o.warmup_steps, o.total_steps,
                                                  end_value=o.learning_rate * 0.05)
    return optax.chain(optax.clip_by_global_norm(o.grad_clip),
                       optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay))


def trim_padding(batch: tuple[np.ndarray, ...], multiple: int = 16) -> tuple[np.ndarray, ...]:
    """The [B, T] arrays of a batch cut to the narrowest width, a multiple of `multiple` (or T), that keeps every
    non-pad token of batch[0], the token ids (PAD 0, right-padded).

    Exact for causal losses that weigh pad positions 0: a token never attends to the pad after it.
    """
    tokens = batch[0]
    used = int(np.max(np.nonzero(np.any(tokens != 0, axis=0))[0], initial=-1)) + 1
    width = min(tokens.shape[1], max(multiple, -(-used // multiple) * multiple))
    return tuple(a[:, :width] for a in batch)


def _train_step_fn(config: ModelConfig, loss_fn: LossFn, tx: optax.GradientTransformation):
    def loss_of_params(params, batch):
        return loss_fn(Model.from_pure_dict(config, params), batch)

    @jax.jit
    def step(params, opt_state, batch):
        (loss, metrics), grads = jax.value_and_grad(loss_of_params, has_aux=True)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss, **metrics}

    return step


def train(config: ModelConfig, init_params: dict, loss_fn: LossFn, batch_at: Callable[[int], Any],
          optim: OptimizerSettings, state_dir: Path, *, checkpoint_every: int = 200, desc: str = "train") -> Model:
    """Runs optim.total_steps steps from scratch or from the latest checkpoint in state_dir; returns the model.

    batch_at(step) -> batch; the state is saved every `checkpoint_every` steps and at the end.
    """
    tx = make_optimizer(optim)
    step_fn = _train_step_fn(config, loss_fn, tx)
    state = {"params": init_params, "opt_state": tx.init(init_params)}
    manager = ocp.CheckpointManager(Path(state_dir).absolute(),
                                    options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
    start = 0
    latest = manager.latest_step()
    if latest is not None:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        state = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
        start = latest
        print(f"resuming {desc} from step {start} ({state_dir})")
    params, opt_state = state["params"], state["opt_state"]
    bar = tqdm(range(start, optim.total_steps), initial=start, total=optim.total_steps, desc=desc)
    for step in bar:
        params, opt_state, metrics = step_fn(params, opt_state, batch_at(step))
        done = step + 1
        if done % 20 == 0:
            bar.set_postfix({k: f"{float(v):.4f}" for k, v in metrics.items()})
        if done % checkpoint_every == 0 or done == optim.total_steps:
            manager.save(done, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state}))
            manager.wait_until_finished()
    manager.close()
    return Model.from_pure_dict(config, jax.tree.map(jnp.asarray, params))
