"""The built-in multi-view teacher: a tiny pixel-space diffusion UNet conditioned on a caption and a camera.

A stand-in for MVDream (methods.md §11): MVDream adds an MLP of the camera pose to the timestep embedding
and denoises four views jointly; ours adds MLPs of the camera features (sin / cos of azimuth and elevation)
and of the caption's pooled MiniLM embedding to the timestep embedding and denoises one view at a time.
ε-prediction on SD's 1000-step scaled-linear VP schedule (``nodes.zoo.models.alphas_cumprod``), the same
schedule as SD2.1 / MVDream.

Blocks are the built-in models' lean ones (``nodes.zoo.lean.blocks``: ResnetBlock, Attention, Down/Upsample,
timestep features). Attention blocks have a ``planes`` attribute: 1 in the teacher; a triplane generator
built on these weights (the PRD pack's) sets it to 3 so that the tokens of an object's three planes attend
to each other (PETA's cross-plane attention), batch [B·P, C, H, W] → tokens [B, P·H·W, C].

Shapes: x [N, 3, S, S] in −1..1 (S = 16 for the teacher's renders; a generator may run the same weights on
its 16 x 16 planes), t [N] integer timesteps, text [N, 384] (zeros = unconditional), camera [N, 4] or None.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fewstep.nodes.zoo.lean.blocks import Attention, Downsample, ResnetBlock, Upsample, timestep_features
from fewstep.nodes.zoo.models import SCHEDULE, alphas_cumprod

TEXT_DIM = 384          # all-MiniLM-L6-v2's pooled embedding
CAMERA_DIM = 4          # data.camera_features


@dataclass(frozen=True)
class TeacherConfig:
    """Args: channels per resolution level; attention at the levels listed (0 = full resolution) and in the
    middle; GroupNorm groups; heads; width of the sinusoidal time features; text embedding width."""

    channels: tuple[int, ...] = (32, 64, 64)
    attention_levels: tuple[int, ...] = (2,)
    groups: int = 8
    heads: int = 4
    time_features: int = 64
    in_channels: int = 3
    text_dim: int = TEXT_DIM
    schedule: dict = field(default_factory=lambda: dict(SCHEDULE))

    @classmethod
    def from_dict(cls, d: dict) -> TeacherConfig:
        return cls(**{**d, "channels": tuple(d["channels"]), "attention_levels": tuple(d["attention_levels"])})

    def to_dict(self) -> dict:
        return asdict(self)


# Named sizes: "shipped" is the architecture of fewstep-tiny-mv-teacher; "test" is the toy width of the unit
# tests (random weights, text embeddings of 8).
PRESETS: dict[str, TeacherConfig] = {
    "shipped": TeacherConfig(),
    "test": TeacherConfig(channels=(8, 16), attention_levels=(1,), groups=4, heads=2, time_features=16, text_dim=8),
}


class AttnBlock(nn.Module):
    """GroupNorm → multi-head self-attention over H·W tokens (over P·H·W when ``planes`` = P > 1) → residual."""

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.attn = Attention(channels, heads)
        self.planes = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.planes
        tokens = self.norm(x).reshape(n // p, p, c, h * w).permute(0, 1, 3, 2).reshape(n // p, p * h * w, c)
        out = self.attn(tokens)                                                # [B, P·H·W, C]
        out = out.reshape(n // p, p, h * w, c).permute(0, 1, 3, 2).reshape(n, c, h, w)
        return x + out


class Level(nn.Module):
    def __init__(self, c_in: int, c_out: int, temb: int, attn: bool, cfg: TeacherConfig) -> None:
        super().__init__()
        self.res = ResnetBlock(c_in, c_out, temb, cfg.groups, 1e-5)
        self.attn = AttnBlock(c_out, cfg.heads, cfg.groups) if attn else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, temb)
        return self.attn(x) if self.attn is not None else x


class MVUNet(nn.Module):
    """ε(x, t, text, camera): the camera-conditioned teacher (module docstring)."""

    def __init__(self, config: TeacherConfig = TeacherConfig()) -> None:
        super().__init__()
        self.config = cfg = config
        ch, temb = cfg.channels, 4 * cfg.channels[0]
        self.time_mlp = nn.Sequential(nn.Linear(cfg.time_features, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.camera_mlp = nn.Sequential(nn.Linear(CAMERA_DIM, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = ch[0]
        for i, c in enumerate(ch):
            self.down.append(Level(prev, c, temb, i in cfg.attention_levels, cfg))
            self.downsample.append(Downsample(c, pad_right=False) if i < len(ch) - 1 else nn.Identity())
            prev = c
        self.mid = nn.ModuleList([Level(prev, prev, temb, True, cfg), Level(prev, prev, temb, False, cfg)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(ch))):                  # skip i joins at resolution level i
            self.up.append(Level(prev + ch[i], ch[i], temb, i in cfg.attention_levels, cfg))
            self.upsample.append(Upsample(ch[i]) if i > 0 else nn.Identity())
            prev = ch[i]
        self.norm_out = nn.GroupNorm(cfg.groups, ch[0])
        self.conv_out = nn.Conv2d(ch[0], cfg.in_channels, 3, padding=1)

    def embedding(self, t: torch.Tensor, text: torch.Tensor, camera: torch.Tensor | None) -> torch.Tensor:
        """temb [N, 4·C0] = time MLP + text MLP (+ camera MLP; None = no camera, as a triplane generator runs it)."""
        emb = self.time_mlp(timestep_features(t, self.config.time_features).to(text.dtype)) + self.text_proj(text)
        return emb if camera is None else emb + self.camera_mlp(camera)

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                camera: torch.Tensor | None = None) -> torch.Tensor:
        temb = self.embedding(t, text, camera)
        h = self.conv_in(x)
        skips = []
        for level, down in zip(self.down, self.downsample, strict=True):
            h = level(h, temb)
            skips.append(h)
            h = down(h)
        for level in self.mid:
            h = level(h, temb)
        for level, up in zip(self.up, self.upsample, strict=True):
            h = level(torch.cat([h, skips.pop()], dim=1), temb)
            h = up(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def set_planes(unet: nn.Module, planes: int) -> None:
    """Make every attention block attend across ``planes`` consecutive batch items (PETA cross-plane attention)."""
    for module in unet.modules():
        if isinstance(module, AttnBlock):
            module.planes = planes


@dataclass(frozen=True, eq=False)
class Teacher:
    """The loaded teacher: the network (frozen), its ᾱ_t [1000], and its config."""

    unet: MVUNet
    alphas: torch.Tensor

    def eps(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, camera: torch.Tensor | None) -> torch.Tensor:
        return self.unet(x, t, text, camera)

    def x0(self, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x̂0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t (DDPM eq. 15 solved for x0)."""
        a = self.alphas.to(x.device)[t].view(-1, 1, 1, 1)
        return (x - (1 - a).sqrt() * eps) / a.sqrt()


