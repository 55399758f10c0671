"""A population of recurrent actor-critics (the paper code's ``ActorCriticRNN``, or its S5 agent), M independent
members in one module so a population trains (or acts as demonstrators) in one batched call.

Per member (code ``ActorCriticRNN``)::

    e = leaky(W2 · leaky(W1 · o))                 o [obs] → 128 → hidden
    h' = core(e, h)                               GRU, or a stack of S5 blocks (``s5.py``); the state is reset
                                                  to 0 where the step starts a new episode
    logits = A3 · leaky(A2 · leaky(A1 · h'))      hidden → 128 → 128 → A   (final init scale 0.01)
    value  = C3 · leaky(C2 · leaky(C1 · h'))      hidden → 128 → 128 → 1

Every weight has a leading member axis M; a linear layer is ``baddbmm(b, x [M,N,i], W [M,i,o])``, so members
never mix: gradients, clipping (per member, :func:`clip_per_member`) and Adam stay independent.

The recurrent state an agent hands around is a real tensor [M, N, ``state_size``] whatever the core (the S5
stack packs its complex modes), so PPO, the demonstrators' stored reset states and checkpoints treat both
alike. ``step`` advances one step (acting); ``sequence`` runs a whole rollout (training), as a loop of steps for
the GRU and as one parallel scan per S5 block.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from fewstep.nodes.culture.s5 import S5Layer

LAYERS = ("enc1", "enc2", "actor1", "actor2", "actor_out", "critic1", "critic2", "critic_out")
HEAD_LAYERS = ("actor2", "actor_out", "critic2", "critic_out")   # "the last two feed-forward layers" (resets)
CORES = ("gru", "s5")


@dataclass(frozen=True)
class AgentConfig:
    """Shape of one actor-critic.

    Args:
        obs_dim: observation width (the environment's ``obs_dim``).
        num_actions: A.
        hidden: GRU width, or the S5 model width H (paper code: 256).
        embed: width of the encoder's first layer and of the heads (paper code: 128).
        core: ``gru`` or ``s5``.
        ssm_layers: S5 blocks (LayerNorm → S5 → GELU → half-GLU, residual; the S5 RL code: 4); unused by the GRU.
        ssm_state: S5 state size P per block (0 = ``hidden``; conjugate pairs, so even); unused by the GRU.
    """

    obs_dim: int
    num_actions: int
    hidden: int = 256
    embed: int = 128
    core: str = "gru"
    ssm_layers: int = 2
    ssm_state: int = 0

    def __post_init__(self) -> None:
        if self.core not in CORES:
            raise ValueError(f"unknown recurrent core {self.core!r}; choose one of {CORES}")
        if self.core == "s5" and (self.ssm_layers < 1 or (self.ssm_state or self.hidden) % 2):
            raise ValueError("an S5 core needs ssm_layers >= 1 and an even state size (conjugate pairs)")


def _orthogonal(members: int, fan_in: int, fan_out: int, gain: float, gen: torch.Generator) -> Tensor:
    """[M, fan_in, fan_out], each member an orthogonal matrix times ``gain`` (flax ``orthogonal(gain)``)."""
    mats = []
    for _ in range(members):
        a = torch.randn(max(fan_in, fan_out), min(fan_in, fan_out), generator=gen)
        q, r = torch.linalg.qr(a)
        q = q * torch.sign(torch.diagonal(r))[None, :]
        mats.append((q if fan_in >= fan_out else q.T) * gain)
    return torch.stack(mats)


class PopulationAgent(nn.Module):
    """M actor-critics: encoder, heads and the population plumbing; subclasses add the recurrent core.

    ``step(obs [M,N,D], h [M,N,S], reset [M,N]) -> (logits [M,N,A], value [M,N], h')`` and
    ``sequence(obs [T,M,N,D], h0 [M,N,S], resets [T,M,N]) -> (logits [T,M,N,A], values [T,M,N], h_T)``.
    """

    def __init__(self, cfg: AgentConfig, members: int = 1, seed: int = 0) -> None:
        super().__init__()
        self.cfg, self.members = cfg, members
        gen = torch.Generator().manual_seed(seed)
        sizes = self._sizes()
        for name in LAYERS:
            fan_in, fan_out, gain = sizes[name]
            self.register_parameter(f"{name}_w", nn.Parameter(_orthogonal(members, fan_in, fan_out, gain, gen)))
            self.register_parameter(f"{name}_b", nn.Parameter(torch.zeros(members, 1, fan_out)))
        self._init_core(gen)

    def _init_core(self, gen: torch.Generator) -> None:
        raise NotImplementedError

    @property
    def state_size(self) -> int:
        """S: width of the real recurrent state each row carries."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return self.enc1_w.device

    def _sizes(self) -> dict[str, tuple[int, int, float]]:
        c, s2 = self.cfg, math.sqrt(2.0)
        return {"enc1": (c.obs_dim, c.embed, s2), "enc2": (c.embed, c.hidden, s2),
                "actor1": (c.hidden, c.embed, 2.0), "actor2": (c.embed, c.embed, 2.0),
                "actor_out": (c.embed, c.num_actions, 0.01), "critic1": (c.hidden, c.embed, 2.0),
                "critic2": (c.embed, c.embed, 2.0), "critic_out": (c.embed, 1, 1.0)}

    def _linear(self, name: str, x: Tensor) -> Tensor:
        return torch.baddbmm(getattr(self, f"{name}_b"), x, getattr(self, f"{name}_w"))

    def _encode(self, obs: Tensor) -> Tensor:
        leaky = nn.functional.leaky_relu
        return leaky(self._linear("enc2", leaky(self._linear("enc1", obs))))

    def _heads(self, h: Tensor) -> tuple[Tensor, Tensor]:
        leaky = nn.functional.leaky_relu
        a = leaky(self._linear("actor2", leaky(self._linear("actor1", h))))
        v = leaky(self._linear("critic2", leaky(self._linear("critic1", h))))
        return self._linear("actor_out", a), self._linear("critic_out", v)[..., 0]

    def initial_state(self, rows: int, device: torch.device | str | None = None) -> Tensor:
        """Zero recurrent state [M, rows, S]."""
        return torch.zeros(self.members, rows, self.state_size, device=device or self.device)

    def step(self, obs: Tensor, h: Tensor, reset: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def sequence(self, obs: Tensor, h: Tensor, resets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """A rollout, step by step (the GRU's training path; S5 overrides it with a scan)."""
        logits, values = [], []
        for t in range(obs.shape[0]):
            lg, v, h = self.step(obs[t], h, resets[t])
            logits.append(lg)
            values.append(v)
        return torch.stack(logits), torch.stack(values), h

    def reset_heads(self, seed: int) -> None:
        """Re-initialise the last two layers of the actor and of the critic (the paper's in-weights resets)."""
        gen, sizes = torch.Generator().manual_seed(seed), self._sizes()
        with torch.no_grad():
            for name in HEAD_LAYERS:
                fan_in, fan_out, gain = sizes[name]
                getattr(self, f"{name}_w").copy_(_orthogonal(self.members, fan_in, fan_out, gain, gen))
                getattr(self, f"{name}_b").zero_()

    def member(self, index: Tensor | list[int]) -> PopulationAgent:
        """A new population of the chosen members (copies of their weights), in that order."""
        idx = torch.as_tensor(index, dtype=torch.long)
        out = type(self)(self.cfg, members=len(idx)).to(self.device)
        out.load_state_dict({k: v.detach()[idx.to(v.device)].clone() for k, v in self.state_dict().items()})
        return out

    def config_dict(self) -> dict[str, int | str]:
        return asdict(self.cfg) | {"members": self.members}


class PopulationActorCritic(PopulationAgent):
    """M GRU actor-critics (the paper code's notebook agent); state S = ``hidden``."""

    def _init_core(self, gen: torch.Generator) -> None:
        h = self.cfg.hidden
        m = self.members
        bound = 1.0 / math.sqrt(h)      # torch GRU default init U(−1/√H, 1/√H)
        self.gru_ih = nn.Parameter((torch.rand(m, h, 3 * h, generator=gen) * 2 - 1) * bound)
        self.gru_hh = nn.Parameter((torch.rand(m, h, 3 * h, generator=gen) * 2 - 1) * bound)
        self.gru_bih = nn.Parameter(torch.zeros(m, 1, 3 * h))
        self.gru_bhh = nn.Parameter(torch.zeros(m, 1, 3 * h))

    @property
    def state_size(self) -> int:
        return self.cfg.hidden

    def _gru(self, x: Tensor, h: Tensor) -> Tensor:
        """GRU cell (torch's gate order r, z, n): h' = (1 − z)·n + z·h."""
        gi = torch.baddbmm(self.gru_bih, x, self.gru_ih)
        gh = torch.baddbmm(self.gru_bhh, h, self.gru_hh)
        ir, iz, inn = gi.chunk(3, -1)
        hr, hz, hn = gh.chunk(3, -1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(inn + r * hn)
        return (1 - z) * n + z * h

    def step(self, obs: Tensor, h: Tensor, reset: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = torch.where(reset[..., None], 0.0, h)
        h = self._gru(self._encode(obs), h)
        logits, value = self._heads(h)
        return logits, value, h


class S5Block(nn.Module):
    """One S5 block per member (the S5 RL code's ``SequenceLayer``, pre-norm, ``half_glu1``)::

        z = S5(LayerNorm(x));  z = GELU(z);  z = z ⊙ σ(W z + b);  out = x + z
    """

    def __init__(self, members: int, width: int, state: int, gen: torch.Generator) -> None:
        super().__init__()
        self.ssm = S5Layer(members, width, state, gen)
        self.norm_w = nn.Parameter(torch.ones(members, 1, width))
        self.norm_b = nn.Parameter(torch.zeros(members, 1, width))
        bound = 1.0 / math.sqrt(width)
        self.glu_w = nn.Parameter((torch.rand(members, width, width, generator=gen) * 2 - 1) * bound)
        self.glu_b = nn.Parameter(torch.zeros(members, 1, width))

    def _norm(self, x: Tensor) -> Tensor:
        """LayerNorm over the feature axis with per-member affine; x [M, R, H]."""
        return nn.functional.layer_norm(x, x.shape[-1:]) * self.norm_w + self.norm_b

    def _gate(self, x: Tensor, z: Tensor) -> Tensor:
        z = nn.functional.gelu(z)
        return x + z * torch.sigmoid(torch.baddbmm(self.glu_b, z, self.glu_w))

    def step(self, x: Tensor, state: Tensor, reset: Tensor) -> tuple[Tensor, Tensor]:
        z, state = self.ssm.step(self._norm(x), state, reset)
        return self._gate(x, z), state

    def scan(self, x: Tensor, state: Tensor, resets: Tensor) -> tuple[Tensor, Tensor]:
        """x [T, M, N, H] → ([T, M, N, H], final state)."""
        t, m, n, h = x.shape
        flat = x.transpose(0, 1).reshape(m, t * n, h)                      # [M, T·N, H]
        normed = self._norm(flat).view(m, t, n, h).transpose(0, 1)
        z, state = self.ssm.scan(normed, state, resets)
        out = self._gate(flat, z.transpose(0, 1).reshape(m, t * n, h))
        return out.view(m, t, n, h).transpose(0, 1), state


class PopulationS5ActorCritic(PopulationAgent):
    """M S5 actor-critics (the paper's agent): ``ssm_layers`` S5 blocks of width ``hidden`` replace the GRU;
    state S = ssm_layers · P (each block's P/2 complex modes as real and imaginary parts)."""

    def _init_core(self, gen: torch.Generator) -> None:
        c = self.cfg
        self.blocks = nn.ModuleList(S5Block(self.members, c.hidden, c.ssm_state or c.hidden, gen)
                                    for _ in range(c.ssm_layers))

    @property
    def state_size(self) -> int:
        return self.cfg.ssm_layers * (self.cfg.ssm_state or self.cfg.hidden)

    def _split(self, h: Tensor) -> list[Tensor]:
        """[..., S] → one complex [..., P/2] per block."""
        return [S5Layer.unpack(part) for part in h.chunk(len(self.blocks), -1)]

    def step(self, obs: Tensor, h: Tensor, reset: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, states = self._encode(obs), []
        for block, state in zip(self.blocks, self._split(h), strict=True):
            x, state = block.step(x, state, reset)
            states.append(S5Layer.pack(state))
        logits, value = self._heads(x)
        return logits, value, torch.cat(states, -1)

    def sequence(self, obs: Tensor, h: Tensor, resets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The whole rollout at once: encoder and heads over T·N rows, each block one parallel scan."""
        t, m, n, d = obs.shape
        x = self._encode(obs.transpose(0, 1).reshape(m, t * n, d)).view(m, t, n, -1).transpose(0, 1)
        states = []
        for block, state in zip(self.blocks, self._split(h), strict=True):
            x, state = block.scan(x, state, resets)
            states.append(S5Layer.pack(state))
        logits, value = self._heads(x.transpose(0, 1).reshape(m, t * n, -1))
        return (logits.view(m, t, n, -1).transpose(0, 1), value.view(m, t, n).transpose(0, 1),
                torch.cat(states, -1))


def make_agent(cfg: AgentConfig, members: int = 1, seed: int = 0) -> PopulationAgent:
    """The population of ``cfg.core``."""
    return (PopulationS5ActorCritic if cfg.core == "s5" else PopulationActorCritic)(cfg, members, seed)


def clip_per_member(net: PopulationAgent, max_norm: float) -> Tensor:
    """Scale each member's gradient so its global norm is at most ``max_norm`` (optax
    ``clip_by_global_norm`` run per agent); returns the norms [M] before clipping."""
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    sq = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0)               # [M]
    norm = sq.sqrt()
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
    return norm
