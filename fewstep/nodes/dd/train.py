"""Training the DD generator on a pair dataset, with the shared trainer core (checkpoints, resume, live loss).

The loop is ``fewstep.nodes.core.train.loop.fit``: step n draws its batch and its starts t from a generator
seeded by (seed, n), so a run resumed from a checkpoint replays exactly the steps an uninterrupted run takes.
Weights are written as fp16 safetensors with a JSON beside them (config, recipe, teacher, step set).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from fewstep.nodes.core.train.distributed import local_batch_size
from fewstep.nodes.core.train.loop import EMA, Checkpointer, FitSpec, TrainState, config_fingerprint, fit
from fewstep.nodes.dd.generator import DDConfig, DDGenerator
from fewstep.nodes.dd.loss import DDLoss, draw_starts
from fewstep.nodes.zoo.ar.models import ARTransformer
from fewstep.nodes.zoo.ar.tokenizer import VQTokenizer


@dataclass(frozen=True)
class DDTrainConfig:
    """How a DD generator is trained.

    Args:
        steps / batch_size / lr / warmup: AdamW (weight decay 0.01), linear warm-up then cosine to 10 %.
        t_list: the step set the generator learns (starts t of X_t): (0,) 1-step only, (0, t₁) for 2 steps.
        cont_weight / patch_weight: λ of the continuous-head and decoded-patch terms (``loss.DDLoss``).
        ema_decay: EMA of the weights used for sampling (0 = off; the paper samples with EMA weights).
        seed: batches and starts of step n come from (seed, n).
    """

    steps: int = 2000
    batch_size: int = 128
    lr: float = 3e-4
    warmup: int = 100
    t_list: tuple[int, ...] = (0, 24)
    cont_weight: float = 0.1
    patch_weight: float = 0.0
    ema_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.t_list or self.t_list[0] != 0 or list(self.t_list) != sorted(set(self.t_list)):
            raise ValueError(f"t_list must be ascending and start at 0, got {self.t_list}")

    def fingerprint(self) -> str:
        return config_fingerprint(asdict(self))

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        frac = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def parse_t_list(text: str) -> tuple[int, ...]:
    """"0,24" -> (0, 24), with a clear error for anything else."""
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError as err:
        raise ValueError(f"DD step set must be comma-separated integers such as '0,24', got {text!r}") from err
    return values


def train_dd(teacher: ARTransformer, book: Tensor, pairs: dict[str, Tensor], cond_table: Tensor,
             cfg: DDTrainConfig, *, tokenizer: VQTokenizer | None = None, checkpointer: Checkpointer | None = None,
             device: str = "cpu", max_seconds: float | None = None, meta: dict[str, object] | None = None,
             autocast: torch.dtype | None = None) -> tuple[DDGenerator, TrainState]:
    """Train a DD generator initialised from ``teacher``; returns the weights to sample with (EMA if on).

    Args:
        book: the flow-space codebook [K, D]; pairs: ``PairStore.load()`` (noise, tokens, prompt_index).
        cond_table: caption embeddings [P, cond_dim] that ``prompt_index`` points into.
    """
    if int(pairs["tokens"].shape[1]) <= cfg.t_list[-1]:
        raise ValueError(f"t_list {cfg.t_list} reaches past the sequence length {pairs['tokens'].shape[1]}")
    generator = DDGenerator.from_teacher(teacher.float(), book).to(device).train()
    target = copy.deepcopy(generator).eval() if cfg.ema_decay else None
    ema = EMA(generator, target, cfg.ema_decay) if target is not None else None
    optimizer = torch.optim.AdamW([p for p in generator.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=0.01, betas=(0.9, 0.95))
    loss_fn = DDLoss(cfg.cont_weight, cfg.patch_weight, tokenizer.to(device) if tokenizer is not None else None)
    data = {k: v.to(device) for k, v in pairs.items()}
    conds = cond_table.to(device).float()
    spec = FitSpec(total_steps=cfg.steps, seed=cfg.seed, lr_at=cfg.lr_at, grad_clip=1.0, device="cpu",
                   checkpointer=checkpointer, meta={"dd": cfg.fingerprint(), **(meta or {})},
                   max_seconds=max_seconds)
    state = fit(generator, optimizer, step_fn(generator, loss_fn, data, conds, cfg, device, autocast), spec,
                target=target, ema=ema)
    out = target if target is not None else generator
    return out.eval().requires_grad_(False), state


def step_fn(generator: DDGenerator, loss_fn: DDLoss, data: dict[str, Tensor], conds: Tensor, cfg: DDTrainConfig,
            device: str, autocast: torch.dtype | None) -> Callable[[int, torch.Generator], Tensor]:
    """``fit``'s step: a random batch and random starts t from the step's generator, the mean DD loss."""
    def run(step: int, gen: torch.Generator) -> Tensor:
        b = local_batch_size(cfg.batch_size)                            # this rank's share of the batch
        idx = torch.randint(0, len(data["tokens"]), (b,), generator=gen).to(device)
        batch = {k: v[idx] for k, v in data.items()}
        batch["cond"] = conds[batch["prompt_index"]]
        t = draw_starts(b, cfg.t_list, gen).to(device)
        with torch.autocast(device.split(":")[0], dtype=autocast, enabled=autocast is not None):
            return loss_fn(generator, batch, t).mean()
    return run


def save_generator(generator: DDGenerator, path: Path | str, meta: dict[str, object]) -> Path:
    """fp16 safetensors at ``path`` + ``path.json`` (``{"kind": "dd", "config", ...meta}``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().half().contiguous() for k, v in generator.state_dict().items()}
    state["book"] = generator.book.detach().cpu().float().contiguous()          # exact codewords
    save_file(state, str(path))
    path.with_suffix(".json").write_text(json.dumps({"kind": "dd", "config": generator.config.to_dict(), **meta},
                                                    indent=1))
    return path


def load_generator(path: Path | str, device: str = "cpu") -> tuple[DDGenerator, dict[str, object]]:
    """A generator written by :func:`save_generator` (float32, eval mode) and its JSON."""
    from safetensors.torch import load_file

    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"DD generator {path} or its {meta_path.name} is missing")
    meta = json.loads(meta_path.read_text())
    if meta.get("kind") != "dd":
        raise ValueError(f"{meta_path} is not a DD generator (kind {meta.get('kind')!r})")
    gen = DDGenerator(DDConfig.from_dict(meta["config"]))
    gen.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()}, strict=True)
    return gen.to(device).eval().requires_grad_(False), meta
