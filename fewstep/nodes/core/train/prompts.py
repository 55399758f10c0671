"""Training prompts: where they come from, and the encoded pool every trainer draws its batches from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from fewstep.nodes.core.train.adapter import check_conditioning, encode_prompts, unet_of
from fewstep.nodes.core.train.batches import DistillBatch
from fewstep.nodes.core.train.trainer_schema import DEFAULT_PROMPTS  # noqa: F401 (re-exported)
from fewstep.nodes.core.train.vp import Cond

if TYPE_CHECKING:
    from fewstep.nodes.core.denoiser import Denoiser
    from fewstep.nodes.core.text import TextEncoder
    from fewstep.nodes.core.vae import VAEWrapper

PROMPT_SOURCES = ("list", "procedural", "dataset")


class Dataset(Protocol):
    """The DATASET link value as the trainers read it: indexable items with 'prompt' and 'latent' or 'image'."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> dict[str, object]: ...


class TokenEncoder(Protocol):
    """The built-in MiniLM text encoder: ``encode_tokens(prompts) -> (states [N, T, D], mask)``."""

    def encode_tokens(self, prompts: list[str]) -> tuple[Tensor, Tensor]: ...


@dataclass
class PromptPool:
    """Encoded prompts to draw batches from (encode once, sample per step from the step generator).

    Args:
        cond: [N, ...] conditioning per prompt (token states [N, T, D] or a ``Conditioning``; indexed by
            row like a tensor).  uncond: [1, ...] the empty prompt's.
        prompts: the N prompt strings.  latents: [N, C, h, w] clean latents for ``state_source="real"``.
        latent_shape: the per-sample latent shape (C, h, w).
    """

    cond: Cond
    uncond: Cond
    prompts: list[str]
    latent_shape: tuple[int, ...]
    latents: Tensor | None = None

    def batch(self, size: int, gen: torch.Generator) -> DistillBatch:
        """A batch of ``size`` prompts drawn with replacement from ``gen``."""
        idx = torch.randint(0, self.cond.shape[0], (size,), generator=gen, device=gen.device).to(self.cond.device)
        latents = None if self.latents is None else self.latents[idx]
        return DistillBatch(cond=self.cond[idx], uncond=self.uncond, shape=(size, *self.latent_shape),
                            generator=gen, latents=latents, prompts=[self.prompts[i] for i in idx.tolist()])


def prompt_list(source: str, text: str, count: int, seed: int, dataset: Dataset | None = None) -> list[str]:
    """The training prompts: one per non-empty line, ``count`` procedural captions, or the dataset's."""
    if source == "list":
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    elif source == "procedural":
        prompts = procedural_prompts(count, seed)
    elif source == "dataset":
        if dataset is None:
            raise ValueError("prompt_source 'dataset' needs the dataset input connected")
        prompts = [str(dataset[i]["prompt"]) for i in range(len(dataset))]
    else:
        raise ValueError(f"prompt_source must be one of {PROMPT_SOURCES}, got {source!r}")
    if not prompts:
        raise ValueError(f"prompt_source {source!r} gave no prompts (prompts input is empty?)")
    return prompts


def procedural_prompts(count: int, seed: int) -> list[str]:
    """Captions of ``count`` procedural training scenes of the zoo's scene generator."""
    from fewstep.nodes.zoo import data

    return [data.caption(s) for s in data.make_split("train", count, seed=seed)]


def dataset_latents(dataset: Dataset, vae: VAEWrapper | None) -> Tensor:
    """Clean latents of a DATASET ('latent' [C,h,w] or 'image' [H,W,C] encoded with the VAE)."""
    items = [dataset[i] for i in range(len(dataset))]
    if all("latent" in it for it in items):
        return torch.stack([torch.as_tensor(it["latent"]).float() for it in items])
    if vae is None:
        raise ValueError("the dataset holds images: connect a VAE to encode them into latents")
    return torch.cat([vae.encode(torch.as_tensor(it["image"]).float()[None]) for it in items]).float()


def make_pool(model: Denoiser, clip: TextEncoder, prompts: list[str], latents: Tensor | None, device: str
              ) -> PromptPool:
    """The pool of a MODEL / CLIP pair: prompts (and the empty prompt, CFG's unconditional input) encoded once;
    latent shape from the UNet (or the latents). An SDXL CLIP gives a :class:`Conditioning` whose time ids
    are those of that latent size (``encode_prompts``)."""
    unet = unet_of(model)
    shape = (unet.config["in_channels"], unet.config["sample_size"], unet.config["sample_size"])
    if latents is not None:
        shape = tuple(latents.shape[1:])
    hw = (int(shape[-2]), int(shape[-1]))
    cond = encode_prompts(clip, prompts, hw)
    check_conditioning(unet, cond)
    return PromptPool(cond=cond.to(device), uncond=encode_prompts(clip, [""], hw).to(device),
                      prompts=prompts, latent_shape=shape, latents=None if latents is None else latents.to(device))


def procedural_pool(encoder: TokenEncoder, n: int, seed: int, device: str,
                    latent_shape: tuple[int, ...] = (4, 16, 16)) -> PromptPool:
    """Captions of ``n`` procedural training scenes, encoded once by the MiniLM (the data-free prompt source)."""
    prompts = procedural_prompts(n, seed)
    states = torch.cat([encoder.encode_tokens(prompts[i:i + 256])[0] for i in range(0, n, 256)])
    uncond = encoder.encode_tokens([""])[0]
    return PromptPool(cond=states.to(device), uncond=uncond.to(device), prompts=prompts, latent_shape=latent_shape)