def make_teacher(unet: MVUNet) -> Teacher:
    return Teacher(unet.eval().requires_grad_(False), alphas_cumprod(unet.config.schedule))


def copy_unet(unet: MVUNet) -> MVUNet:
    """A trainable deep copy (e.g. the initialisation of a generator distilled from the teacher)."""
    return copy.deepcopy(unet).train().requires_grad_(True)


@torch.no_grad()
def sample_views(teacher: Teacher, text: torch.Tensor, camera: torch.Tensor, noise: torch.Tensor, steps: int = 20,
                 guidance: float = 3.0) -> torch.Tensor:
    """Deterministic DDIM (η = 0) with CFG: images [N, 3, S, S] in −1..1 of ``text`` [N, D] from ``camera``
    [N, 4] (checks and previews of the teacher)."""
    ab = teacher.alphas.to(noise.device)
    ts = torch.linspace(len(ab) - 1, 0, steps).round().long().tolist()
    x = noise
    uncond = torch.zeros_like(text)
    for i, t in enumerate(ts):
        tt = torch.full((2 * len(x),), t, device=x.device)
        eps_c, eps_u = teacher.eps(torch.cat([x, x]), tt, torch.cat([text, uncond]), camera.repeat(2, 1)).chunk(2)
        eps = eps_u + guidance * (eps_c - eps_u)
        a_t, a_prev = ab[t], (ab[ts[i + 1]] if i + 1 < len(ts) else ab.new_tensor(1.0))
        x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x
