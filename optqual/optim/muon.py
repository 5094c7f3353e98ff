"""Muon (Jordan et al. 2024) on the hidden weight matrices, and another optimizer of the group on the rest.

Muon's update is pytorch-optimizer's: Nesterov momentum, orthogonalized by five quintic
Newton-Schulz iterations (Keller Jordan's coefficients 3.4445, -4.7750, 2.0315), with the
learning rate scaled by sqrt(max(1, rows / columns)). Convolution filters are updated as
out x (in * kh * kw) matrices. torch.optim.Muon takes 2-D parameters only, so it cannot
update conv filters. The parameters Muon is not meant for (the stem, the classifier,
biases and norm weights; see `optqual.optim.build.parameter_groups`) go to `rest`, any
plain option of the group (AdamW by default, as in Jordan's reference; SGD as in airbench).
"""

from typing import Callable

import torch
from torch.optim import Optimizer

from optqual.compat import share_state


class Muon(Optimizer):
    """One optimizer over both parts, so that one LR scheduler, one state_dict and SAM see every group.

    The groups and the per-parameter state live here; the two inner optimizers are pointed at
    their share of them before every step, so a `load_state_dict` (this one's, or SAM's, which
    replaces both lists) can never leave them updating stale copies.
    """

    def __init__(self, params, rest: Callable[[list[dict]], Optimizer], lr: float = 0.02, momentum: float = 0.95,
                 nesterov: bool = True, ns_steps: int = 5, weight_decay: float = 0.0):
        groups = list(params)
        matrices = [group for group in groups if group.get("use_muon")]
        if not matrices:
            raise ValueError("muon: the model has no hidden weight matrices (conv or linear layers between the stem and the head)")
        import pytorch_optimizer  # imported by the runs that use it: it takes 0.7 s to import

        self.muon = pytorch_optimizer.Muon(matrices, lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                                           weight_decay=weight_decay)
        self.rest = rest([group for group in groups if not group.get("use_muon")])
        super().__init__(groups, defaults={})

    def _parts(self) -> tuple[Optimizer, Optimizer]:
        """Both inner optimizers on their share of the groups, and on this one's state dict (their
        parameters are disjoint: one dict holds both states)."""
        muon = share_state(self.muon, [group for group in self.param_groups if group.get("use_muon")], self.state)
        return muon, share_state(self.rest, [group for group in self.param_groups if not group.get("use_muon")], self.state)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self._parts():
            part.step()
        return loss
