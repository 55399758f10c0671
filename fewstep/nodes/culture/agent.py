"""A population of recurrent actor-critics (the paper code's ``ActorCriticRNN``), M independent members in one
module so a population trains (or acts as demonstrators) in one batched call.

Per member (code ``ActorCriticRNN``)::

    e = leaky(W2 · leaky(W1 · o))                 o [obs] → 128 → hidden
    h' = GRU(e, h)                                (reset to 0 where the step starts a new episode)
    logits = A3 · leaky(A2 · leaky(A1 · h'))      hidden → 128 → 128 → A   (final init scale 0.01)
    value  = C3 · leaky(C2 · leaky(C1 · h'))      hidden → 128 → 128 → 1

Every weight has a leading member axis M; a linear layer is ``baddbmm(b, x [M,N,i], W [M,i,o])``, so members
never mix: gradients, clipping (per member, :func:`clip_per_member`) and Adam stay independent.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

LAYERS = ("enc1", "enc2", "actor1", "actor2", "actor_out", "critic1", "critic2", "critic_out")
HEAD_LAYERS = ("actor2", "actor_out", "critic2", "critic_out")   # "the last two feed-forward layers" (resets)


@dataclass(frozen=True)
class AgentConfig:
    """Shape of one actor-critic.

    Args:
        obs_dim: observation width (the environment's ``obs_dim``).
        num_actions: A.
        hidden: GRU width (paper code: 256).
        embed: width of the encoder's first layer and of the heads (paper code: 128).
    """

    obs_dim: int
    num_actions: int
    hidden: int = 256
    embed: int = 128


def _orthogonal(members: int, fan_in: int, fan_out: int, gain: float, gen: torch.Generator) -> Tensor:
    """[M, fan_in, fan_out], each member an orthogonal matrix times ``gain`` (flax ``orthogonal(gain)``)."""
    mats = []
    for _ in range(members):
        a = torch.randn(max(fan_in, fan_out), min(fan_in, fan_out), generator=gen)
        q, r = torch.linalg.qr(a)
        q = q * torch.sign(torch.diagonal(r))[None, :]
        mats.append((q if fan_in >= fan_out else q.T) * gain)
    return torch.stack(mats)


class PopulationActorCritic(nn.Module):
    """M GRU actor-critics. ``step(obs [M,N,D], h [M,N,H], reset [M,N]) -> (logits [M,N,A], value [M,N], h')``."""

    def __init__(self, cfg: AgentConfig, members: int = 1, seed: int = 0) -> None:
        super().__init__()
        self.cfg, self.members = cfg, members
        gen = torch.Generator().manual_seed(seed)
        sizes = self._sizes()
        for name in LAYERS:
            fan_in, fan_out, gain = sizes[name]
            self.register_parameter(f"{name}_w", nn.Parameter(_orthogonal(members, fan_in, fan_out, gain, gen)))
            self.register_parameter(f"{name}_b", nn.Parameter(torch.zeros(members, 1, fan_out)))
        h = cfg.hidden
        bound = 1.0 / math.sqrt(h)      # torch GRU default init U(−1/√H, 1/√H)
        self.gru_ih = nn.Parameter((torch.rand(members, h, 3 * h, generator=gen) * 2 - 1) * bound)
        self.gru_hh = nn.Parameter((torch.rand(members, h, 3 * h, generator=gen) * 2 - 1) * bound)
        self.gru_bih = nn.Parameter(torch.zeros(members, 1, 3 * h))
        self.gru_bhh = nn.Parameter(torch.zeros(members, 1, 3 * h))

    def _sizes(self) -> dict[str, tuple[int, int, float]]:
        c, s2 = self.cfg, math.sqrt(2.0)
        return {"enc1": (c.obs_dim, c.embed, s2), "enc2": (c.embed, c.hidden, s2),
                "actor1": (c.hidden, c.embed, 2.0), "actor2": (c.embed, c.embed, 2.0),
                "actor_out": (c.embed, c.num_actions, 0.01), "critic1": (c.hidden, c.embed, 2.0),
                "critic2": (c.embed, c.embed, 2.0), "critic_out": (c.embed, 1, 1.0)}

    def _linear(self, name: str, x: Tensor) -> Tensor:
        return torch.baddbmm(getattr(self, f"{name}_b"), x, getattr(self, f"{name}_w"))

    def _gru(self, x: Tensor, h: Tensor) -> Tensor:
        """GRU cell (torch's gate order r, z, n): h' = (1 − z)·n + z·h."""
        gi = torch.baddbmm(self.gru_bih, x, self.gru_ih)
        gh = torch.baddbmm(self.gru_bhh, h, self.gru_hh)
        ir, iz, inn = gi.chunk(3, -1)
        hr, hz, hn = gh.chunk(3, -1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(inn + r * hn)
        return (1 - z) * n + z * h

    def initial_state(self, rows: int, device: torch.device | str | None = None) -> Tensor:
        """Zero hidden state [M, rows, H]."""
        return torch.zeros(self.members, rows, self.cfg.hidden, device=device or self.gru_ih.device)

    def step(self, obs: Tensor, h: Tensor, reset: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        leaky = nn.functional.leaky_relu
        h = torch.where(reset[..., None], 0.0, h)
        e = leaky(self._linear("enc2", leaky(self._linear("enc1", obs))))
        h = self._gru(e, h)
        a = leaky(self._linear("actor2", leaky(self._linear("actor1", h))))
        v = leaky(self._linear("critic2", leaky(self._linear("critic1", h))))
        return self._linear("actor_out", a), self._linear("critic_out", v)[..., 0], h

    def reset_heads(self, seed: int) -> None:
        """Re-initialise the last two layers of the actor and of the critic (the paper's in-weights resets)."""
        gen, sizes = torch.Generator().manual_seed(seed), self._sizes()
        with torch.no_grad():
            for name in HEAD_LAYERS:
                fan_in, fan_out, gain = sizes[name]
                getattr(self, f"{name}_w").copy_(_orthogonal(self.members, fan_in, fan_out, gain, gen))
                getattr(self, f"{name}_b").zero_()

    def member(self, index: Tensor | list[int]) -> PopulationActorCritic:
        """A new population of the chosen members (copies of their weights), in that order."""
        idx = torch.as_tensor(index, dtype=torch.long)
        out = PopulationActorCritic(self.cfg, members=len(idx)).to(self.gru_ih.device)
        out.load_state_dict({k: v.detach()[idx.to(v.device)].clone() for k, v in self.state_dict().items()})
        return out

    def config_dict(self) -> dict[str, int]:
        return asdict(self.cfg) | {"members": self.members}


def clip_per_member(net: PopulationActorCritic, max_norm: float) -> Tensor:
    """Scale each member's gradient so its global norm is at most ``max_norm`` (optax
    ``clip_by_global_norm`` run per agent); returns the norms [M] before clipping."""
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    sq = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0)               # [M]
    norm = sq.sqrt()
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
    return norm
