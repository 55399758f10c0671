"""What the AccVideo nodes do, as plain functions over the zoo's ``VideoModel``: build SynVid in the models
folder, train a student (resumable), sample it at the key points, save and load shipped students."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fewstep.nodes.accvideo.keypoints import key_timesteps
from fewstep.nodes.accvideo.synvid import SynVidSpec, SynVidStore, build_synvid
from fewstep.nodes.accvideo.train import AccVideoConfig, PointSource, train_accvideo
from fewstep.nodes.core.train.loop import Checkpointer

WEIGHTS = Path(__file__).resolve().parent / "weights"
STUDENT_FILE = "accvideo-tiny-video.safetensors"


def training_captions(source: str, text: str, count: int, seed: int) -> list[str]:
    """``procedural``: ``count`` captions of the clip grammar's training split (seeded order, cycled);
    ``list``: one prompt per non-empty line."""
    from fewstep.nodes.zoo.video import clips

    if source == "list":
        out = [line.strip() for line in text.splitlines() if line.strip()]
    elif source == "procedural":
        pool = clips.split_captions("train")
        rng = random.Random(f"accvideo:{seed}")
        out = []
        while len(out) < count:
            out += rng.sample(pool, len(pool))
        out = sorted(set(out[:count]))
    else:
        raise ValueError(f"prompt_source must be 'procedural' or 'list', got {source!r}")
    if not out:
        raise ValueError("no training prompts (the prompts input is empty?)")
    return out


def make_synvid(model: Any, prompts: list[str], *, count: int, cfg: float, frames: int, seed: int, name: str,
                folder: Path | None = None, progress: Callable[[int, int], None] | None = None) -> SynVidStore:
    """Build (or resume) SynVid in ``<models>/checkpoints/accvideo_synvid/<name>-<hash>`` (or ``folder``)."""
    spec = SynVidSpec(count=count, shard_size=min(count, 64), seed=seed, frames=frames, cfg=cfg, teacher=model.name)
    if folder is None:
        from fewstep.nodes.core.train.distill_graph import run_folder

        folder = run_folder(name, [json.dumps(spec.to_json(), sort_keys=True), *prompts], kind="accvideo_synvid")
    return build_synvid(SynVidStore(folder), spec, prompts, model, progress=progress)


@torch.no_grad()
def real_clip_latents(model: Any, prompts: list[str], count: int, frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` real renders of the prompts (clip grammar, random starts) as VAE latents ``[N, T, C, h, w]`` and
    their prompt ids: the clean data of the forward-diffused control."""
    from fewstep.nodes.zoo.video import clips
    from fewstep.nodes.zoo.video.evaluate import render_specs

    rng = random.Random(f"accvideo-real:{seed}")
    ids = torch.tensor([rng.randrange(len(prompts)) for _ in range(count)])
    specs = [clips.spec_for_caption(prompts[int(i)], frames, rng) for i in ids]
    lat = torch.cat([model.encode_frames(render_specs(specs[a:a + 64])) for a in range(0, count, 64)])
    return lat.cpu(), ids


def point_source(model: Any, store: SynVidStore, data_points: str, seed: int,
                 real_clips: int = 512) -> tuple[PointSource, list[str]]:
    """The training points of an arm: SynVid's key points, or forward-diffused real clips of the same prompts
    (``real_clips`` renders at most, each noised afresh at every draw; rendering costs ~0.3 s a clip on a CPU)."""
    data, prompts = store.load(), store.prompts()
    manifest = store.manifest()
    keys = key_timesteps(tuple(manifest["indices"]), manifest["steps"], manifest["shift"])
    if data_points == "trajectory":
        return PointSource(keys, data["prompt_index"], points=data["points"]), prompts
    count = min(len(data["prompt_index"]), real_clips)
    clean, ids = real_clip_latents(model, prompts, count, manifest["frames"], seed)
    return PointSource(keys, ids, clean=clean), prompts


def student_model(model: Any, dit: torch.nn.Module, name: str, info: dict[str, Any] | None = None) -> Any:
    """The teacher's bundle with the student DiT (same VAE and text encoder): a VIDEO_MODEL."""
    p = next(model.dit.parameters())
    return dataclasses.replace(model, dit=dit.to(p.device, p.dtype).eval().requires_grad_(False), name=name,
                               info={**model.info, "accvideo": info or {}})


def distill(model: Any, store: SynVidStore, cfg: AccVideoConfig, *, run_name: str, checkpoint_every: int,
            max_seconds: float | None = None, log_to: list[dict[str, float]] | None = None,
            folder: Path | None = None) -> tuple[Any, list[float]]:
    """Train (or resume) a student on ``store``; checkpoints in ``<models>/checkpoints/distill/<run>-<hash>``."""
    manifest = store.manifest()
    if manifest is None:
        raise ValueError(f"{store.folder} holds no SynVid dataset")
    if manifest["teacher"] != model.name:
        raise ValueError(f"this SynVid was made by {manifest['teacher']!r}, not by {model.name!r}")
    source, prompts = point_source(model, store, cfg.data_points, cfg.seed)
    ctx, mask = model.encode_text(prompts)
    if folder is None:
        from fewstep.nodes.core.train.distill_graph import run_folder

        folder = run_folder(run_name, ["accvideo", cfg.fingerprint(), store.folder.name])
    device = str(model.device)
    student, state = train_accvideo(model.dit, source, ctx, mask, cfg, checkpointer=Checkpointer(folder, every=checkpoint_every),
                                    max_seconds=max_seconds, meta={"synvid": store.folder.name}, log_to=log_to,
                                    device=device)
    arm = f"{cfg.adversarial}, {cfg.data_points}"
    info = {"config": dataclasses.asdict(cfg), "updates": state.step, "synvid": store.folder.name}
    return student_model(model, student, f"{run_name} (AccVideo {arm}, {state.step} updates)", info), state.losses


@torch.no_grad()
def sample(model: Any, prompts: list[str], *, frames: int = 8, seed: int = 0, cfg: float = 1.0,
           callback: Callable[[dict[str, Any]], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """5-step flow Euler between AccVideo's key points (core ``sample_flow_euler`` on ``key_timesteps()``):
    (frames ``[B, T, 64, 64, 3]``, latents). ``cfg`` 1 for a student (guidance is distilled in)."""
    from fewstep.nodes.zoo.video.model import generate

    return generate(model, prompts, frames=frames, cfg=cfg, seed=seed, sigmas=key_timesteps(), callback=callback)


def save_student(model: Any, path: Path, card: dict[str, Any]) -> Path:
    """fp16 safetensors of the student DiT + a JSON the zoo's ``load_video_model`` reads (dit config, fps)."""
    from safetensors.torch import save_file

    from fewstep.nodes.zoo.video.dit import config_dict

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().half().contiguous() for k, v in model.dit.state_dict().items()}, str(path))
    info = {"dit": config_dict(model.dit.config), "fps": model.fps, "prediction": "flow", "flow_multiplier": 1000.0,
            "kind": "accvideo", **card}
    path.with_suffix(".json").write_text(json.dumps(info, indent=1))
    return path


def shipped_students() -> list[str]:
    return sorted(p.name for p in WEIGHTS.glob("accvideo-*.safetensors") if p.with_suffix(".json").is_file())


def load_student(name: str, device: str | torch.device = "cpu", root: Path | None = None) -> Any:
    """A shipped student as a VIDEO_MODEL (the zoo's VAE and MiniLM)."""
    from fewstep.nodes.zoo.video.model import load_video_model

    return load_video_model(name, device=device, root=root or WEIGHTS)
