"""The built-in AR image models over ``VQTokenizer`` tokens (64 tokens per 64x64 scene).

``ARTransformer``: LlamaGen-style decoder-only transformer (Sun et al. 2024, arXiv 2406.06525): pre-norm
RMSNorm blocks, SwiGLU MLP, 1-D rotary positions, causal attention with an optional KV cache. The caption
is one prefix token: the MiniLM sentence embedding ``[B, 384]`` projected to the model width, or a learned
null embedding (dropped for 10% of training rows, for classifier-free guidance). The sequence is

    position:  0            1        2              ...   L
    input:     cond-prefix  q_0      q_1            ...   q_{L-1}
    predicts:  q_0          q_1      q_2            ...   (unused)

``forward(tokens, cond)`` gives logits ``[B, L, K]`` where ``logits[:, i]`` is ``p(q_i | q_<i, cond)``.

``MARModel``: MAR-style masked autoregressive model (Li et al. 2024, arXiv 2406.11838) over continuous
tokens (the tokenizer's pre-quantisation PCA latents, whitened per dimension by ``token_std``). A
bidirectional transformer sees the known tokens, a learned mask token at unknown positions and the caption
prefix, and gives a condition vector z per position; a small MLP with adaLN (MAR's SimpleMLPAdaLN) is a
per-token diffusion model ``eps(x_t, t, z)`` trained with the DDPM loss on masked positions only.
Simplification against MAR: one transformer over all positions (MaskGIT-style mask tokens) instead of
MAR's encoder over known tokens + decoder with mask tokens; fixed posterior variance instead of a learned
sigma.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- shared blocks
class RMSNorm(nn.Module):
    """x / rms(x) * weight (Zhang & Sennrich 2019), computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def rotary_tables(n_positions: int, head_dim: int, base: float = 10_000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin ``[n_positions, head_dim / 2]`` of RoPE (Su et al. 2021, eq. 34): angle = pos * base^(-2i/d)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(n_positions, dtype=torch.float64)[:, None] * inv_freq[None]
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x_2i, x_2i+1) of ``x`` [B, H, T, hd] by the angles of ``cos``/``sin`` [T, hd/2]."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)              # each [B, H, T, hd/2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1)  # [B, H, T, hd/2, 2]
    return out.flatten(-2).to(x.dtype)


class KVCache:
    """Keys and values of every layer for positions ``0..max_len-1`` of one batch (preallocated).

    ``keys[layer]``/``values[layer]``: ``[B, H, max_len, head_dim]``; a trunk call at ``start_pos`` with T
    inputs writes positions ``start_pos..start_pos+T-1`` and attends to ``0..start_pos+T-1``.
    """

    def __init__(self, n_layers: int, batch: int, n_heads: int, max_len: int, head_dim: int,
                 device: torch.device | str, dtype: torch.dtype):
        shape = (batch, n_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.max_len = max_len


class Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"Attention: dim {dim} is not a multiple of n_heads {n_heads}")
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, *, causal: bool,
                cache: tuple[torch.Tensor, torch.Tensor] | None = None, start_pos: int = 0) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x [B,H,T,hd]
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if cache is not None:
            cache[0][:, :, start_pos:start_pos + t] = k
            cache[1][:, :, start_pos:start_pos + t] = v
            k, v = cache[0][:, :, :start_pos + t], cache[1][:, :, :start_pos + t]
        mask = None
        if causal and k.shape[2] > 1:  # query i (absolute start_pos + i) sees keys 0..start_pos + i
            mask = torch.arange(k.shape[2], device=x.device)[None] <= torch.arange(t, device=x.device)[:, None] + start_pos
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, T, hd]
        return self.out(y.transpose(1, 2).reshape(b, t, -1))


class SwiGLU(nn.Module):
    """LLaMA's MLP: W2 (silu(W1 x) * W3 x), hidden = 8/3 dim rounded up to a multiple of 32."""

    def __init__(self, dim: int):
        super().__init__()
        hidden = 32 * math.ceil(8 * dim / 3 / 32)
        self.w13 = nn.Linear(dim, 2 * hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w13(x).chunk(2, -1)
        return self.w2(F.silu(a) * b)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.attn_norm, self.attn = RMSNorm(dim), Attention(dim, n_heads)
        self.mlp_norm, self.mlp = RMSNorm(dim), SwiGLU(dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, *, causal: bool,
                cache: tuple[torch.Tensor, torch.Tensor] | None = None, start_pos: int = 0) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), rope, causal=causal, cache=cache, start_pos=start_pos)
        return x + self.mlp(self.mlp_norm(x))


