"""The triplane generator: the teacher's UNet turned into a K-step generator of triplanes, adapted by LoRA.

TriplaneTurbo (methods.md §11) runs SD2.1's UNet on a batch of six plane latents and decodes x̂0 with a
modified VAE decoder into triplane features. Ours, at demo scale:

- latents z [B, P = 3, 3, R, R] (R = 16): one 3-channel "image" per plane, the teacher's image format;
- the teacher's UNet (frozen) runs on the batch [B·P, 3, R, R] with the caption embedding and no camera;
  its attention blocks attend across the P planes of an object (PETA's cross-plane attention);
- ε̂ → x̂0 = (z_t − √(1−ᾱ_t) ε̂) / √ᾱ_t, then a small conv head (the analogue of the replaced last conv of
  the VAE decoder) maps x̂0 [B·P, 3, R, R] to plane features [B, 3, C = 8, R, R], read by the shared
  ``TriplaneDecoder`` MLP into SDF and RGB (``nodes.core.render.triplane``);
- adaptation (PETA, paper §3.3): a *shared* LoRA on every ResBlock conv and on the time / text
  projections, and on the self-attention projections q, k, v, out either one LoRA for all planes
  (``lora = "shared"``, the paper's "basic LoRA") or one LoRA per plane (``lora = "plane-specific"``).

Trainable: the LoRA factors, the head and the MLP decoder; the UNet's own weights stay frozen.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fewstep.nodes.core.render.triplane import Triplane, TriplaneDecoder, TriplaneDecoderConfig
from fewstep.nodes.zoo.models import alphas_cumprod
from fewstep.nodes.zoo.multiview.models import MVUNet, copy_unet, set_planes

PLANES = 3
LORA_KINDS = ("plane-specific", "shared")
ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
SHARED_TARGETS = ("conv1", "conv2", "time_emb_proj", "time_mlp.0", "time_mlp.2", "text_proj.0", "text_proj.2")


@dataclass(frozen=True)
class GeneratorConfig:
    """Args: plane resolution R; feature channels C per plane; LoRA rank and kind; MLP decoder width;
    the decoder's sphere prior radius; the cube the planes span; max_offset > 0 bounds the SDF's offset from
    the sphere prior to ±max_offset (a tanh), so the surface stays in the shell r₀ ± max_offset (0 = free)."""

    resolution: int = 16
    channels: int = 8
    lora: str = "plane-specific"
    rank: int = 8
    hidden: int = 32
    sphere_radius: float = 0.45
    bound: float = 1.0
    max_offset: float = 0.0

    def __post_init__(self) -> None:
        if self.lora not in LORA_KINDS:
            raise ValueError(f"lora must be one of {LORA_KINDS}, got {self.lora!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class LoRALinear(nn.Module):
    """y = W x + b + B_g A_g x, with g the plane of each token (``groups`` = P) or one pair for all (1).

    Tokens arrive as x [..., L, in] with the L tokens laid out plane-major (P blocks of L / P tokens, as
    the cross-plane attention concatenates them). A_g [r, in] ~ N(0, 1/in), B_g [out, r] = 0 (LoRA's init:
    the adapted net starts equal to the base)."""

    def __init__(self, base: nn.Linear, rank: int, groups: int) -> None:
        super().__init__()
        self.base, self.groups = base, groups
        self.lora_A = nn.Parameter(torch.randn(groups, rank, base.in_features) / math.sqrt(base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(groups, base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if x.ndim < 2 or x.shape[-2] % self.groups:
            raise ValueError(f"LoRALinear with {self.groups} groups needs tokens [..., L, in] with L divisible by it")
        g = x.reshape(*x.shape[:-2], self.groups, x.shape[-2] // self.groups, x.shape[-1])   # [..., G, L/G, in]
        delta = torch.einsum("...gli,gri->...glr", g, self.lora_A)
        delta = torch.einsum("...glr,gor->...glo", delta, self.lora_B)                       # [..., G, L/G, out]
        return out + delta.reshape(*out.shape)


class LoRAConv(nn.Module):
    """y = conv(x) + up(down(x)): down has the base's kernel / stride / padding and r outputs, up is 1x1
    (zero init); one pair for every plane (PETA's shared ResBlock LoRA)."""

    def __init__(self, base: nn.Conv2d, rank: int) -> None:
        super().__init__()
        self.base = base
        self.lora_down = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding, bias=False)
        self.lora_up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_up(self.lora_down(x))


class LoRADense(nn.Module):
    """A shared LoRA on a Linear applied to vectors [N, in] (time / text projections)."""

    def __init__(self, base: nn.Linear, rank: int) -> None:
        super().__init__()
        self.base = base
        self.lora_A = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.lora_A), self.lora_B)


