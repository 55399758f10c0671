"""The rows of the DD table, generated on any device: tokens, network calls, ms per image, teacher NLL.

Rows (held-out captions, one flow-space noise per caption, seed 1234):
    teacher (L steps)            the AR teacher's own sampler (temperature 1, CFG on the logits)
    teacher flow map (L steps)   the same teacher through DD's deterministic flow map (what DD distils)
    DD 1-step / DD 2-step        the generator from X_0, then from X_{t₁}
    DD + teacher                 one DD step, keep n tokens, teacher continues to t₁, one DD step
    marginals (1 step)           every position drawn on its own from its per-caption marginal, estimated from
                                 M teacher samples per caption (the paper's naive "onestep*")
    parallel decoding (1 step)   one teacher pass over that marginal draft, every position resampled

Columns measured here: network calls per image, batch-1 ms per image (median of 5 after a warm-up), and the
teacher's NLL per token of the generated tokens (how likely the teacher finds them; its own samples score its
entropy). FD-EffNet and probe accuracy are judged from the tokens by ``table.py`` (the GPU machine has no
EfficientNet weights).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from fewstep.nodes.core.ar.sampling import cfg_logits, sample_ar
from fewstep.nodes.dd.generator import DDGenerator
from fewstep.nodes.dd.sampling import (
    empirical_marginals,
    sample_dd,
    sample_dd_teacher,
    sample_marginals,
    sample_parallel,
    teacher_involved_calls,
)
from fewstep.nodes.dd.teacher import teacher_flow_tokens
from fewstep.nodes.zoo.ar.models import ARTransformer


@dataclass(frozen=True)
class EvalSetup:
    """Sampling settings of the table (the pairs were made with the same CFG)."""

    cfg: float = 3.0                 # the AR Sampler node's default
    t_list: tuple[int, ...] = (0, 24)
    teacher_prefix: int = 8
    marginal_samples: int = 8
    flow_steps: int = 32
    seed: int = 1234


Sampler = Callable[[Tensor, Tensor, torch.Generator], Tensor]     # (noise, cond, gen) -> tokens


def samplers(teacher: ARTransformer, dd: DDGenerator, setup: EvalSetup) -> dict[str, tuple[int, Sampler]]:
    """name -> (network calls per image, sampler)."""
    length, t1 = teacher.config.seq_len, setup.t_list[-1]
    s = setup

    def marginal_draft(noise: Tensor, cond: Tensor, gen: torch.Generator) -> Tensor:
        rep = cond.repeat_interleave(s.marginal_samples, 0)
        draws = sample_ar(teacher, rep, cfg_scale=s.cfg, generator=gen).view(len(cond), s.marginal_samples, -1)
        return sample_marginals(empirical_marginals(draws, teacher.config.vocab_size), gen)

    rows: dict[str, tuple[int, Sampler]] = {
        f"teacher ({length} steps)": (length, lambda n, c, g: sample_ar(teacher, c, cfg_scale=s.cfg, generator=g)),
        f"teacher flow map ({length} steps)": (length, lambda n, c, g: teacher_flow_tokens(
            teacher, n, c, dd.book, cfg_scale=s.cfg, flow_steps=s.flow_steps)),
        "DD 1-step": (1, lambda n, c, g: sample_dd(dd, n, c, (0,))),
        "DD 2-step": (2, lambda n, c, g: sample_dd(dd, n, c, (0, t1))),
        f"DD + teacher ({s.teacher_prefix}..{t1})": (
            teacher_involved_calls(s.teacher_prefix, t1, length),
            lambda n, c, g: sample_dd_teacher(dd, teacher, n, c, dd_prefix=s.teacher_prefix, switch=t1,
                                              cfg_scale=s.cfg, flow_steps=s.flow_steps)),
        "marginals (1 step)": (1, marginal_draft),
        "parallel decoding (1 step)": (1, lambda n, c, g: sample_parallel(
            teacher, marginal_draft(n, c, g), c, cfg_scale=s.cfg, generator=g)),
    }
    return rows


@torch.no_grad()
def teacher_nll(teacher: ARTransformer, tokens: Tensor, cond: Tensor, cfg: float, batch: int = 256) -> float:
    """Mean −log p_teacher(q_i | q_<i, c) per token (CFG logits, as the rows sample), nats."""
    total = 0.0
    for a in range(0, len(tokens), batch):
        tk, c = tokens[a:a + batch], cond[a:a + batch]
        b = len(tk)
        null = torch.arange(2 * b, device=c.device) >= b
        both = teacher(torch.cat([tk, tk]), torch.cat([c, c]), null=null).float()
        logp = torch.log_softmax(cfg_logits(both[:b], both[b:], cfg), -1)
        total += float(-logp.gather(-1, tk[..., None]).sum())
    return total / tokens.numel()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def latency_ms(run: Sampler, noise: Tensor, cond: Tensor, device: str, repeats: int = 5) -> float:
    """Median batch-1 wall time of ``run`` in ms (one warm-up call first)."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    run(noise[:1], cond[:1], gen)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        run(noise[:1], cond[:1], gen)
        sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


@torch.no_grad()
def generate_rows(teacher: ARTransformer, dd: DDGenerator, cond: Tensor, setup: EvalSetup, device: str,
                  batch: int = 256, log: Callable[[str], None] = print) -> tuple[dict[str, Tensor], list[dict]]:
    """Tokens of every row for the captions ``cond`` [N, c] and each row's calls, ms/img and teacher NLL."""
    n, length, dim = len(cond), teacher.config.seq_len, dd.config.flow_dim
    noise = torch.randn(n, length, dim, generator=torch.Generator().manual_seed(setup.seed)).to(device)
    cond = cond.to(device)
    tokens, rows = {}, []
    for name, (calls, run) in samplers(teacher, dd, setup).items():
        gen = torch.Generator(device="cpu").manual_seed(setup.seed + 1)
        start = time.perf_counter()
        tokens[name] = torch.cat([run(noise[a:a + batch], cond[a:a + batch], gen) for a in range(0, n, batch)]).cpu()
        ms = latency_ms(run, noise, cond, device)
        nll = teacher_nll(teacher, tokens[name].to(device), cond, setup.cfg)
        rows.append({"method": name, "calls": calls, "ms_per_image": ms, "teacher_nll": nll})
        log(f"{name}: {calls} calls, {ms:.2f} ms/img (batch 1), NLL {nll:.3f}, "
            f"{time.perf_counter() - start:.1f} s for {n}")
    return tokens, rows
