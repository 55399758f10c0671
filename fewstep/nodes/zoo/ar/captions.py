"""Caption sets of the AR models and their MiniLM sentence embeddings, precomputed for machines without MiniLM.

The AR and MAR models are conditioned on the all-MiniLM-L6-v2 sentence embedding ``[384]`` (mean of the
token states over real tokens, unit norm: ``MiniLMTextEncoder.encode``'s pooled output). GPU machines
have no MiniLM, so the embeddings of the training and held-out caption sets are computed here and stored
in one small file (``write_cache``), int8 per row with an fp16 scale: 386 bytes a caption, so 8,192
training + 512 held-out captions take 3.4 MB. The int8 rounding error is at most half a step of
``max|x| / 127`` per entry (measured below 0.4% of the row norm); the models see the exact embeddings
at run time.

The scenes themselves are not stored: ``data.make_split(split, n, seed)`` regenerates them exactly,
and ``read_cache`` checks a SHA-1 of the captions so a changed scene generator fails loudly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import data

CACHE_FILE = "ar_captions.safetensors"
CACHE_META = "ar_captions.json"


@dataclass(frozen=True)
class CaptionSet:
    """Scenes of one split, their captions and their sentence embeddings ``[N, 384]`` (float32)."""

    split: str
    seed: int
    scenes: list[data.Scene]
    captions: list[str]
    embeddings: torch.Tensor


def captions_digest(captions: list[str]) -> str:
    return hashlib.sha1("\n".join(captions).encode()).hexdigest()


@torch.no_grad()
def sentence_embeddings(texts: list[str], encoder: object | None = None, batch: int = 128) -> torch.Tensor:
    """MiniLM sentence embeddings ``[N, 384]`` float32 (the lean pure-torch MiniLM unless ``encoder`` is given)."""
    if encoder is None:
        from ..lean import load_minilm

        encoder = load_minilm()
    chunks = [_pooled(encoder, texts[i:i + batch]) for i in range(0, len(texts), batch)]
    return torch.cat(chunks) if chunks else torch.zeros(0, 384)


def _pooled(encoder: object, texts: list[str]) -> torch.Tensor:
    """``MiniLMTextEncoder.encode(texts)[1]`` computed on the real tokens only: the 77-token padding is cut to
    the longest caption (padded keys are masked anyway), about 3x less work for these short captions."""
    ids, mask = encoder.tokenize(texts)
    t = int(mask.sum(1).max())
    ids, mask = ids[:, :t].to(encoder.device), mask[:, :t].to(encoder.device)
    if encoder.id_map is not None:
        ids = encoder.id_map[ids]
    states = encoder.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()   # [B, t, 384]
    m = mask.unsqueeze(-1).float()
    return torch.nn.functional.normalize((states * m).sum(1) / m.sum(1).clamp_min(1.0), dim=-1)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row: ``x ~ q * scale[:, None]``; returns (q int8 [N, D], scale fp16 [N])."""
    scale = (x.abs().amax(-1) / 127).clamp_min(1e-8).half()
    q = (x / scale.float()[:, None]).round().clamp(-127, 127).to(torch.int8)
    return q, scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale.float()[:, None]


def write_cache(folder: str | Path, n_train: int = 8192, n_heldout: int = 512, seed: int = 0,
                encoder: object | None = None) -> Path:
    """Embed ``make_split("train", n_train, seed)`` and ``make_split("heldout", n_heldout, seed)`` captions
    into ``folder/ar_captions.safetensors`` (+ a JSON with counts, seed and caption digests)."""
    from safetensors.torch import save_file

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, dict[str, object]] = {}
    for split, n in (("train", n_train), ("heldout", n_heldout)):
        caps = [data.caption(s) for s in data.make_split(split, n, seed=seed)]
        q, scale = quantize_rows(sentence_embeddings(caps, encoder))
        tensors[f"{split}.q"], tensors[f"{split}.scale"] = q, scale
        meta[split] = {"n": n, "seed": seed, "sha1": captions_digest(caps)}
    save_file(tensors, out / CACHE_FILE)
    (out / CACHE_META).write_text(json.dumps(meta, indent=1))
    return out / CACHE_FILE


def read_cache(folder: str | Path, split: str, n: int | None = None) -> CaptionSet:
    """The cached ``split`` (first ``n`` rows, default all), scenes regenerated and checked against the digest."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / CACHE_FILE).is_file():
        raise FileNotFoundError(f"AR caption cache: no {CACHE_FILE} in {folder} (write it with "
                                f"`python -m fewstep.nodes.zoo.ar.captions {folder}`)")
    meta = json.loads((folder / CACHE_META).read_text())[split]
    scenes = data.make_split(split, int(meta["n"]), seed=int(meta["seed"]))
    captions = [data.caption(s) for s in scenes]
    if captions_digest(captions) != meta["sha1"]:
        raise ValueError(f"AR caption cache in {folder}: the {split} captions regenerated here differ from the "
                         "cached ones (scene generator changed?); rewrite the cache")
    state = load_file(str(folder / CACHE_FILE))
    emb = dequantize_rows(state[f"{split}.q"], state[f"{split}.scale"])
    k = len(scenes) if n is None else min(n, len(scenes))
    return CaptionSet(split, int(meta["seed"]), scenes[:k], captions[:k], emb[:k])


def embed_split(split: str, n: int, seed: int = 0, encoder: object | None = None) -> CaptionSet:
    """A caption set embedded now (needs MiniLM; exact float32 embeddings)."""
    scenes = data.make_split(split, n, seed=seed)
    captions = [data.caption(s) for s in scenes]
    return CaptionSet(split, seed, scenes, captions, sentence_embeddings(captions, encoder))


if __name__ == "__main__":  # pragma: no cover
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m fewstep.nodes.zoo.ar.captions OUT_DIR")
    write_cache(sys.argv[1])