class BoundedDecoder(TriplaneDecoder):
    """sdf(p) = m · tanh(d̃ / m) + |p| − r₀: the core decoder with its SDF offset bounded by m = ``max_offset``
    (like TriplaneTurbo's bounded vertex deformation). With m < r₀ the surface can neither vanish nor leave
    the shell r₀ ± m; without it, score distillation at this scale grew objects to fill the cube (the teacher
    pulls background pixels too) or, with a strong sparsity weight, shrank them away."""

    def __init__(self, config: TriplaneDecoderConfig, max_offset: float) -> None:
        super().__init__(config)
        self.max_offset = max_offset

    def forward(self, features: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(features)
        m = self.max_offset
        sdf = m * torch.tanh(out[..., 0] / m) + points.norm(dim=-1) - self.config.sphere_radius
        return sdf, torch.sigmoid(out[..., 1:])


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def inject_peta(unet: nn.Module, rank: int, kind: str) -> None:
    """Freeze ``unet`` and add PETA's adapters in place (module docstring)."""
    unet.requires_grad_(False)
    groups = PLANES if kind == "plane-specific" else 1
    for name, module in list(unet.named_modules()):
        if isinstance(module, nn.Linear) and name.endswith(ATTENTION_PROJECTIONS):
            _replace(unet, name, LoRALinear(module, rank, groups))
        elif isinstance(module, nn.Conv2d) and name.endswith(SHARED_TARGETS):
            _replace(unet, name, LoRAConv(module, rank))
        elif isinstance(module, nn.Linear) and name.endswith(SHARED_TARGETS):
            _replace(unet, name, LoRADense(module, rank))


class TriplaneGenerator(nn.Module):
    """Caption embedding + latent → x̂0 → triplane (module docstring). ``alphas`` is the teacher's ᾱ_t."""

    def __init__(self, teacher_unet: MVUNet, config: GeneratorConfig = GeneratorConfig()) -> None:
        super().__init__()
        self.config = config
        self.unet = copy_unet(teacher_unet)
        set_planes(self.unet, PLANES)
        inject_peta(self.unet, config.rank, config.lora)
        c_img = teacher_unet.config.in_channels
        self.head = nn.Sequential(nn.Conv2d(c_img, 32, 3, padding=1), nn.SiLU(), nn.Conv2d(32, config.channels, 1))
        decoder_config = TriplaneDecoderConfig(channels=config.channels, hidden=config.hidden, layers=2,
                                               sphere_radius=config.sphere_radius)
        self.decoder = (BoundedDecoder(decoder_config, config.max_offset) if config.max_offset > 0
                        else TriplaneDecoder(decoder_config))
        self.register_buffer("alphas", alphas_cumprod(teacher_unet.config.schedule), persistent=False)

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        r = self.config.resolution
        return (PLANES, self.unet.config.in_channels, r, r)

    def denoise(self, z_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ε̂, x̂0), both [B, P, c, R, R], of noisy latents z_t [B, P, c, R, R] at timesteps t [B]."""
        b, p = z_t.shape[:2]
        flat = z_t.reshape(b * p, *z_t.shape[2:])                                    # [B·P, c, R, R]
        eps = self.unet(flat, t.repeat_interleave(p), text.repeat_interleave(p, dim=0), None).reshape(z_t.shape)
        a = self.alphas.to(z_t.device)[t].view(-1, 1, 1, 1, 1)
        return eps, (z_t - (1 - a).sqrt() * eps) / a.sqrt()

    def triplane(self, x0: torch.Tensor) -> Triplane:
        """Planes [B, 3, C, R, R] from x̂0 [B, P, c, R, R], with the MLP decoder."""
        b, p = x0.shape[:2]
        planes = self.head(x0.reshape(b * p, *x0.shape[2:])).reshape(b, p, self.config.channels, *x0.shape[-2:])
        return Triplane(planes, self.decoder, self.config.bound)


def prd_timesteps(k: int, train_steps: int = 1000) -> list[int]:
    """DDPM ``set_timesteps(k)`` ("leading" spacing T / k) shifted so the first is T − 1, as TriplaneTurbo's
    ``_set_timesteps``: k = 4 → [999, 749, 499, 249], k = 2 → [999, 499], k = 1 → [999]."""
    if k < 1 or k > train_steps:
        raise ValueError(f"PRD needs 1 <= K <= {train_steps}, got {k}")
    step = train_steps // k
    ts = [i * step for i in reversed(range(k))]
    return [t + (train_steps - 1 - ts[0]) for t in ts]


@torch.no_grad()
def generate(gen: TriplaneGenerator, text: torch.Tensor, k: int, noise: torch.Tensor) -> Triplane:
    """Deterministic DDIM (η = 0) over ``prd_timesteps(k)``, no CFG (the paper's inference): at each step
    x̂0 from ε̂, then z ← √ᾱ_next x̂0 + √(1 − ᾱ_next) ε̂; the last x̂0 becomes the triplane."""
    ts = prd_timesteps(k)
    z = noise
    for i, t in enumerate(ts):
        eps, x0 = gen.denoise(z, torch.full((len(z),), t, device=z.device), text)
        if i + 1 < len(ts):
            a = gen.alphas[ts[i + 1]]
            z = a.sqrt() * x0 + (1 - a).sqrt() * eps
    return gen.triplane(x0)
