"""Students of the built-in teacher: one command trains LCM, MLCM (stage 1 + 2) and SLAM students.

    python -m fewstep.nodes.mlcm.students --out DIR [--minilm .carry/minilm] [--seconds 30]    # on a GPU

Each student is a LoRA (peft, rank 16) on the teacher UNet, shipped as ``<name>.safetensors`` holding the
adapter tensors (fp16) plus "override" tensors (SLAM: the time-embedding bias with γ = 1 folded in), and a
``<name>.json`` recipe. :func:`load_student` rebuilds a plain UNet of the teacher's architecture from it.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fewstep.nodes.core.trainer import merged_state_dict
from fewstep.nodes.mlcm.train import DistillConfig, PromptPool, build_student, distill, preset
from fewstep.nodes.mlcm.vp import UNetAdapter, VPNet, VPSchedule

log = logging.getLogger("fewstep.mlcm.students")

# TLCM's LoRA targets (methods.md §1), as they are named in diffusers' UNet2DConditionModel.
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                "conv1", "conv2", "conv_shortcut", "time_emb_proj")
LORA_RANK = 16
OVERRIDE_PREFIX = "override."


@dataclass(frozen=True)
class Recipe:
    """One student: the preset, its changes, the student it starts from, its sampler schedule."""

    preset: str
    changes: tuple[tuple[str, Any], ...]
    init: str | None
    timesteps: str          # "milestones" (MLCM subsets) or "lcm" (the 50-step skip grid)
    time_share: float = 1.0  # fraction of the per-student time cap (--seconds) this recipe gets

    def config(self, **more: Any) -> DistillConfig:
        return preset(self.preset, **(dict(self.changes) | more))


# Scaled to the 7.6 M-parameter teacher and one H200 shared by the stage-1 runs (concurrent processes, see
# gpu_run): batch 512 (launch-bound tiny UNet: 0.89 GFLOP per sample and forward, measured with torch's
# FlopCounterMode), state_step 250 (<= 4 guided teacher steps to reach a training state instead of TLCM's
# M - s <= 8: half the teacher cost), LoRA lr 3e-4 (TLCM: 1e-4 on SDXL with r = 64), stage 2 at lr/10 as in
# TLCM (1e-4 -> 1e-5). Steps are capped by wall time (--seconds), not by ``steps``.
_COMMON = (("batch_size", 512), ("state_step", 250), ("lora_rank", LORA_RANK), ("lr", 3e-4), ("steps", 3000))
RECIPES: dict[str, Recipe] = {
    "lcm":         Recipe("lcm", _COMMON, None, "lcm"),
    "mlcm_stage1": Recipe("mlcm", _COMMON, None, "milestones"),
    "mlcm":        Recipe("mlcm_stage2", (("batch_size", 512), ("lora_rank", 0), ("lr", 3e-5), ("steps", 600)),
                          "mlcm_stage1", "milestones", time_share=0.3),
    "slam":        Recipe("slam", _COMMON + (("state_source", "teacher"),), None, "lcm"),
    # ours: a quarter of the batch at exactly γ = 1, the inference condition (see SLAMLoss.gamma_one)
    "slam_g1":     Recipe("slam", _COMMON + (("state_source", "teacher"), ("gamma_one", 0.25)), None, "lcm"),
}
STAGE1 = ("lcm", "mlcm_stage1", "slam")      # the students the default command trains ("slam_g1": an ablation)


def teacher_unet(device: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The built-in teacher's UNet (zoo weights, fp16 on disk)."""
    from fewstep.nodes.zoo.builtin import BUILTIN_CHECKPOINT, _load
    from fewstep.nodes.zoo.models import build_unet

    state, cfg = _load(BUILTIN_CHECKPOINT, None)
    unet = build_unet(cfg["unet"])
    unet.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return unet.to(device=device, dtype=dtype).eval().requires_grad_(False)


def teacher_schedule() -> VPSchedule:
    from fewstep.nodes.zoo.models import SCHEDULE, alphas_cumprod

    return VPSchedule(alphas_cumprod(SCHEDULE))


def procedural_pool(encoder: Any, n: int, seed: int, device: str, latent_shape=(4, 16, 16)) -> PromptPool:
    """Captions of ``n`` procedural training scenes, encoded once (the data-free prompt source)."""
    from fewstep.nodes.zoo import data

    prompts = [data.caption(scene) for scene in data.make_split("train", n, seed=seed)]
    states = torch.cat([encoder.encode_tokens(prompts[i:i + 256])[0] for i in range(0, n, 256)])
    uncond = encoder.encode_tokens([""])[0]
    return PromptPool(cond=states.to(device), uncond=uncond.to(device), prompts=prompts, latent_shape=latent_shape)


