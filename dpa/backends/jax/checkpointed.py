"""The gradient of a force-matching loss in three jitted phases, for a model cut in two (DPA-3).

One jitted step keeps the residuals of the forward pass, of the force backward pass and of its
derivative for every layer at once (3.8 GB of XLA temporaries for DPA-3 water). Here the model is
cut after half of its layers into a head A (x, θ) -> s and a tail B (s, x, θ) -> E_i, with x the
edge vectors and d = ∂E/∂x = d_A + d_B, and each phase is its own compiled call, so one phase's
buffers are freed before the next one starts. On the water example, at most 2.3 GB of
temporaries (the step's peak memory 3.1 GB instead of 4.3 GB) for about 1.4x the time (the
phases recompute forward passes) when freed memory stays in the process, as `dpa train` sets up
glibc for it (`allocator.RETAINED_HEAP_TUNABLES`); with glibc's defaults each phase's fresh
GB-sized blocks fault in again every step, and it takes about 2x. Opt-in
(`training.gradient_checkpointing`).

1. E_i, g = ∂E/∂s, d, the loss ℓ(E_i, d) and its cotangents ε = ∂ℓ/∂E_i, v = ∂ℓ/∂d; then the
   reverse pass of the head's force part h_A(θ, g) = g·∂A/∂x against v: its direct θ gradient
   and ḡ, the cotangent of g.
2. The tail's full double backward: the map (θ, s) -> (E_i, d_B, g) against (ε, v, ḡ) gives
   the tail's θ gradient and s̄, the cotangent of s.
3. The head's first-order reverse pass against s̄, the sum of the three gradients, the update.

The sum is the chain rule of ℓ(E_i(θ), d(θ)) written out, so it equals the one-call gradient up
to rounding (tested).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from dpa.backends.jax import pytrees  # noqa: F401  (Batch as a pytree)
from dpa.dpmodel.batch import Batch
from dpa.dpmodel.descriptor.common import Edges
from dpa.dpmodel.model import atomic_energy_head, atomic_energy_tail, edge_vectors

Phases = tuple[Callable, Callable, Callable]


def _vjp_x(fn: Callable, x: jax.Array, cotangent: Any) -> jax.Array:
    """cotangent · ∂fn/∂x."""
    return jax.vjp(fn, x)[1](cotangent)[0]


def _sum3(a: list, b: list, c: list) -> list:
    return [p + q + r for p, q, r in zip(a, b, c, strict=True)]


def checkpointed_phases(
    static: tuple,
    split: int,
    model_of: Callable[[list, list], dict],
    outputs: Callable[[jax.Array, jax.Array, jax.Array, dict], dict],
    loss_fn: Callable,
    update: Callable,
) -> Phases:
    """The three phases, jitted, for one batch layout (`static`: the trainer's `Static`).

    model_of(params, fixed) -> model tree; outputs(e_atom, d, x, batch) -> the prediction dict the
    loss takes; update(params, grads, opt_state, lr) -> (params, opt_state).
    """
    atype_host, settings = static.atype_host, static.settings

    def edges(x: jax.Array, batch: Batch) -> Edges:
        return batch.edges(x, atype_host)

    def head(x, params, fixed, batch):
        return atomic_energy_head(settings, model_of(params, fixed), edges(x, batch), split)

    def tail(state, x, params, fixed, batch):
        return atomic_energy_tail(
            settings,
            model_of(params, fixed),
            edges(x, batch),
            state,
            split,
            batch.fparam,
            batch.aparam,
        )

    def first(params, fixed, batch, labels, lr):
        x = edge_vectors(batch.coord, batch.box, batch.nlist, batch.shift)

        def head_force(p, g_):
            return _vjp_x(lambda x_: head(x_, p, fixed, batch), x, g_)

        state = head(x, params, fixed, batch)
        e_atom, tail_vjp = jax.vjp(lambda s, x_: tail(s, x_, params, fixed, batch), state, x)
        g, d_tail = tail_vjp(jnp.ones_like(e_atom))
        d_head, head_force_vjp = jax.vjp(head_force, params, g)

        def loss_of(e, d):
            return loss_fn(outputs(e, d, x, batch), labels, lr)

        (loss, metrics), (eps, v) = jax.value_and_grad(loss_of, (0, 1), has_aux=True)(
            e_atom, d_head + d_tail
        )
        grad_head_force, g_bar = head_force_vjp(v)
        return loss, metrics, x, state, g_bar, eps, v, grad_head_force

    def second(params, fixed, batch, x, state, g_bar, eps, v):
        def tail_outputs(p, s):
            e_atom, tail_vjp = jax.vjp(lambda s_, x_: tail(s_, x_, p, fixed, batch), s, x)
            g, d_tail = tail_vjp(jnp.ones_like(e_atom))
            return e_atom, d_tail, g

        return jax.vjp(tail_outputs, params, state)[1]((eps, v, g_bar))

    def third(params, fixed, batch, x, state_bar, grad_head_force, grad_tail, opt_state, lr):
        grad_head = jax.vjp(lambda p: head(x, p, fixed, batch), params)[1](state_bar)[0]
        grads = _sum3(grad_head, grad_head_force, grad_tail)
        return update(params, grads, opt_state, lr)

    return jax.jit(first), jax.jit(second), jax.jit(third)


_PAUSE_S = 0.001


def _finished(outputs):
    """Wait for a phase's outputs, then briefly more: XLA frees the phase's temporaries just after
    the outputs are ready, and a phase dispatched before that gets another block (with the
    retained heap of `dpa train`, the peak then grew from 3.1 to 4.7 GB)."""
    outputs = jax.block_until_ready(outputs)
    time.sleep(_PAUSE_S)
    return outputs


def run_phases(phases: Phases, params, fixed, opt_state, batch, labels, lr) -> tuple:
    """One update through the phases: (params, opt_state, loss, metrics).

    Each phase, and the next step, waits for the phase before: a call dispatched early
    allocates its temporaries at once, and the phases' buffers would then be resident together
    (6.6 GB instead of 3.1)."""
    first, second, third = phases
    loss, metrics, x, state, g_bar, eps, v, grad_head_force = _finished(
        first(params, fixed, batch, labels, lr)
    )
    grad_tail, state_bar = _finished(second(params, fixed, batch, x, state, g_bar, eps, v))
    del state, g_bar
    params, opt_state = _finished(
        third(params, fixed, batch, x, state_bar, grad_head_force, grad_tail, opt_state, lr)
    )
    return params, opt_state, loss, metrics
