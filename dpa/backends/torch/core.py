"""What the torch modules of dpa share: torch's side of the force chain of evaluation and
training (`EDGE_AUTODIFF`, see `dpa.dpmodel.derivatives`)."""

from __future__ import annotations

import torch


def scatter_add(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sum rows of `values` (1, m, ...) into `size` slots of axis 1 by `index` (m,)."""
    out = torch.zeros((1, size, *values.shape[2:]), dtype=values.dtype, device=values.device)
    return out.index_add(1, index, values)


class TorchEdgeAutodiff:
    """`dpa.dpmodel.derivatives.EdgeAutodiff` on torch autograd; the edge vectors are
    differentiated through a leaf of their own, so the caller's tensor stays a constant."""

    @staticmethod
    def energy_and_edge_grad(atoms, rij: torch.Tensor, keep_graph: bool = False):
        """(E_i, dE/dr) from one backward pass; detached unless `keep_graph` (then dE/dr has
        the graph of its own derivative: training's double backward)."""
        r = rij.detach().requires_grad_(True)
        e_atom = atoms(r)
        (grad,) = torch.autograd.grad(torch.sum(e_atom), r, create_graph=keep_graph)
        return (e_atom, grad) if keep_graph else (e_atom.detach(), grad)

    @staticmethod
    def energy_and_weighted_edge_grads(atoms, rij: torch.Tensor, positions: torch.Tensor):
        """Four backward passes over one forward (spec §9's d(Σ_i E_i p_i)/dr), detached."""
        r = rij.detach().requires_grad_(True)
        e_atom = atoms(r)
        (grad,) = torch.autograd.grad(torch.sum(e_atom), r, retain_graph=True)
        weighted = [
            torch.autograd.grad(e_atom, r, grad_outputs=positions[..., k], retain_graph=k < 2)[0]
            for k in range(3)
        ]
        return e_atom.detach(), grad, torch.stack(weighted, dim=-1)

    scatter_add = staticmethod(scatter_add)


EDGE_AUTODIFF = TorchEdgeAutodiff()
