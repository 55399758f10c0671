"""SynVid in miniature: the teacher's 50-step denoising trajectories, key points kept, saved to disk.

AccVideo's dataset holds HunyuanVideo's own trajectories (noise -> video, 50 flow-Euler steps at shift 7) with
their prompts, so the student trains only on points that lie on the teacher's ODE paths (paper §4.1; the
"useless data points" of forward diffusion are what it avoids). Here: the built-in video model as the teacher,
classifier-free guidance ``cfg`` inside each step (the student learns the guided velocity, as AccVideo's
student learns HunyuanVideo's guidance-embedded one), the points at the key indices {0, 10, 20, 30, 40, 50}
(``keypoints``).

On disk (plain folder; ``safetensors`` + JSON)::

    manifest.json            format, count, shard size, seed, frames, cfg, shift, steps, key indices, teacher
    prompts.json             the caption list; ``prompt_index`` points into it
    shard_00000.safetensors  points float32 [n, m + 1, T, C, h, w] (sampling order: noise first, clip last),
                             prompt_index int64 [n]

Shard j's noise and prompts come from a generator seeded by (seed, j): an interrupted build resumes at the first
missing shard and ends with the files an uninterrupted one writes (each shard is written to a temporary name and
renamed).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from fewstep.nodes.accvideo.keypoints import BASE_STEPS, KEY_INDICES, SHIFT
from fewstep.nodes.core.video_sampling import sample_flow_euler, shifted_sigmas

FORMAT = "fewstep-accvideo-synvid/1"


@dataclass(frozen=True)
class SynVidSpec:
    """What a trajectory dataset is made of (all of it in ``manifest.json``).

    Args:
        count: trajectories.  shard_size: trajectories per file (the unit of resume).
        seed: noise and prompt draws of shard j come from (seed, j).
        frames: clip length in latent frames.  cfg: the teacher's guidance scale (1 = none).
        shift / steps: the teacher's schedule (shift 7, 50 steps).  indices: the kept points of its grid.
        teacher: the teacher's file name.
    """

    count: int
    shard_size: int = 64
    seed: int = 0
    frames: int = 8
    cfg: float = 4.0
    shift: float = SHIFT
    steps: int = BASE_STEPS
    indices: tuple[int, ...] = KEY_INDICES
    teacher: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.count < 1 or self.shard_size < 1:
            raise ValueError(f"SynVid count and shard size must be >= 1, got {self.count} and {self.shard_size}")
        idx = list(self.indices)
        if idx[0] != 0 or idx[-1] != self.steps or idx != sorted(set(idx)):
            raise ValueError(f"key indices must increase from 0 to steps={self.steps}, got {idx}")

    @property
    def shards(self) -> int:
        return -(-self.count // self.shard_size)

    def shard_len(self, j: int) -> int:
        return min(self.shard_size, self.count - j * self.shard_size)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["indices"] = list(self.indices)
        return out


def shard_generator(seed: int, shard: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(shard)) % (2**63 - 1))


def shard_inputs(spec: SynVidSpec, j: int, n_prompts: int, latent_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """(noise ``[n, T, C, h, w]``, prompt_index ``[n]``) of shard j: a pure function of (seed, j)."""
    gen = shard_generator(spec.seed, j)
    n = spec.shard_len(j)
    index = torch.randint(0, n_prompts, (n,), generator=gen)
    return torch.randn(n, spec.frames, *latent_shape, generator=gen), index


@torch.no_grad()
def teacher_keypoints(denoiser: Callable[..., Tensor], noise: Tensor, cond: Any, *, steps: int = BASE_STEPS,
                      shift: float = SHIFT, indices: tuple[int, ...] = KEY_INDICES) -> Tensor:
    """The teacher's flow-Euler trajectory from ``noise`` ``[B, ...]`` at the kept indices: ``[B, len(indices), ...]``.

    ``x_{i+1} = x_i + (σ_{i+1} - σ_i) v(x_i, σ_i)`` on ``shifted_sigmas(steps, shift)`` (core ``sample_flow_euler``);
    point i is the state before step i, point ``steps`` the returned clip."""
    keep = set(indices)
    states: dict[int, Tensor] = {}

    def record(info: dict[str, Any]) -> None:
        if info["i"] in keep:
            states[info["i"]] = info["x"].detach().float().cpu()

    sigmas = shifted_sigmas(steps, shift).to(noise.device)
    final = sample_flow_euler(denoiser, noise, sigmas, cond=cond, callback=record)
    states[steps] = final.detach().float().cpu()
    return torch.stack([states[i] for i in indices], dim=1)


class SynVidStore:
    """The folder of a trajectory dataset: manifest, prompts and shards (module docstring)."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)

    def shard_path(self, j: int) -> Path:
        return self.folder / f"shard_{j:05d}.safetensors"

    def manifest(self) -> dict[str, Any] | None:
        path = self.folder / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def prompts(self) -> list[str]:
        return json.loads((self.folder / "prompts.json").read_text())

    def begin(self, spec: SynVidSpec, prompts: list[str]) -> None:
        """Write manifest and prompts, or check that an existing folder was made with the same ones."""
        want = {"format": FORMAT, **spec.to_json()}
        have = self.manifest()
        if have is not None:
            if have != want or self.prompts() != prompts:
                raise ValueError(f"{self.folder} holds a SynVid dataset made with other settings ({have}); "
                                 "choose another folder or delete it")
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "prompts.json").write_text(json.dumps(prompts))
        (self.folder / "manifest.json").write_text(json.dumps(want, indent=1))

    def write_shard(self, j: int, points: Tensor, prompt_index: Tensor) -> None:
        tmp = self.shard_path(j).with_suffix(".tmp")
        save_file({"points": points.float().contiguous(), "prompt_index": prompt_index.long().contiguous()}, str(tmp))
        os.replace(tmp, self.shard_path(j))

    def load(self) -> dict[str, Tensor]:
        """The shards written so far, concatenated: points ``[N, m + 1, T, C, h, w]``, prompt_index ``[N]``."""
        spec = self.manifest()
        if spec is None:
            raise ValueError(f"{self.folder} is not a SynVid dataset (no manifest.json)")
        n_shards = -(-spec["count"] // spec["shard_size"])
        parts = [load_file(str(self.shard_path(j))) for j in range(n_shards) if self.shard_path(j).is_file()]
        if not parts:
            raise ValueError(f"{self.folder}: no shards written yet (build it with the SynVid node)")
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def build_synvid(store: SynVidStore, spec: SynVidSpec, prompts: list[str], model: Any, *, batch_size: int = 32,
                 progress: Callable[[int, int], None] | None = None, max_seconds: float | None = None) -> SynVidStore:
    """Fill ``store`` with ``spec.count`` teacher trajectories of ``model`` (a zoo ``VideoModel``), skipping
    shards already on disk (resume). ``max_seconds``: stop after the shard that passes this much time."""
    from fewstep.nodes.core.threads import tiny_cpu_work
    from fewstep.nodes.zoo.video.model import VideoCond

    if not prompts:
        raise ValueError("SynVid needs at least one prompt")
    store.begin(spec, prompts)
    dcfg = model.dit.config
    if not 1 <= spec.frames <= dcfg.max_frames:
        raise ValueError(f"frames must be in 1..{dcfg.max_frames} for this teacher, got {spec.frames}")
    ctx, mask = model.encode_text(prompts)                                      # [P, L, 384], [P, L]
    unc, umask = model.encode_text([""])
    den, dev, start = model.denoiser(), model.device, time.monotonic()
    shape = (dcfg.latent_channels, dcfg.latent_size, dcfg.latent_size)
    for j in range(spec.shards):
        if store.shard_path(j).is_file():
            continue
        if max_seconds is not None and time.monotonic() - start > max_seconds:
            break
        noise, index = shard_inputs(spec, j, len(prompts), shape)
        parts = []
        for a in range(0, len(noise), batch_size):
            idx = index[a:a + batch_size]
            b = len(idx)
            cond = VideoCond(ctx[idx].to(dev), mask[idx].to(dev), unc.expand(b, -1, -1).to(dev),
                             umask.expand(b, -1).to(dev), spec.cfg)
            with tiny_cpu_work(dev, 0):
                parts.append(teacher_keypoints(den, noise[a:a + batch_size].to(dev), cond, steps=spec.steps,
                                               shift=spec.shift, indices=spec.indices))
        store.write_shard(j, torch.cat(parts), index)
        if progress is not None:
            progress(j + 1, spec.shards)
    return store
