"""Optax optimisers over the image, with one jitted step per pyramid level.

The image is the optimised parameter. Adam steps are projected back into [0, 1]; L-BFGS runs
unconstrained (clipping would invalidate its curvature pairs and line-search values) and the
result is clamped when it is written, as in neural-style.

Two optional pieces act around the step, as pure functions over the state:
- iterate averaging (`init_state`/`make_step` with `average` > 0, `level_result`): the level's
  result is a bias-corrected exponential moving average of its iterates, which averages away the
  last iterates' step-size noise;
- Adam carried across scales (`carry_adam`): the next level starts from this level's moments,
  resized to its size, and its step count, instead of a fresh Adam and a step-size warm-up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .config import OPTIMIZERS
from .errors import UserError
from .objective import LaggedFn, LossFn

#: (params, targets, x, opt_state[, grams]) -> (x, opt_state, loss, terms[, grams]); the Grams
#: only with `make_step`'s `lagged`.
Step = Callable[..., tuple]


#: Adam carries its first moment in bfloat16 (optax's `mu_dtype`; each step's moment and update
#: are computed in fp32): 6 fewer bytes per pixel of state, on the device and in host memory.
#: The second moment stays fp32: its per-step change, 1 − β₂ = 10⁻³ of itself, is below
#: bfloat16's resolution and would be rounded away.
ADAM_MU_DTYPE = jnp.bfloat16


def make_optimizer(
    name: str, learning_rate: float, warmup: int = 0
) -> optax.GradientTransformation:
    """Adam or L-BFGS. With `warmup`, Adam's step size ramps linearly from learning_rate/warmup
    to learning_rate over its first `warmup` steps.

    A pyramid level starts Adam afresh, and a fresh Adam moves every pixel by the full step size
    whatever its gradient (bias correction makes the first update ±learning_rate): on an
    upsampled, already stylised image that is noise, and a fine level given few steps ended
    with a higher loss than it started from. Levels after the first therefore warm up."""
    if name == "adam":
        return optax.adam(warmup_schedule(learning_rate, warmup), mu_dtype=ADAM_MU_DTYPE)
    if name == "lbfgs":
        base = optax.lbfgs(
            memory_size=20, linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=15)
        )
        # optax's initial L-BFGS state shares one zero buffer between its two memories; copy
        # it so that the step can donate the state without donating a buffer twice.
        return optax.GradientTransformationExtraArgs(
            lambda params: jax.tree_util.tree_map(jnp.copy, base.init(params)), base.update
        )
    raise UserError(f"unknown optimizer {name!r}; use one of: {', '.join(OPTIMIZERS)}")


def warmup_schedule(learning_rate: float, warmup: int) -> optax.ScalarOrSchedule:
    if warmup <= 0:
        return learning_rate
    return lambda count: learning_rate * jnp.minimum(1.0, (count + 1) / warmup)


class Averaged(NamedTuple):
    """An optimiser state with the running average of the iterates (`init_state`)."""

    inner: Any
    average: jax.Array
    count: jax.Array


def init_state(opt: optax.GradientTransformation, x: jax.Array, average: float = 0.0) -> Any:
    """The optimiser's initial state, wrapped in `Averaged` when averaging (decay > 0)."""
    state = opt.init(x)
    if average <= 0:
        return state
    return Averaged(state, jnp.zeros_like(x), jnp.zeros((), jnp.int32))


def ema_update(avg: jax.Array, x: jax.Array, count: jax.Array, decay: float) -> jax.Array:
    """The bias-corrected EMA after its `count`-th iterate x (count ≥ 1):
    avg_c = Σ_{i≤c} decay^(c−i) (1 − decay) x_i / (1 − decay^c), so avg_1 = x_1 and no start
    value is mixed in."""
    c = count.astype(jnp.float32)
    w = (1.0 - decay) / (1.0 - jnp.float32(decay) ** c)
    return (avg + w * (x - avg)).astype(avg.dtype)


def level_result(x: jax.Array, state: Any) -> jax.Array:
    """A level's result: the average of its iterates when averaging (and any step was taken),
    else the last iterate."""
    if isinstance(state, Averaged):
        return jnp.where(state.count > 0, state.average, x)
    return x


