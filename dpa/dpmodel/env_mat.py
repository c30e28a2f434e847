"""Switch functions and the environment matrix R̃ of spec §2.4-2.5, computed from edge vectors."""

from __future__ import annotations

from .array_api import Array, safe_norm, xp_of


def polynomial_switch(r: Array, rcut_smth: float, rcut: float) -> Array:
    """w(r) = 1 - 10u³ + 15u⁴ - 6u⁵ with u = clip((r - r_s)/(r_c - r_s), 0, 1); C² at both ends."""
    xp = xp_of(r)
    u = (xp.clip(r, rcut_smth, rcut) - rcut_smth) / (rcut - rcut_smth)
    u2 = u * u  # DeePMD-kit's operation order: w cancels badly near rcut, so order shows
    return u2 * u * (-6.0 * u2 + 15.0 * u - 10.0) + 1.0


def exponential_switch(r: Array, rcut_smth: float, rcut: float) -> Array:
    """w(r) = exp(-exp(20 (r̄ - r_s)/r_s)) with r̄ = clip(r, 0, r_c) (DPA-3 `use_exp_switch`)."""
    xp = xp_of(r)
    rr = xp.clip(r, 0.0, rcut)
    return xp.exp(-xp.exp(20.0 * (rr - rcut_smth) / rcut_smth))


def environment_matrix(
    rij: Array,
    mask: Array,
    rcut: float,
    rcut_smth: float,
    protection: float = 0.0,
    use_exp_switch: bool = False,
) -> tuple[Array, Array]:
    """Un-normalized R̃ (nf, nat, nnei, 4) and switch s (nf, nat, nnei) of the edges `rij`.

    `mask` (nf, nat, nnei) marks real slots; empty slots give exact zeros and zero gradients.
    """
    xp = xp_of(rij)
    dist = safe_norm(xp.where(mask[..., None], rij, xp.ones_like(rij)))[..., 0]
    switch_fn = exponential_switch if use_exp_switch else polynomial_switch
    sw = xp.where(mask, switch_fn(dist, rcut_smth, rcut), xp.zeros_like(dist))
    length = dist[..., None] + protection
    env = xp.concat([1.0 / length, rij / (length * length)], axis=-1) * sw[..., None]
    env = xp.where(mask[..., None], env, xp.zeros_like(env))
    return env, sw


def normalize(env: Array, davg: Array, dstd: Array, center_type: Array) -> Array:
    """(R̃ - davg[t_i]) / dstd[t_i] for every slot, empty ones included (their phantom row)."""
    xp = xp_of(env)
    avg = xp.take(davg, center_type, axis=0)  # (nat, nnei, 4)
    std = xp.take(dstd, center_type, axis=0)
    return (env - avg) / std
