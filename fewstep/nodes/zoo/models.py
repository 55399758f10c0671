"""Architectures and configs of the built-in tiny models (see each model card in ``weights/``).

- VAE: diffusers ``AutoencoderKL``, 64x64x3 <-> 16x16x4 (f=4). A small shape (radius 5.5 px) spans
  ~3 latent pixels at f=4 but under 2 at f=8, where colour *and* shape would have to be packed into
  4 channels of one or two latent pixels; f=4 keeps the teacher's job spatial and easy.
- Teacher: diffusers ``UNet2DConditionModel`` on 16x16x4 latents, cross-attending to MiniLM token
  states (384-d); eps prediction on SD's 1000-step scaled-linear VP schedule. 7.6 M parameters, so the
  fp16 file stays under 16 MiB.
- Probe: a small CNN that predicts, for each of the 9 grid cells, colour (or empty), shape (or empty)
  and size.
- Scorer heads: over frozen EfficientNet-Lite0 feature maps and frozen MiniLM token states, each a
  one-layer transformer + projection into a shared 256-d space (CLIP-style cosine similarity).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import data

VAE_CONFIG: dict = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": 64,
    "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [32, 64, 128], "layers_per_block": 1, "norm_num_groups": 32,
}
UNET_CONFIG: dict = {
    "sample_size": 16, "in_channels": 4, "out_channels": 4, "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [64, 128, 160], "layers_per_block": 1, "attention_head_dim": 4,
    "norm_num_groups": 32,
}
# SD 1.x's schedule (diffusers names): beta_t on a sqrt-linear ramp from beta_start to beta_end.
SCHEDULE: dict = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear"}
PREDICTION_TYPE = "epsilon"
N_CELLS = data.GRID * data.GRID
N_COLOURS = len(data.COLOURS) + 1  # + empty
N_SHAPES = len(data.SHAPES) + 1    # + empty
N_SIZES = len(data.SIZES)


def build_vae(config: dict | None = None):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**(config or VAE_CONFIG))


def build_unet(config: dict | None = None):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**(config or UNET_CONFIG))


def alphas_cumprod(schedule: dict | None = None) -> torch.Tensor:
    """alpha_bar_t for t = 0..T-1 of a diffusers-style linear / scaled_linear beta schedule."""
    s = schedule or SCHEDULE
    n, b0, b1 = s["num_train_timesteps"], s["beta_start"], s["beta_end"]
    if s["beta_schedule"] == "scaled_linear":
        betas = torch.linspace(b0**0.5, b1**0.5, n, dtype=torch.float64) ** 2
    elif s["beta_schedule"] == "linear":
        betas = torch.linspace(b0, b1, n, dtype=torch.float64)
    else:
        raise ValueError(f"alphas_cumprod: unsupported beta_schedule {s['beta_schedule']!r}")
    return torch.cumprod(1.0 - betas, 0).float()


@torch.no_grad()
def ddim_sample(unet, cond: torch.Tensor, uncond: torch.Tensor, noise: torch.Tensor, steps: int = 50,
                guidance: float = 5.0, schedule: dict | None = None) -> torch.Tensor:
    """Deterministic DDIM (Song et al. 2021, eq. 12 with eta=0) with classifier-free guidance.

    Timesteps are evenly spaced from T-1 down ("trailing"); the last step jumps to alpha_bar = 1.
    cond/uncond: ``[B,77,384]``; noise: ``[B,4,16,16]`` unit Gaussian. Returns scaled latents x0.
    """
    ab = alphas_cumprod(schedule).to(noise.device)
    ts = torch.linspace(len(ab) - 1, 0, steps).round().long().tolist()
    x = noise
    ctx = torch.cat([uncond, cond])
    for i, t in enumerate(ts):
        tt = torch.full((2 * x.shape[0],), t, device=x.device)
        eps_u, eps_c = unet(torch.cat([x, x]), tt, encoder_hidden_states=ctx).sample.float().chunk(2)
        eps = eps_u + guidance * (eps_c - eps_u)
        a_t = ab[t]
        a_prev = ab[ts[i + 1]] if i + 1 < len(ts) else ab.new_tensor(1.0)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x


# ----------------------------------------------------------------------------- probe
def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())


class ProbeNet(nn.Module):
    """CNN ``[B,3,64,64]`` (0..1) -> per-cell logits: colour ``[B,9,7]``, shape ``[B,9,6]``, size ``[B,9,2]``."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.trunk = nn.Sequential(  # 64 -> 32 -> 16 -> 8 -> 4 spatial
            _block(3, w, 1), _block(w, 2 * w, 2), _block(2 * w, 4 * w, 2),
            _block(4 * w, 4 * w, 2), _block(4 * w, 4 * w, 2))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 16, 512), nn.SiLU(),
                                nn.Linear(512, N_CELLS * (N_COLOURS + N_SHAPES + N_SIZES)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.fc(self.trunk(x * 2 - 1)).view(x.shape[0], N_CELLS, -1)  # [B,9,15]
        return out.split([N_COLOURS, N_SHAPES, N_SIZES], dim=-1)


def probe_loss(net: ProbeNet, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over cells; ``targets`` ``[B,9,3]`` from ``data.cell_targets`` (size -100 = empty)."""
    c, s, z = net(images)
    return (F.cross_entropy(c.flatten(0, 1), targets[..., 0].flatten())
            + F.cross_entropy(s.flatten(0, 1), targets[..., 1].flatten())
            + F.cross_entropy(z.flatten(0, 1), targets[..., 2].flatten(), ignore_index=-100))


# ----------------------------------------------------------------------------- scorer heads
class ScorerHeads(nn.Module):
    """Trainable heads of the image-text scorer over frozen towers.

    image: EfficientNet-Lite0 map ``[B,1280,7,7]`` -> 1x1 conv -> + position -> [CLS] transformer layer
    text:  MiniLM states ``[B,T,384]`` + mask -> linear -> transformer layer -> masked mean
    Both end in a linear projection to ``dim`` and L2 normalisation; logit_scale as in CLIP.
    """

    def __init__(self, dim: int = 256, heads: int = 4):
        super().__init__()
        self.img_in = nn.Conv2d(1280, dim, 1)
        self.img_pos = nn.Parameter(torch.randn(1, 50, dim) * 0.02)
        self.img_cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.img_layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, 0.0, batch_first=True, norm_first=True)
        self.img_out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.txt_in = nn.Linear(384, dim)
        self.txt_layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, 0.0, batch_first=True, norm_first=True)
        self.txt_out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def image(self, fmap: torch.Tensor) -> torch.Tensor:
        x = self.img_in(fmap).flatten(2).transpose(1, 2)  # [B,49,dim]
        x = torch.cat([self.img_cls.expand(x.shape[0], -1, -1), x], 1) + self.img_pos  # [B,50,dim]
        return F.normalize(self.img_out(self.img_layer(x)[:, 0]), dim=-1)

    def text(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.txt_layer(self.txt_in(states), src_key_padding_mask=~mask.bool())  # [B,T,dim]
        m = mask.unsqueeze(-1).to(x.dtype)
        return F.normalize(self.txt_out((x * m).sum(1) / m.sum(1).clamp_min(1)), dim=-1)