def distillation_setup(minilm: str | None, device: str, prompts: int) -> tuple[VPNet, PromptPool]:
    """What every student-training CLI starts from: the built-in teacher as an eps-VPNet (bf16 on GPUs)
    and a pool of ``prompts`` procedural training captions encoded by the MiniLM text encoder."""
    from fewstep.nodes.zoo.text_encoder import MiniLMTextEncoder

    enc = MiniLMTextEncoder.load(minilm, device)
    unet = teacher_unet(device, torch.bfloat16 if device != "cpu" else torch.float32)
    teacher = VPNet(UNetAdapter(unet), teacher_schedule(), "eps")
    return teacher, procedural_pool(enc, prompts, seed=0, device=device)


def student_net(teacher: nn.Module, cfg: DistillConfig) -> tuple[nn.Module, tuple[str, ...]]:
    """The network to train (SLAM: with a γ input) wrapped for the VPNet convention, + extra trainables."""
    if cfg.method == "slam":
        from fewstep.nodes.slam.student import add_gamma_input

        return UNetAdapter(add_gamma_input(copy.deepcopy(teacher).float(), cfg.gamma_dim)), ("cond_proj",)
    return UNetAdapter(copy.deepcopy(teacher).float()), ()       # fp32 master weights, bf16 autocast


def export(net: nn.Module, cfg: DistillConfig) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(LoRA tensors, override tensors) of a trained student; SLAM's γ = 1 is folded into an override."""
    unet = net.unet
    lora = {k: v.detach().half().cpu() for k, v in unet.state_dict().items() if "lora_" in k}
    if cfg.method != "slam":
        return lora, {}
    from diffusers import UNet2DConditionModel

    from fewstep.nodes.slam.student import fold_gamma

    merged = merged_state_dict(unet)
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    with_gamma = UNet2DConditionModel(**config)
    with_gamma.load_state_dict(merged)
    plain = fold_gamma(with_gamma)
    return lora, {"time_embedding.linear_1.bias": plain.time_embedding.linear_1.bias.detach().float().cpu()}


def save_student(path: Path, lora: dict, overrides: dict, meta: dict) -> None:
    tensors = dict(lora) | {OVERRIDE_PREFIX + k: v for k, v in overrides.items()}
    save_file(tensors, str(path), metadata={"fewstep": json.dumps(meta)})


def merge_lora(base: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A plain state dict: ``base`` + ΔW = B·A for each adapter pair (scale α/r = 1, as ``add_lora`` and
    ``nodes.mlcm.rank`` make them) + the ``override.*`` tensors. Pure tensor math (no peft), float32.

    A: [r, in, *k] (conv: k = kh, kw; linear: none), B: [out, r, 1, 1] or [out, r]; base key = the adapter key
    with ``.lora_A.default`` removed.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)        # ~250 tiny ops: measured 0.06 s on 1 thread vs 2.8 s on 2 (first call, busy VM)
    try:
        return _merge(base, tensors)
    finally:
        torch.set_num_threads(before)