class CaptionPrefix(nn.Module):
    """Sentence embedding ``[B, cond_dim]`` -> one prefix token ``[B, 1, dim]``; rows flagged ``null`` (or all
    rows when ``cond`` is None) get the learned null token (the unconditional branch of CFG)."""

    def __init__(self, cond_dim: int, dim: int):
        super().__init__()
        self.cond_dim = cond_dim
        self.proj = nn.Linear(cond_dim, dim)
        self.null = nn.Parameter(torch.randn(dim) * 0.02)

    def forward(self, cond: torch.Tensor | None, null: torch.Tensor | None, batch: int) -> torch.Tensor:
        if cond is None:
            return self.null.expand(batch, 1, -1)
        if cond.ndim != 2 or cond.shape != (batch, self.cond_dim):
            raise ValueError(f"caption condition must be [B={batch}, {self.cond_dim}] (MiniLM sentence "
                             f"embeddings), got {tuple(cond.shape)}")
        h = self.proj(cond.to(self.proj.weight.dtype))                   # [B, dim]
        if null is not None:
            h = torch.where(null.to(h.device)[:, None], self.null.to(h.dtype), h)
        return h[:, None]


# ----------------------------------------------------------------------------- LlamaGen-style AR
@dataclass(frozen=True)
class ARConfig:
    """Shapes of an ``ARTransformer`` (nanoGPT-style config; saved as JSON next to the weights).

    Args:
        vocab_size: K, the tokenizer's codebook size.
        seq_len: L, tokens per image (64 = 8x8).
        dim / n_layers / n_heads: transformer width, depth and attention heads.
        cond_dim: size of the caption embedding (MiniLM sentence embedding: 384).
        rope_base: RoPE frequency base.
        cond_dropout: fraction of training rows whose caption is replaced by the null token (CFG).
    """

    vocab_size: int = 1024
    seq_len: int = 64
    dim: int = 128
    n_layers: int = 5
    n_heads: int = 4
    cond_dim: int = 384
    rope_base: float = 10_000.0
    cond_dropout: float = 0.1

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class ARTransformer(nn.Module):
    """Decoder-only AR transformer over token ids; see the module docstring for the sequence layout.

    The pieces are split so a wrapper (e.g. Distilled Decoding's generator) can reuse the trunk with its
    own input embedding and heads: ``embed_tokens`` -> ``trunk`` -> ``head``.
    """

    def __init__(self, config: ARConfig | None = None):
        super().__init__()
        self.config = c = config or ARConfig()
        self.tok_embeddings = nn.Embedding(c.vocab_size, c.dim)
        self.prefix = CaptionPrefix(c.cond_dim, c.dim)
        self.layers = nn.ModuleList(Block(c.dim, c.n_heads) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.dim)
        self.output = nn.Linear(c.dim, c.vocab_size, bias=False)
        cos, sin = rotary_tables(c.seq_len + 1, c.dim // c.n_heads, c.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(_init_weights)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids ``[B, T]`` -> embeddings ``[B, T, dim]``."""
        return self.tok_embeddings(tokens)

    def new_cache(self, batch: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> KVCache:
        """An empty KV cache for ``batch`` rows and the whole sequence (prefix + L tokens)."""
        p = self.output.weight
        c = self.config
        return KVCache(c.n_layers, batch, c.n_heads, c.seq_len + 1, c.dim // c.n_heads,
                       device or p.device, dtype or p.dtype)

    def trunk(self, h: torch.Tensor, cond: torch.Tensor | None, kv_cache: KVCache | None = None,
              start_pos: int = 0, *, null: torch.Tensor | None = None, causal: bool = True) -> torch.Tensor:
        """Transformer states of a span of the sequence.

        Args:
            h: input embeddings ``[B, T, dim]`` of the tokens at sequence positions ``start_pos+1 ..`` when
                ``start_pos == 0`` (the caption prefix is then prepended at position 0), else of positions
                ``start_pos .. start_pos+T-1`` (T may be 0 at start_pos 0: prefix only).
            cond: caption embeddings ``[B, cond_dim]``, or None for the null (unconditional) prefix.
            kv_cache: from ``new_cache``; keys/values of the positions computed here are stored in it, and
                earlier positions are read from it.
            start_pos: sequence position of the first state computed (0 = the prefix).
            null: ``[B]`` bool, rows that use the null prefix instead of ``cond`` (CFG dropout / batching).
            causal: causal attention (the AR model); False lets a wrapper attend bidirectionally.

        Returns:
            final-normed states ``[B, T + 1, dim]`` at start_pos 0 (prefix first), else ``[B, T, dim]``.
        """
        if start_pos == 0:
            h = torch.cat([self.prefix(cond, null, h.shape[0]).to(h.dtype), h], 1)
        end = start_pos + h.shape[1]
        if end > self.config.seq_len + 1:
            raise ValueError(f"ARTransformer.trunk: positions up to {end - 1} exceed the sequence "
                             f"(prefix + {self.config.seq_len} tokens)")
        rope = (self.rope_cos[start_pos:end], self.rope_sin[start_pos:end])
        for i, layer in enumerate(self.layers):
            cache = None if kv_cache is None else (kv_cache.keys[i], kv_cache.values[i])
            h = layer(h, rope, causal=causal, cache=cache, start_pos=start_pos)
        return self.norm(h)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """States ``[B, T, dim]`` -> next-token logits ``[B, T, K]``."""
        return self.output(h)

    def forward(self, tokens: torch.Tensor, cond: torch.Tensor | None, *,
                null: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: tokens ``[B, L]`` -> logits ``[B, L, K]``, ``logits[:, i] = log p(q_i | q_<i, c)`` + const."""
        h = self.trunk(self.embed_tokens(tokens[:, :-1]), cond, null=null)  # [B, L, dim]: prefix, q_0..q_{L-2}
        return self.head(h)

    def loss(self, tokens: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Next-token cross-entropy with the caption dropped to null on ``cond_dropout`` of the rows."""
        null = _draw("rand", (tokens.shape[0],), generator, tokens.device) < self.config.cond_dropout
        logits = self(tokens, cond, null=null)
        return F.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten())


def _draw(kind: str, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str,
          high: int = 0) -> torch.Tensor:
    """rand / randn / randint on the generator's device (CPU generators work for CUDA models), then moved."""
    gen_device = generator.device if generator is not None else device
    if kind == "randint":
        x = torch.randint(high, shape, generator=generator, device=gen_device)
    elif kind == "rand":
        x = torch.rand(shape, generator=generator, device=gen_device)
    elif kind == "randn":
        x = torch.randn(shape, generator=generator, device=gen_device)
    else:
        raise ValueError(f"_draw: unknown kind {kind!r}")
    return x.to(device)


def _init_weights(m: nn.Module) -> None:
    """GPT-2 init: N(0, 0.02) weights, zero biases."""
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------- MAR diffusion head
def cosine_alphas_cumprod(steps: int = 1000, s: float = 0.008) -> torch.Tensor:
    """alpha_bar_t, t = 0..steps-1, of the cosine schedule (Nichol & Dhariwal 2021, eq. 17; betas <= 0.999)."""
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, 0)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[N, dim]`` of timesteps ``[N]`` (DDPM / DiT)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


class AdaLNResBlock(nn.Module):
    """x + gate * mlp(modulate(LN(x), shift, scale)), (shift, scale, gate) from the condition (MAR's ResBlock)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.ada(c).chunk(3, -1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class DiffusionHead(nn.Module):
    """eps(x_t [N, D], t [N], z [N, cond]) -> [N, D]: MAR's SimpleMLPAdaLN at tiny width."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, n_blocks: int):
        super().__init__()
        self.width = width
        self.x_in = nn.Linear(token_dim, width)
        self.t_in = nn.Sequential(nn.Linear(256, width), nn.SiLU(), nn.Linear(width, width))
        self.z_in = nn.Linear(cond_dim, width)
        self.blocks = nn.ModuleList(AdaLNResBlock(width) for _ in range(n_blocks))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.final = nn.Linear(width, token_dim)
        for m in [*(b.ada[-1] for b in self.blocks), self.final_ada[-1], self.final]:  # adaLN-zero (DiT)
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        c = self.t_in(timestep_embedding(t, 256).to(x.dtype)) + self.z_in(z)  # [N, width]
        h = self.x_in(x)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_ada(c).chunk(2, -1)
        return self.final(self.final_norm(h) * (1 + scale) + shift)


def respaced_timesteps(steps: int, t_max: int) -> list[int]:
    """``steps`` timesteps evenly spread over 0..t_max (improved-diffusion's ``space_timesteps`` with one
    section; DiSA clips t_max at 950 instead of 999), ascending."""
    if steps < 1:
        raise ValueError(f"head steps must be >= 1, got {steps}")
    if steps == 1:
        return [t_max]
    return sorted({round(i * t_max / (steps - 1)) for i in range(steps)})


# ----------------------------------------------------------------------------- MAR
@dataclass(frozen=True)
class MARConfig:
    """Shapes and recipe constants of a ``MARModel``.

    Args:
        token_dim: D, continuous token size (the tokenizer's PCA latents).
        seq_len: L, tokens per image.
        dim / n_layers / n_heads: the bidirectional transformer.
        cond_dim: caption embedding size (MiniLM: 384).
        head_width / head_blocks: the per-token MLP diffusion head.
        diffusion_steps: training timesteps of the head (cosine schedule).
        token_scale: initial value of the per-dimension token scale (buffer ``token_std`` [D]); training sets
            ``token_std`` to the per-dimension std of the training tokens, so the model sees whitened tokens.
        mask_ratio_min: training masks a fraction ~ N(1, 0.25) truncated to [mask_ratio_min, 1] (MAR).
        cond_dropout: fraction of training rows with the null caption (CFG).
        diffusion_batch_mul: each masked token's head loss is averaged over this many (t, noise) draws (MAR: 4).
    """

    token_dim: int = 16
    seq_len: int = 64
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    cond_dim: int = 384
    head_width: int = 160
    head_blocks: int = 3
    diffusion_steps: int = 1000
    token_scale: float = 1.0
    mask_ratio_min: float = 0.7
    cond_dropout: float = 0.1
    diffusion_batch_mul: int = 4

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class MARModel(nn.Module):
    """Masked AR model with a per-token diffusion head; see the module docstring."""

    def __init__(self, config: MARConfig | None = None):
        super().__init__()
        self.config = c = config or MARConfig()
        self.token_in = nn.Linear(c.token_dim, c.dim)
        self.mask_token = nn.Parameter(torch.randn(c.dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(c.seq_len + 1, c.dim) * 0.02)  # learned, prefix + L positions
        self.prefix = CaptionPrefix(c.cond_dim, c.dim)
        self.layers = nn.ModuleList(Block(c.dim, c.n_heads) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.dim)
        self.apply(_init_weights)
        self.diffusion = DiffusionHead(c.token_dim, c.dim, c.head_width, c.head_blocks)
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(c.diffusion_steps).float(), persistent=False)
        # PCA coordinates have very unequal variances (the first ~20x the last): each dimension is divided by its
        # own std so the head's unit-variance noise matches every coordinate
        self.register_buffer("token_std", torch.full((c.token_dim,), float(c.token_scale)))

    # ------------------------------------------------------------------ transformer
    def encode(self, tokens: torch.Tensor, mask: torch.Tensor, cond: torch.Tensor | None, *,
               null: torch.Tensor | None = None) -> torch.Tensor:
        """Per-position conditions z ``[B, L, dim]``.

        Args:
            tokens: continuous tokens ``[B, L, D]`` in tokenizer units (values at masked positions are ignored).
            mask: ``[B, L]`` bool, True where the token is unknown (to be generated).
            cond / null: caption embeddings ``[B, cond_dim]`` (or None) and per-row null flags, as in ``ARTransformer``.
        """
        c = self.config
        if tokens.ndim != 3 or tokens.shape[1:] != (c.seq_len, c.token_dim):
            raise ValueError(f"MARModel: tokens must be [B, {c.seq_len}, {c.token_dim}], got {tuple(tokens.shape)}")
        x = self.token_in(tokens.to(self.pos.dtype) / self.token_std.to(self.pos.dtype))   # [B, L, dim]
        x = torch.where(mask[..., None], self.mask_token.to(x.dtype), x)
        x = torch.cat([self.prefix(cond, null, x.shape[0]).to(x.dtype), x], 1) + self.pos  # [B, 1+L, dim]
        for layer in self.layers:
            x = layer(x, None, causal=False)
        return self.norm(x)[:, 1:]

    # ------------------------------------------------------------------ diffusion head
    def head_loss(self, z: torch.Tensor, target: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """DDPM eps-loss of the head (Ho et al. 2020, eq. 14): E_{t, eps} |eps - eps_theta(x_t, t, z)|^2 per token.

        Args:
            z: conditions ``[N, dim]``; target: clean tokens ``[N, D]`` in tokenizer units.
        Returns:
            per-token loss ``[N]`` (mean over D and ``diffusion_batch_mul`` draws).
        """
        c = self.config
        m = c.diffusion_batch_mul
        x0 = (target / self.token_std.to(target.dtype)).repeat(m, 1)                      # [m N, D]
        zz = z.repeat(m, 1)
        t = _draw("randint", (x0.shape[0],), generator, x0.device, c.diffusion_steps)
        eps = _draw("randn", tuple(x0.shape), generator, x0.device).to(x0.dtype)
        ab = self.alphas_cumprod[t][:, None].to(x0.dtype)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        err = (self.diffusion(xt, t, zz) - eps).pow(2).mean(-1)                           # [m N]
        return err.view(m, -1).mean(0)

    @torch.no_grad()
    def sample_head(self, z: torch.Tensor, steps: int, *, temperature: float = 1.0, cfg_scale: float = 1.0,
                    generator: torch.Generator | None = None, t_max: int | None = None,
                    x0_clip: float | None = 10.0) -> torch.Tensor:
        """Ancestral DDPM sampling of the head on ``steps`` respaced timesteps (MAR's ``DiffLoss.sample``).

        Args:
            z: conditions ``[N, dim]``, or ``[2N, dim]`` = (conditional; unconditional) when ``cfg_scale != 1``.
            steps: diffusion steps of the head (the quantity DiSA anneals).
            temperature: multiplies the noise added at each step (MAR's tau).
            cfg_scale: eps = eps_u + s (eps_c - eps_u).
            t_max: the noisiest timestep (default diffusion_steps - 1; DiSA uses 950).
            x0_clip: clamp the x0 estimate to +-x0_clip (whitened units; None = off). At t = 999 of the cosine
                schedule sqrt(alpha_bar) = 5e-5, so eps errors reach x0 multiplied by 2e4: without the clamp the
                CPU demo model's tokens came out with std 985 instead of 0.5 (with it, or with t_max = 950: 0.42).
        Returns:
            tokens ``[N, D]`` in tokenizer units.
        """
        c = self.config
        n = z.shape[0] // 2 if cfg_scale != 1.0 else z.shape[0]
        ts = respaced_timesteps(steps, c.diffusion_steps - 1 if t_max is None else t_max)
        ab_all = self.alphas_cumprod.double()
        x = _draw("randn", (n, c.token_dim), generator, z.device)
        for i in reversed(range(len(ts))):
            ab = float(ab_all[ts[i]])
            ab_prev = float(ab_all[ts[i - 1]]) if i > 0 else 1.0
            eps = self._eps(x, ts[i], z, cfg_scale, n)
            x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
            if x0_clip is not None:
                x0 = x0.clamp(-x0_clip, x0_clip)
            beta = 1 - ab / ab_prev                                   # respaced beta_i
            # posterior q(x_{t_prev} | x_t, x0) (DDPM eq. 7) with the respaced betas
            mean = (math.sqrt(ab_prev) * beta * x0 + math.sqrt(1 - beta) * (1 - ab_prev) * x) / (1 - ab)
            if i > 0:
                var = beta * (1 - ab_prev) / (1 - ab)
                noise = _draw("randn", tuple(x.shape), generator, x.device)
                x = mean + math.sqrt(var) * temperature * noise
            else:
                x = mean
        return x * self.token_std.to(x.dtype)

    def _eps(self, x: torch.Tensor, t: int, z: torch.Tensor, cfg_scale: float, n: int) -> torch.Tensor:
        xx = torch.cat([x, x]) if cfg_scale != 1.0 else x
        tt = torch.full((xx.shape[0],), t, device=x.device, dtype=torch.long)
        eps = self.diffusion(xx.to(z.dtype), tt, z).float()
        if cfg_scale == 1.0:
            return eps
        return eps[n:] + cfg_scale * (eps[:n] - eps[n:])

    # ------------------------------------------------------------------ training
    def random_mask(self, batch: int, generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu") -> torch.Tensor:
        """MAR's training mask ``[B, L]`` bool: a random order and a ratio ~ N(1, 0.25) on [mask_ratio_min, 1]."""
        c = self.config
        ratio = (1 + 0.25 * _draw("randn", (batch,), generator, device)).clamp(c.mask_ratio_min, 1.0)
        n_masked = torch.ceil(ratio * c.seq_len).long()                                   # [B]
        order = _draw("rand", (batch, c.seq_len), generator, device).argsort(-1)         # random order per row
        rank = order.argsort(-1)                                                           # position -> rank
        return rank < n_masked[:, None]

    def loss(self, tokens: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """MAR training loss: the head loss on the masked positions of a random mask, with caption dropout."""
        b = tokens.shape[0]
        mask = self.random_mask(b, generator, tokens.device)
        null = _draw("rand", (b,), generator, tokens.device) < self.config.cond_dropout
        z = self.encode(tokens, mask, cond, null=null)                                    # [B, L, dim]
        return self.head_loss(z[mask], tokens[mask].to(z.dtype), generator).mean()
