"""DD's training pairs: Gaussian noise → the teacher's tokens through the deterministic flow, saved to disk.

The AR teacher samples position by position; DD replaces each categorical draw by the flow map of
``flow.py``: with the teacher's distribution ``p(· | q_<i, c)`` at position i and the noise ``ε_i`` [D] of that
position, ``q_i = Φ(ε_i; p)``. The whole sequence is then a deterministic function of (ε_1..ε_L, c), and a
set of (ε, q, c) triples is the dataset DD learns (no real images needed).

On disk (a plain folder any tool can read; ``safetensors`` + JSON)::

    manifest.json           format, sequence length L, flow dim D, vocabulary K, shard size, seed, flow steps,
                            teacher (name@digest of its weights, :func:`teacher_tag`) and CFG: a re-run with
                            another setting or another checkpoint of the teacher is refused, not mixed in
    prompts.json            the caption list; ``prompt_index`` points into it
    conds.safetensors       cond float32 [P, cond_dim]: the captions' embeddings as the teacher sees them
    shard_00000.safetensors noise float32 [n, L, D], tokens int64 [n, L], prompt_index int64 [n]
    ...

Shard j's noise and prompts come from a generator seeded by (seed, j), so an interrupted build resumes at the
first missing shard and ends with exactly the files an uninterrupted one writes (shards are written to a
temporary name and renamed, so a crash never leaves half a shard).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from fewstep.nodes.dd.flow import solve_flow

FORMAT = "fewstep-dd-pairs/1"

# next_logits(tokens [B, i]) -> log-probabilities [B, K] of position i given the prefix (i = 0: nothing yet).
# One callable per batch: it may keep the teacher's KV cache between calls.
NextLogProbs = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class PairSpec:
    """What a pair dataset is made of (all of it in ``manifest.json``).

    Args:
        count: number of pairs.
        seq_len / dim / vocab: L tokens, flow-space dimension D, codebook size K.
        shard_size: pairs per file (the unit of resume).
        seed: noise and prompt draws of shard j come from (seed, j).
        flow_steps: Euler steps of the flow solver per token (32: tokens equal a 400-step RK4 solve's on
            > 98 % of positions, tests/dd/test_flow.py).
        teacher: the teacher's :func:`teacher_tag` (name@digest: which checkpoint made the tokens);
            cfg: its CFG scale on the logits.
    """

    count: int
    seq_len: int
    dim: int
    vocab: int
    shard_size: int = 256
    seed: int = 0
    flow_steps: int = 32
    teacher: str = ""
    cfg: float = 1.0

    def __post_init__(self) -> None:
        if self.count < 1 or self.shard_size < 1:
            raise ValueError(f"pair count and shard size must be >= 1, got {self.count} and {self.shard_size}")

    @property
    def shards(self) -> int:
        return -(-self.count // self.shard_size)

    def shard_len(self, j: int) -> int:
        return min(self.shard_size, self.count - j * self.shard_size)


def teacher_tag(name: str, teacher: torch.nn.Module) -> str:
    """``name@<16 hex>``: the name plus a sha256 of the teacher's weights (names, shapes and float32 values in
    ``state_dict`` order; float32 so a model loaded in fp16 from an fp16 file keeps its tag), so two checkpoints
    of one model give different tags."""
    import hashlib

    digest = hashlib.sha256()
    for key, value in teacher.state_dict().items():
        value = value.detach().cpu()
        value = value.float() if value.is_floating_point() else value
        digest.update(f"{key}:{tuple(value.shape)}".encode())
        digest.update(value.contiguous().view(torch.uint8).numpy().tobytes())
    return f"{name}@{digest.hexdigest()[:16]}"


def shard_generator(seed: int, shard: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + shard) % (2**63 - 1))


@torch.no_grad()
def flow_decode(next_log_probs: NextLogProbs, noise: Tensor, codebook: Tensor, flow_steps: int = 32) -> Tensor:
    """Teacher tokens [B, L] from noise [B, L, D]: at each position the flow map of the teacher's conditional.

    ``codebook`` [K, D] is the flow-space codebook (``flow.flow_space``)."""
    tokens = torch.zeros(noise.shape[0], 0, dtype=torch.long, device=noise.device)
    for i in range(noise.shape[1]):
        logp = next_log_probs(tokens).float()                                 # [B, K]
        q_i = solve_flow(noise[:, i].float(), codebook, logp, flow_steps)      # [B]
        tokens = torch.cat([tokens, q_i[:, None]], dim=1)
    return tokens


class PairStore:
    """The folder of a pair dataset: manifest, prompts and shards (see the module docstring)."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)

    def shard_path(self, j: int) -> Path:
        return self.folder / f"shard_{j:05d}.safetensors"

    def manifest(self) -> dict | None:
        path = self.folder / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def prompts(self) -> list[str]:
        return json.loads((self.folder / "prompts.json").read_text())

    def conds(self) -> Tensor:
        """The caption embeddings [P, cond_dim] (``prompt_index`` rows)."""
        return load_file(str(self.folder / "conds.safetensors"))["cond"]

    def begin(self, spec: PairSpec, prompts: list[str], conds: Tensor) -> None:
        """Write manifest, prompts and their embeddings, or check that an existing folder has the same ones."""
        if len(conds) != len(prompts):
            raise ValueError(f"pair dataset: {len(conds)} caption embeddings for {len(prompts)} prompts")
        want = {"format": FORMAT, **asdict(spec)}
        have = self.manifest()
        if have is not None:
            if have != want or self.prompts() != prompts:
                raise ValueError(f"{self.folder} holds a pair dataset made with other settings ({have}); "
                                 "choose another folder or delete it")
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "prompts.json").write_text(json.dumps(prompts))
        save_file({"cond": conds.float().cpu().contiguous()}, str(self.folder / "conds.safetensors"))
        (self.folder / "manifest.json").write_text(json.dumps(want, indent=1))

    def done(self, spec: PairSpec) -> list[int]:
        return [j for j in range(spec.shards) if self.shard_path(j).is_file()]

    def write_shard(self, j: int, noise: Tensor, tokens: Tensor, prompt_index: Tensor) -> None:
        tmp = self.shard_path(j).with_suffix(".tmp")
        save_file({"noise": noise.float().cpu().contiguous(), "tokens": tokens.long().cpu().contiguous(),
                   "prompt_index": prompt_index.long().cpu().contiguous()}, str(tmp))
        os.replace(tmp, self.shard_path(j))

    def load(self) -> dict[str, Tensor]:
        """All shards concatenated: noise [N, L, D], tokens [N, L], prompt_index [N]."""
        spec = self.manifest()
        if spec is None:
            raise ValueError(f"{self.folder} is not a DD pair dataset (no manifest.json)")
        parts = [load_file(str(self.shard_path(j))) for j in range(-(-spec["count"] // spec["shard_size"]))
                 if self.shard_path(j).is_file()]
        if not parts:
            raise ValueError(f"{self.folder}: no shards written yet")
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def shard_inputs(spec: PairSpec, j: int, n_prompts: int) -> tuple[Tensor, Tensor]:
    """(noise [n, L, D], prompt_index [n]) of shard j: a pure function of (seed, j)."""
    gen = shard_generator(spec.seed, j)
    n = spec.shard_len(j)
    noise = torch.randn(n, spec.seq_len, spec.dim, generator=gen)
    return noise, torch.randint(0, n_prompts, (n,), generator=gen)


def build_pairs(store: PairStore, spec: PairSpec, prompts: list[str], conds: Tensor,
                decode_batch: Callable[[Tensor, Tensor], Tensor], *, batch_size: int = 256,
                progress: Callable[[int, int], None] | None = None, max_seconds: float | None = None) -> PairStore:
    """Fill ``store`` with ``spec.count`` pairs, skipping shards already on disk (resume).

    ``decode_batch(noise [b, L, D], cond [b, cond_dim]) -> tokens [b, L]`` runs the teacher's flow decode
    (:func:`flow_decode` with the teacher's conditional for those captions); ``conds`` [P, cond_dim] are the
    embeddings of ``prompts``. ``max_seconds``: stop after the
    shard that passes this much time (a later call resumes there)."""
    if not prompts:
        raise ValueError("the pair dataset needs at least one prompt")
    store.begin(spec, prompts, conds)
    start = time.monotonic()
    for j in range(spec.shards):
        if store.shard_path(j).is_file():
            continue
        if max_seconds is not None and time.monotonic() - start > max_seconds:
            break
        noise, index = shard_inputs(spec, j, len(prompts))
        tokens = torch.cat([decode_batch(noise[a:a + batch_size], conds[index[a:a + batch_size]]).cpu()
                            for a in range(0, len(noise), batch_size)])
        store.write_shard(j, noise, tokens, index)
        if progress is not None:
            progress(j + 1, spec.shards)
    return store
