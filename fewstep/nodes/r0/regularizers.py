"""R0's weight regulariser: the squared distance of the generator's weights from the pretrained ones.

R0 (Luo et al. 2025, methods.md §8) maximises Σ_j w_j R_j − λ ‖θ − θ0‖², keeping the generator near the
diffusion model it starts from. We measure the drift *relative* to the pretrained weights' own size,

    drift(θ) = ‖θ − θ0‖² / ‖θ0‖²          (sums over the trained layers only)

so λ does not depend on the network's parameter count or scale (our choice; the paper gives no λ). With
LoRA (peft) θ − θ0 of a layer is exactly the adapter's ΔW = s · B A, whose squared Frobenius norm is computed
without forming ΔW: ‖B A‖² = Σ (BᵀB) ⊙ (A Aᵀ).
"""

from __future__ import annotations

from torch import Tensor, nn


def _lora_layers(module: nn.Module) -> list[tuple[Tensor, Tensor, float, Tensor]]:
    """(A [r, in·k·k], B [out, r], scale, base weight) of every peft LoRA layer (adapter 'default')."""
    from peft.tuners.lora import LoraLayer

    out = []
    for sub in module.modules():
        if isinstance(sub, LoraLayer) and "default" in sub.lora_A:
            a = sub.lora_A["default"].weight                                  # [r, in(, k, k)]
            b = sub.lora_B["default"].weight                                  # [out, r(, 1, 1)]
            out.append((a.flatten(1), b.flatten(1), float(sub.scaling["default"]), sub.get_base_layer().weight))
    return out


class WeightDrift:
    """``drift()`` = ‖θ − θ0‖² / ‖θ0‖² of a module's trained weights (full fine-tune or peft LoRA).

    Args:
        module: the generator network, with its trainable parameters already marked (requires_grad).
            For a LoRA network the adapters are the trained weights and θ0 is the frozen base; otherwise θ0
            is a snapshot of the trainable parameters taken here (call before training).
    """

    def __init__(self, module: nn.Module) -> None:
        self.lora = _lora_layers(module)
        if self.lora:
            self.params: list[nn.Parameter] = []
            self.initial: list[Tensor] = []
            norm0 = sum(float(w.detach().float().pow(2).sum()) for *_, w in self.lora)
        else:
            self.params = [p for p in module.parameters() if p.requires_grad]
            if not self.params:
                raise ValueError("WeightDrift: the module has no trainable parameters")
            self.initial = [p.detach().clone() for p in self.params]
            norm0 = sum(float(p.float().pow(2).sum()) for p in self.initial)
        self.norm0 = max(norm0, 1e-12)

    def __call__(self) -> Tensor:
        if self.lora:
            total = sum(s * s * ((b.float().T @ b.float()) * (a.float() @ a.float().T)).sum()
                        for a, b, s, _ in self.lora)
        else:
            total = sum((p.float() - p0.float()).pow(2).sum() for p, p0 in zip(self.params, self.initial, strict=True))
        return total / self.norm0