def carry_adam(new: Any, old: Any, hw: tuple[int, int]) -> Any:
    """`new` (a fresh state at the next level, size hw) with `old`'s Adam moments resized into
    it (bilinear, so the second moment stays ≥ 0) and `old`'s step counts.

    Every loss term is a mean over positions, so a pixel's gradient scales as 1/pixels: the
    moments are rescaled by the area ratio a (first ×a, second ×a²) to the gradients they will
    be mixed with, and Adam's step, m/√v, carries over unchanged.
    """

    def adam_states(state):
        leaves = jax.tree_util.tree_leaves(
            state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState)
        )
        return [s for s in leaves if isinstance(s, optax.ScaleByAdamState)]

    (o,) = adam_states(old.inner if isinstance(old, Averaged) else old)
    a = (o.mu.shape[0] * o.mu.shape[1]) / (hw[0] * hw[1])

    def resize(m, scale):
        out = jax.image.resize(m.astype(jnp.float32), (*hw, m.shape[2]), "linear") * scale
        return out.astype(m.dtype)

    carried = o._replace(mu=resize(o.mu, a), nu=resize(o.nu, a * a))

    def swap(s):
        if isinstance(s, optax.ScaleByAdamState):
            return carried
        if "count" in getattr(s, "_fields", ()):  # a schedule's step count (own buffer:
            return s._replace(count=jnp.copy(o.count))  # the step donates the state)
        return s

    inner = new.inner if isinstance(new, Averaged) else new
    inner = jax.tree_util.tree_map(
        swap, inner, is_leaf=lambda s: isinstance(s, tuple) and hasattr(s, "_fields")
    )
    return new._replace(inner=inner) if isinstance(new, Averaged) else inner


def make_step(
    loss_fn: LossFn,
    name: str,
    opt: optax.GradientTransformation,
    average: float = 0.0,
    lagged: LaggedFn | None = None,
) -> Step:
    """A jitted (params, targets, x, opt_state) -> (x, opt_state, loss, terms) step.

    The loss is evaluated at the image *before* the update; x and the optimiser state are
    donated so the device holds one copy of each. With `average` (EMA decay > 0) the state is
    `init_state`'s `Averaged`, and its average takes each new iterate. With `lagged`
    (`objective.make_lagged_fn`, Adam only) the gradient comes from it instead of `loss_fn`:
    the step takes the previous step's Grams last and returns this image's Grams last,
    (params, targets, x, opt_state, grams) -> (x, opt_state, loss, terms, grams).
    """

    def adam_step(params, targets, x, state, *grams):
        if lagged is None:
            (loss, terms), grad = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)(
                params, x, targets
            )
        else:
            (loss, terms), grad, new = lagged(params, x, targets, *grams)
            grams = (new,)
        updates, state = opt.update(grad, state, x)
        x = jnp.clip(optax.apply_updates(x, updates), 0.0, 1.0)
        return x, state, loss, terms, *grams

    def lbfgs_step(params, targets, x, state):
        def value_fn(y):
            return loss_fn(params, y, targets)[0]

        loss, grad = optax.value_and_grad_from_state(value_fn)(x, state=state)
        updates, state = opt.update(grad, state, x, value=loss, grad=grad, value_fn=value_fn)
        return optax.apply_updates(x, updates), state, loss, {}

    if lagged is not None and name != "adam":
        raise UserError("--gram lagged needs --optimizer adam")
    step = adam_step if name == "adam" else lbfgs_step
    if average > 0:
        inner_step = step

        def step(params, targets, x, state, *grams):
            x, inner, loss, terms, *grams = inner_step(params, targets, x, state.inner, *grams)
            count = state.count + 1
            avg = ema_update(state.average, x, count, average)
            return x, Averaged(inner, avg, count), loss, terms, *grams

    return jax.jit(step, donate_argnums=(2, 3))


def opt_arrays(state: Any) -> dict[str, Any]:
    """An optimiser state as named arrays, for checkpoints: Adam as `mu`, `nu`, `count` (the
    host-resident state's names too, so one checkpoint layout serves both), others by leaf."""
    if _is_adam(state):
        adam = state[0]
        return {"mu": adam.mu, "nu": adam.nu, "count": adam.count}
    return {f"opt{i}": leaf for i, leaf in enumerate(jax.tree_util.tree_leaves(state))}


def restore_opt(template: Any, arrays: dict[str, Any]) -> Any:
    """The state `opt_arrays` saved, with the structure of `template` (a fresh `opt.init`)."""
    if _is_adam(template):
        if set(arrays) != {"mu", "nu", "count"}:
            raise UserError("checkpoint's optimiser state is not Adam's; pass --restart")
        count = jnp.asarray(arrays["count"], template[0].count.dtype)
        adam = template[0]._replace(
            count=count,
            mu=jnp.asarray(arrays["mu"], template[0].mu.dtype),
            nu=jnp.asarray(arrays["nu"], template[0].nu.dtype),
        )
        rest = template[1]
        if isinstance(rest, optax.ScaleByScheduleState):  # a copy: the step donates both
            rest = rest._replace(count=jnp.copy(count))
        return (adam, rest)
    leaves = [arrays.get(f"opt{i}") for i in range(len(arrays))]
    treedef = jax.tree_util.tree_structure(template)
    if treedef.num_leaves != len(arrays) or any(v is None for v in leaves):
        raise UserError(
            "checkpoint's optimiser state does not match this optimizer; pass --restart"
        )
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(v) for v in leaves])


def _is_adam(state: Any) -> bool:
    return (
        isinstance(state, tuple)
        and len(state) == 2
        and isinstance(state[0], optax.ScaleByAdamState)
    )
