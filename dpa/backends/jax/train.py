"""JAX training step: jit-compiled loss with forces from an inner gradient, its parameter gradient,
and an optax Adam/AdamW update; the learning rate is an argument, so one compilation serves a run."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dpa.backends.allocator import release_free_memory
from dpa.backends.jax import pytrees  # noqa: F401  (Batch as a pytree)
from dpa.backends.jax.checkpointed import checkpointed_phases, run_phases
from dpa.backends.jax.core import EDGE_AUTODIFF, SLOT_ROUNDING
from dpa.dpmodel.batch import Batch
from dpa.dpmodel.derivatives import edge_outputs, model_outputs
from dpa.dpmodel.model import ModelSettings, atomic_energy, edge_vectors, energy_split, parse_model
from dpa.dpmodel.trainable import gradient_tree, layout
from dpa.errors import ConfigError
from dpa.tree import merge_variables

LossFn = Callable[[dict, dict, Any], tuple[Any, dict]]


class Static(NamedTuple):
    """What a compiled step is specialized on besides array values: the model's settings and
    its tree without arrays, which leaves train, and the batch's host-side types and hints."""

    settings: ModelSettings
    skeleton: Any
    flags: tuple[bool, ...]
    atype_host: np.ndarray
    slot_counts: tuple


def _leaves(flags: tuple[bool, ...], params: list, fixed: list) -> list:
    """Trainable and fixed variables back in traversal order."""
    it_p, it_f = iter(params), iter(fixed)
    return [next(it_p) if f else next(it_f) for f in flags]


def _model_of(static: Static, params, fixed) -> dict:
    """The model tree with the given trainable and fixed variables."""
    return merge_variables(static.skeleton, _leaves(static.flags, params, fixed))


def _outputs(e_atom, grad, rij, batch: Batch) -> dict:
    """energy, force, virial, atom_energy from E_i and dE/dr_ij (the checkpointed phases)."""
    return edge_outputs(e_atom, grad, rij, batch.nlist, EDGE_AUTODIFF.scatter_add)


def _predict(static: Static, params, fixed, batch: Batch) -> dict:
    """energy, force, virial, atom_energy of a batch; differentiable in `params`."""
    model = _model_of(static, params, fixed)
    rij = edge_vectors(batch.coord, batch.box, batch.nlist, batch.shift)

    def atoms(r):
        edges = batch.edges(r, static.atype_host)
        return atomic_energy(static.settings, model, edges, batch.fparam, batch.aparam)

    return model_outputs(EDGE_AUTODIFF, atoms, rij, batch.nlist, keep_graph=True)


class _Optimizer(NamedTuple):
    """Adam/AdamW over groups of trainable leaves, each group with its own optax state.

    A group holds the leaves the same branches reach, so its leaves always step together; a
    step on one branch of a multi-task model updates the groups that branch reaches and leaves
    the others untouched (their moments and step counts too), as torch's optimizers skip
    parameters without a gradient. The gradient is clipped over the whole step, before.
    """

    clip: Any  # optax.clip_by_global_norm or None
    tx: Any  # the lr-free chain: Adam's scaled moments (+ weight decay)
    groups: tuple[tuple[int, ...], ...]

    def init(self, params: list) -> tuple:
        return tuple(self.tx.init([params[i] for i in group]) for group in self.groups)

    def update(self, reached: tuple[int, ...], params, grads, opt_state, lr):
        """The update at learning rate lr of the groups `reached`: (params, opt_state)."""
        if self.clip is not None:
            grads, _ = self.clip.update(grads, self.clip.init(params))
        params, states = list(params), list(opt_state)
        for g in reached:
            group = self.groups[g]
            sub = [params[i] for i in group]
            updates, states[g] = self.tx.update([grads[i] for i in group], states[g], sub)
            for i, p, u in zip(group, sub, updates, strict=True):
                params[i] = p - lr * u
        return params, tuple(states)


def _groups(members: dict) -> tuple[tuple[int, ...], ...]:
    """The trainable positions grouped by the set of branches that reach them."""
    reach: dict[int, list] = {}
    for name, positions in members.items():
        for i in positions:
            reach.setdefault(i, []).append(name)
    by_key: dict[tuple, list[int]] = {}
    for i in sorted(reach):
        by_key.setdefault(tuple(map(str, reach[i])), []).append(i)
    return tuple(tuple(g) for g in by_key.values())


def _update(opt: _Optimizer, reached: tuple[int, ...], params, grads, opt_state, lr):
    """The optimizer update at learning rate lr: (params, opt_state)."""
    return opt.update(reached, params, grads, opt_state, lr)


def _metrics(static, loss_fn, params, fixed, batch, labels, lr):
    """The loss's metrics of a batch (validation): forward and forces only."""
    return loss_fn(_predict(static, params, fixed, batch), labels, lr)[1]