def _merge(base: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = {k: v.float() for k, v in base.items()}
    for key_a in (k for k in tensors if ".lora_A." in k):
        key_b, key_w = key_a.replace(".lora_A.", ".lora_B."), key_a.replace(".lora_A.default", "")
        if key_b not in tensors or key_w not in state:
            raise ValueError(f"student LoRA key {key_a!r} does not fit the teacher (no {key_b!r} or {key_w!r})")
        a, b = tensors[key_a].float(), tensors[key_b].float()
        delta = b.reshape(b.shape[0], -1) @ a.reshape(a.shape[0], -1)
        state[key_w] = state[key_w] + delta.reshape(state[key_w].shape)
    for key, value in tensors.items():
        if key.startswith(OVERRIDE_PREFIX):
            if key[len(OVERRIDE_PREFIX):] not in state:
                raise ValueError(f"student override {key!r} names no teacher tensor")
            state[key[len(OVERRIDE_PREFIX):]] = value.float()
    return state


def load_student(path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 lean: bool = False) -> nn.Module:
    """A plain UNet (teacher architecture) = teacher + merged LoRA + overrides, from a shipped student file.

    ``lean``: the pure-torch ``nodes.zoo.lean.LeanUNet`` (no diffusers import: the CPU runtime of the
    built-in models) instead of diffusers' UNet2DConditionModel; same weights either way.
    """
    from fewstep.nodes.zoo.builtin import BUILTIN_CHECKPOINT, _load

    base, cfg = _load(BUILTIN_CHECKPOINT, None)
    state = merge_lora(base, load_file(str(path)))
    if lean:
        from fewstep.nodes.zoo.lean import LeanUNet, materialise

        return materialise(lambda: LeanUNet(cfg["unet"]), state, device, dtype)
    from fewstep.nodes.zoo.models import build_unet

    unet = build_unet(cfg["unet"])
    unet.load_state_dict(state, strict=True)
    return nn.Module.to(unet, device=device, dtype=dtype).eval().requires_grad_(False)


def train_one(name: str, teacher: VPNet, pool: PromptPool, nets: dict[str, nn.Module], device: str,
              seconds: float | None, **changes: Any) -> tuple[nn.Module, dict]:
    """Train student ``name`` (from ``nets[recipe.init]`` when given) for at most ``seconds``; (net, stats)."""
    recipe = RECIPES[name]
    cfg = recipe.config(**changes)
    if recipe.init is None:
        net, extra = student_net(teacher.net.unet, cfg)
    else:
        net, extra = copy.deepcopy(nets[recipe.init]), ()
    student = build_student(teacher, cfg, net=net, lora_targets=LORA_TARGETS, extra_trainable=extra)
    t0 = time.perf_counter()
    state = distill(teacher, student, pool, cfg, device=device, autocast=torch.bfloat16 if device != "cpu" else None,
                    max_seconds=seconds)
    stats = {"steps": state.step, "seconds": time.perf_counter() - t0, "loss_first": state.losses[0],
             "loss_last_100": sum(state.losses[-100:]) / len(state.losses[-100:]),
             "losses_every_10": state.losses[::10], "config": asdict(cfg), "init": recipe.init,
             "timesteps": recipe.timesteps}
    log.info("%s: %d steps in %.1fs, loss %.4f -> %.4f", name, state.step, stats["seconds"], stats["loss_first"],
             stats["loss_last_100"])
    return student.view.net, stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fewstep.nodes.mlcm.students", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--only", nargs="*", default=[*STAGE1, "mlcm"], choices=list(RECIPES))
    p.add_argument("--minilm", default=None, help="pruned MiniLM folder (default: the PyPI package)")
    p.add_argument("--seconds", type=float, default=None, help="wall-time cap per student (steps stop early)")
    p.add_argument("--stage2-seconds", type=float, default=None,
                   help="wall-time cap of students started from another (default: --seconds x its time share)")
    p.add_argument("--prompts", type=int, default=4096)
    p.add_argument("--steps", type=int, default=None, help="override every recipe's step count (smoke runs)")
    p.add_argument("--batch", type=int, default=None, help="override every recipe's batch size (smoke runs)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    teacher, pool = distillation_setup(args.minilm, args.device, args.prompts)
    args.out.mkdir(parents=True, exist_ok=True)
    nets: dict[str, nn.Module] = {}
    report = {}
    for name in args.only:
        changes = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch)) if v is not None}
        seconds = None if args.seconds is None else args.seconds * RECIPES[name].time_share
        if RECIPES[name].init and args.stage2_seconds:
            seconds = args.stage2_seconds
        nets[name], report[name] = train_one(name, teacher, pool, nets, args.device, seconds, **changes)
        lora, overrides = export(nets[name], RECIPES[name].config())
        meta = {"name": name, "lora_rank": LORA_RANK, "lora_targets": list(LORA_TARGETS),
                "base": "fewstep-tiny-teacher.safetensors", "timesteps": RECIPES[name].timesteps,
                "method": RECIPES[name].preset}
        save_student(args.out / f"fewstep-{name.replace('_', '-')}-student.safetensors", lora, overrides, meta)
        suffix = "" if set(args.only) == {*STAGE1, "mlcm"} else "-" + "-".join(args.only)
        (args.out / f"students-report{suffix}.json").write_text(json.dumps(report, indent=1))  # after each one
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def weights_dir() -> Path:
    """Where the shipped students live (package data)."""
    return Path(__file__).resolve().parent / "weights"


def shipped_students() -> list[str]:
    """File names of the shipped students."""
    return sorted(p.name for p in weights_dir().glob("fewstep-*-student.safetensors"))


def load_student_model(name: str) -> tuple[Any, Any, Any]:
    """(MODEL, CLIP, VAE): a shipped student on the built-in teacher's device, with the teacher's CLIP and VAE."""
    from fewstep.app.api import cached_model
    from fewstep.nodes.core.loaders import list_builtin, load_checkpoint
    from fewstep.nodes.mlcm.adapter import student_model, unet_of

    if name not in shipped_students():
        raise ValueError(f"unknown student {name!r}; shipped: {shipped_students()}")
    teacher, clip, vae = load_checkpoint(list_builtin()[0])
    p = next(unet_of(teacher).parameters())
    path = weights_dir() / name
    lean = type(unet_of(teacher)).__name__ == "LeanUNet"          # follow the teacher's runtime
    unet = cached_model(path, p.dtype, p.device, lambda: load_student(path, str(p.device), p.dtype, lean=lean))
    return student_model(teacher, unet, name), clip, vae
