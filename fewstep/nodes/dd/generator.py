"""The DD generator: a copy of the AR teacher that reads a partly-noised sequence and predicts every token.

Input (DD, arXiv 2412.17153 §3.3; code ``LlamaGen/autoregressive/models/dd.py``): ``X_t = [c_{q_0}..c_{q_{t−1}},
ε_t..ε_{L−1}]`` [B, L, D] in the flow space of the codebook (``flow.flow_space``), i.e. the first t tokens as
their codewords and the rest as the original noise, plus the caption. Each position is embedded by a linear
map ``D → dim`` and a learned 2-way noise/data embedding (position < t: data), then runs through the
teacher's trunk (its caption prefix, blocks and RoPE, causal: token i is a function of ε_≤i only, so causal
attention sees everything it needs) and two heads:

    logits_i = teacher head(h_{i+1})                 [B, L, K]  — the token (state after input i)
    cont_i   = Linear(RMSNorm(h_{i+1}))              [B, L, D]  — its codeword, the continuous head

The input map starts as the least-squares fit of the teacher's token embeddings from the flow codewords, so
the data positions of X_t look to the copied trunk like the tokens it was trained on.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from fewstep.nodes.zoo.ar.models import ARConfig, ARTransformer, RMSNorm


@dataclass(frozen=True)
class DDConfig:
    """Shapes of a ``DDGenerator``: the teacher's ``ARConfig`` plus the flow dimension D."""

    teacher: ARConfig
    flow_dim: int = 16

    def to_dict(self) -> dict[str, object]:
        return {"teacher": asdict(self.teacher), "flow_dim": self.flow_dim}

    @staticmethod
    def from_dict(d: dict[str, object]) -> DDConfig:
        return DDConfig(ARConfig(**d["teacher"]), int(d["flow_dim"]))


class DDGenerator(nn.Module):
    """Noise (and an optional data prefix) → all L tokens in one forward pass; see the module docstring.

    Buffers: ``book`` [K, D], the flow-space codebook (the data inputs and the continuous head's targets)."""

    def __init__(self, config: DDConfig, book: Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        c = config.teacher
        self.ar = ARTransformer(c)
        del self.ar.tok_embeddings                       # inputs are continuous vectors, not token ids
        self.in_proj = nn.Linear(config.flow_dim, c.dim)
        self.noise_data = nn.Embedding(2, c.dim)         # index 0: noise position, 1: data position
        nn.init.zeros_(self.noise_data.weight)
        self.cont_norm = RMSNorm(c.dim)
        self.cont_head = nn.Linear(c.dim, config.flow_dim)
        nn.init.zeros_(self.cont_head.weight)
        nn.init.zeros_(self.cont_head.bias)
        self.register_buffer("book", torch.zeros(c.vocab_size, config.flow_dim) if book is None else book.float())

    @staticmethod
    def from_teacher(teacher: ARTransformer, book: Tensor) -> DDGenerator:
        """A generator initialised from ``teacher`` (trunk, prefix, head) over the flow codebook ``book`` [K, D]."""
        gen = DDGenerator(DDConfig(teacher.config, book.shape[1]), book.to(teacher.output.weight.device))
        state = {k: v for k, v in copy.deepcopy(teacher).float().state_dict().items() if not k.startswith("tok_")}
        gen.ar.load_state_dict(state, strict=True)
        with torch.no_grad():                            # in_proj(c_k) ≈ E_teacher[k] in least squares
            emb = teacher.tok_embeddings.weight.float()                          # [K, dim]
            x = torch.cat([book.float(), torch.ones(len(book), 1, device=book.device)], 1)  # [K, D+1]
            sol = torch.linalg.lstsq(x.cpu(), emb.cpu()).solution                # [D+1, dim]
            gen.in_proj.weight.copy_(sol[:-1].T)
            gen.in_proj.bias.copy_(sol[-1])
        return gen.to(teacher.output.weight.device)

    def forward(self, x: Tensor, n_data: Tensor | int, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        """(logits [B, L, K], continuous codewords [B, L, D]) of X_t.

        Args:
            x: [B, L, D] flow-space inputs (codewords at data positions, the original noise after).
            n_data: t, the number of data positions (int, or [B] per row).
            cond: caption embeddings [B, cond_dim] (None: the null caption).
        """
        b, length, _ = x.shape
        if length != self.config.teacher.seq_len or x.shape[2] != self.config.flow_dim:
            raise ValueError(f"DDGenerator: x must be [B, {self.config.teacher.seq_len}, {self.config.flow_dim}], "
                             f"got {tuple(x.shape)}")
        t = torch.as_tensor(n_data, device=x.device).reshape(-1, 1)                # [B or 1, 1]
        is_data = (torch.arange(length, device=x.device)[None] < t).long()          # [B, L]
        dtype = self.in_proj.weight.dtype
        h = self.in_proj(x.to(dtype)) + self.noise_data(is_data).expand(b, -1, -1)  # [B, L, dim]
        states = self.ar.trunk(h, cond)[:, 1:]                                       # [B, L, dim]: after input i
        return self.ar.head(states), self.cont_head(self.cont_norm(states))


def partial_inputs(tokens: Tensor, noise: Tensor, t: Tensor | int, book: Tensor) -> Tensor:
    """X_t [B, L, D]: codewords of ``tokens`` [B, L] before position t (per row or one int), noise after."""
    pos = torch.arange(tokens.shape[1], device=tokens.device)[None]
    data = (pos < torch.as_tensor(t, device=tokens.device).reshape(-1, 1))[..., None]   # [B, L, 1]
    return torch.where(data, book[tokens].to(noise.dtype), noise)