def _gradients(static, loss_fn, params, fixed, batch, labels, lr):
    """(loss, metrics, gradient of the loss in `params`) of a batch."""

    def loss_of(p):
        return loss_fn(_predict(static, p, fixed, batch), labels, lr)

    (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
    return loss, metrics, grads


def _step(static, update, loss_fn, params, fixed, opt_state, batch, labels, lr):
    """One update: (params, opt_state, loss, metrics)."""
    loss, metrics, grads = _gradients(static, loss_fn, params, fixed, batch, labels, lr)
    params, opt_state = update(params, grads, opt_state, lr)
    return params, opt_state, loss, metrics


class JaxTrainer:
    """The model's trainable variables as jax arrays, the optax state, and one training step.

    `tree` is one model tree, or {branch: tree} for a multi-task model (shared arrays are one
    leaf); a step then names its `task` and updates only what that branch reaches.
    """

    slot_rounding = SLOT_ROUNDING  # each new batch shape is a new compilation

    def __init__(
        self,
        tree: dict,
        optimizer: str = "Adam",
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        max_norm: float | None = None,
        checkpointing: bool = False,
    ) -> None:
        """checkpointing: compute each step's gradient in phases (`checkpointed`), for less
        memory and more time; it needs a model with a cut (DPA-3)."""
        self.layout = layout(tree)
        trees = self.layout.tree(self.layout.leaves)
        self.settings = {
            name: parse_model(trees if name is None else trees[name])
            for name in self.layout.skeletons
        }
        splits = {name: energy_split(s) for name, s in self.settings.items()}
        if checkpointing and any(split is None for split in splits.values()):
            kinds = sorted({s.descriptor.__class__.__name__ for s in self.settings.values()})
            raise ConfigError(
                "training.gradient_checkpointing needs a DPA-3 descriptor (a model that can be "
                f"cut between layers); this one has {', '.join(kinds)}. Remove "
                "the key or set it to false"
            )
        self.splits = splits if checkpointing else None
        self.skeleton = self.layout.skeleton(None) if self.layout.single else None
        self.flags = self.layout.flags
        arrays = [jnp.asarray(np.asarray(a)) for a in self.layout.leaves]
        self.params = [a for a, f in zip(arrays, self.flags, strict=True) if f]
        self.fixed = [a for a, f in zip(arrays, self.flags, strict=True) if not f]
        if optimizer not in ("Adam", "AdamW"):
            raise ConfigError(f"optimizer.type {optimizer!r} is not supported; use Adam or AdamW")
        # lr is applied by the step, so the transformation is lr-free: Adam's scaled moments
        # (+ decoupled weight decay, as torch.optim.AdamW), after optional global-norm clipping
        parts = []
        if optimizer == "Adam" and weight_decay:  # an L2 term on the gradient, as torch's Adam
            parts.append(optax.add_decayed_weights(weight_decay))
        parts.append(optax.scale_by_adam(b1=betas[0], b2=betas[1], eps=1e-8))
        if optimizer == "AdamW" and weight_decay:
            parts.append(optax.add_decayed_weights(weight_decay))
        clip = None if max_norm is None else optax.clip_by_global_norm(max_norm)
        groups = _groups(self.layout.members)
        self.optimizer = _Optimizer(clip, optax.chain(*parts), groups)
        self.reached = {
            name: tuple(g for g, group in enumerate(groups) if set(group) <= set(positions))
            for name, positions in self.layout.members.items()
        }
        self.opt_state = self.optimizer.init(self.params)
        self._compiled: dict = {}

    def tree(self) -> dict:
        """The current model tree (or {branch: tree}) as NumPy arrays."""
        leaves = _leaves(self.flags, self.params, self.fixed)
        return self.layout.tree([np.asarray(a) for a in leaves])

    @property
    def split(self) -> int | None:
        """Where a single model is cut for the checkpointed step (None: one compiled call)."""
        return None if self.splits is None else self.splits.get(None)

    @staticmethod
    def _adam(chain_state: tuple) -> optax.ScaleByAdamState:
        return next(st for st in chain_state if isinstance(st, optax.ScaleByAdamState))

    def optimizer_state(self) -> dict:
        """Adam's step count and moments as NumPy (the layout TorchTrainer shares): one count
        for a single model, one per trainable leaf for a multi-task one."""
        n = len(self.params)
        counts, mu, nu = [0] * n, [None] * n, [None] * n
        for group, chain_state in zip(self.optimizer.groups, self.opt_state, strict=True):
            adam = self._adam(chain_state)
            for i, m, v in zip(group, adam.mu, adam.nu, strict=True):
                counts[i], mu[i], nu[i] = int(adam.count), np.asarray(m), np.asarray(v)
        count = np.asarray(max(counts, default=0)) if self.layout.single else np.asarray(counts)
        return {"count": count, "mu": mu, "nu": nu}

    def load_optimizer_state(self, state: dict) -> None:
        """Restore what `optimizer_state` (of either backend) returned."""
        counts = np.broadcast_to(np.asarray(state["count"]), (len(self.params),))
        states = []
        for group, chain_state in zip(self.optimizer.groups, self.opt_state, strict=True):
            adam = optax.ScaleByAdamState(
                count=jnp.asarray(int(counts[group[0]]), dtype=jnp.int32),
                mu=[jnp.asarray(np.asarray(state["mu"][i])) for i in group],
                nu=[jnp.asarray(np.asarray(state["nu"][i])) for i in group],
            )
            states.append(
                tuple(adam if isinstance(st, optax.ScaleByAdamState) else st for st in chain_state)
            )
        self.opt_state = tuple(states)

    def _static(self, batch: Batch, task: str | None = None) -> Static:
        atype = np.asarray(batch.atype)
        return Static(
            self.settings[task],
            self.layout.skeleton(task),
            self.flags,
            atype,
            tuple(batch.slot_counts),
        )

    @staticmethod
    def _arrays(batch: Batch) -> Batch:
        return batch.map(lambda _, a: jnp.asarray(a))

    def predict(
        self, batch: Batch, create_graph: bool = False, task: str | None = None
    ) -> dict[str, jax.Array]:
        """The model's outputs for a batch with the current variables (create_graph: unused;
        jax differentiates whatever calls it)."""
        return _predict(self._static(batch, task), self.params, self.fixed, self._arrays(batch))

    def metrics(
        self, batch: Batch, labels: dict, lr: float, loss_fn: LossFn, task: str | None = None
    ) -> dict[str, float]:
        """The loss's metrics on a batch without updating (validation); compiled once per batch
        shape, as the step (op-by-op it took seconds per call and hundreds of small compiles)."""
        fn = self._jitted("metrics", _metrics, batch, labels, loss_fn, task)
        labels = {k: jnp.asarray(v) for k, v in labels.items()}
        metrics = fn(self.params, self.fixed, self._arrays(batch), labels, lr)
        return {k: float(v) for k, v in metrics.items()}

    def _jitted(
        self,
        kind: str,
        fn: Callable,
        batch: Batch,
        labels: dict,
        loss_fn: LossFn,
        task: str | None = None,
    ):
        """`fn(static, loss_fn, ...)` jitted for this batch's shapes, compiled once per key."""
        static = self._static(batch, task)
        key = (kind, task, *self._cache_key(static, batch, labels, loss_fn))
        if key not in self._compiled:
            self._compiled[key] = jax.jit(partial(fn, static, loss_fn))
        return self._compiled[key]

    def gradients(
        self, batch: Batch, labels: dict, lr: float, loss_fn: LossFn
    ) -> tuple[dict[str, float], dict]:
        """The loss's metrics (with "loss") and its gradient as a model tree (trainable leaves;
        None at statistics and buffers), without updating: what `step` would apply."""
        fn = self._jitted("gradients", _gradients, batch, labels, loss_fn)
        labels = {k: jnp.asarray(v) for k, v in labels.items()}
        loss, metrics, grads = fn(self.params, self.fixed, self._arrays(batch), labels, lr)
        values = {k: float(v) for k, v in {"loss": loss, **metrics}.items()}
        return values, gradient_tree(self.skeleton, self.flags, [np.asarray(g) for g in grads])

    @staticmethod
    def _cache_key(static: Static, batch: Batch, labels: dict, loss_fn: LossFn) -> tuple:
        """What a compiled step depends on besides the arrays' values."""
        return (
            static.atype_host.tobytes(),
            static.slot_counts,
            tuple((k, np.shape(v)) for k, v in batch.arrays().items()),
            tuple(sorted(labels)),
            loss_fn,
        )

    def step(
        self, batch: Batch, labels: dict, lr: float, loss_fn: LossFn, task: str | None = None
    ) -> dict[str, float]:
        """One optimizer update at learning rate `lr` (on branch `task` of a multi-task
        model); the loss's metrics as floats."""
        static = self._static(batch, task)
        key = ("step", task, *self._cache_key(static, batch, labels, loss_fn))
        fn = self._compiled.get(key)
        compiling = fn is None
        if compiling:
            fn = self._compile_step(static, loss_fn, task)
            self._compiled[key] = fn
        labels = {k: jnp.asarray(v) for k, v in labels.items()}
        self.params, self.opt_state, loss, metrics = fn(
            self.params, self.fixed, self.opt_state, self._arrays(batch), labels, lr
        )
        if compiling:
            release_free_memory()  # the compiler's freed scratch, otherwise resident all run
        return {k: float(v) for k, v in {"loss": loss, **metrics}.items()}

    def _compile_step(self, static: Static, loss_fn: LossFn, task: str | None) -> Callable:
        """(params, fixed, opt_state, batch, labels, lr) -> (params, opt_state, loss, metrics):
        one jitted call, or the checkpointed phases where the model is cut."""
        update = partial(_update, self.optimizer, self.reached[task])
        if self.splits is None:
            return jax.jit(partial(_step, static, update, loss_fn))
        phases = checkpointed_phases(
            static,
            self.splits[task],
            partial(_model_of, static),
            _outputs,
            loss_fn,
            update,
        )
        return partial(run_phases, phases)
