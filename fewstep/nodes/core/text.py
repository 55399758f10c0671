"""Text encoders (the CLIP link type): CLIP's BPE tokenizer and the encoder wrappers.

The tokenizer reads CLIP's byte-pair vocabulary (``bpe_simple_vocab_16e6.txt.gz``) from the installed
``open_clip`` package's folder without importing open_clip (whose import pulls in timm and takes seconds).
Algorithm: Radford et al. 2021 (CLIP), Sec. 2.4 — lower-cased byte-level BPE (Sennrich et al. 2016) with
an end-of-word marker ``</w>``; 49,408 ids with ``<|startoftext|>`` = 49406 and ``<|endoftext|>`` = 49407.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import regex

MAX_TOKENS = 77
BOS, EOS = 49406, 49407
# CLIP's pre-tokenisation pattern: specials, English contractions, letter runs, single digits, other runs.
_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE)


def bpe_vocab_path() -> Path:
    """CLIP's merges file, shipped inside the open_clip wheel."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("CLIP's BPE vocabulary comes from the 'open-clip-torch' package: pip install it")
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"CLIP BPE vocabulary missing: {path}")
    return path


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (Radford et al. 2019): printable Latin-1 bytes
    map to themselves, the other 68 to code points 256.. in order.

    The dict's order is CLIP's vocabulary order (the first 256 ids, and 256.. with ``</w>``): the 188 kept
    bytes first, then the other 68. Ordered by byte value instead, every single-character token got the
    wrong id ("a" -> 353 instead of OpenAI's 320), so a real checkpoint embedded "a", "1", "!" ... wrongly."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class ClipTokenizer:
    """CLIP BPE: text -> ids. ``__call__`` gives the padded [77] id list SD's encoders take."""

    def __init__(self, merges_path: Path | None = None, pad_id: int = EOS) -> None:
        lines = gzip.open(merges_path or bpe_vocab_path()).read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]   # 48,894 merges
        alphabet = list(_byte_alphabet().values())
        vocab = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.byte_map = _byte_alphabet()
        self.pad_id = pad_id

    @lru_cache(maxsize=4096)  # noqa: B019 - per-tokenizer memo of word -> BPE pieces
    def _bpe(self, word: str) -> tuple[str, ...]:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:], strict=False))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
        return tuple(parts)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without start/end tokens."""
        text = " ".join(html.unescape(html.unescape(text)).split()).strip().lower()
        ids: list[int] = []
        for word in _PATTERN.findall(text):
            mapped = "".join(self.byte_map[b] for b in word.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self._bpe(mapped))
        return ids

    def __call__(self, text: str) -> list[int]:
        """[BOS] + up to 75 ids + [EOS], padded with ``pad_id`` to 77 (longer prompts are truncated)."""
        ids = [BOS] + self.encode(text)[: MAX_TOKENS - 2] + [EOS]
        return ids + [self.pad_id] * (MAX_TOKENS - len(ids))


@dataclass
class TextEncoder:
    """The CLIP link value.

    Args:
        kind: ``sd1`` (CLIP-L, last hidden state), ``sdxl`` (CLIP-L + OpenCLIP-G penultimate states,
            concatenated; pooled from G) or ``builtin`` (MiniLM of the built-in teacher).
        encoders: the transformers CLIP text models (or the MiniLM wrapper).
        tokenizers: one ClipTokenizer per encoder (empty for builtin).
        patches: LoRA weight patches, applied while encoding (``nodes.core.loaders.lora``).
        layer: "clip skip" (CLIPSetLastLayer): -1 the last layer, -2 the penultimate ...; None = the
            architecture's default (SD1.x: last, layer-normed; SDXL: penultimate, raw).

    SD1.x / SDXL prompts follow ComfyUI's syntax: ``(word:1.2)`` weights, 77-token windows for long
    prompts, ``embedding:name`` (``nodes.core.prompt``).
    """

    kind: str
    encoders: list[Any]
    tokenizers: list[ClipTokenizer] = field(default_factory=list)
    patches: list[Any] = field(default_factory=list)
    layer: int | None = None

    def encode(self, text: str) -> list[list[Any]]:
        """CONDITIONING for one prompt: ``[[states [1, T, D], {"pooled_output": [1, D']}]]``."""
        import torch

        from fewstep.nodes.core.loaders.lora import applied

        with torch.no_grad(), applied(self.patches):
            if self.kind == "builtin":
                from fewstep.nodes.core.threads import tiny_cpu_work

                with tiny_cpu_work(self.encoders[0].device, 0):  # MiniLM on one prompt: tiny
                    states, pooled = self.encoders[0].encode([text])
                return [[states.float(), {"pooled_output": pooled.float()}]]
            if self.kind == "sd1":
                return self._encode_sd1(text)
            if self.kind == "sd2":                        # OpenCLIP-H, penultimate layer through the final norm
                states, pooled = self._weighted(0, text, -2, True, None)
                return [[states.float(), {"pooled_output": pooled.float()}]]
            if self.kind == "sdxl_refiner":               # OpenCLIP-G alone, penultimate layer, pooled from G
                states, pooled = self._weighted(0, text, -2, False, "clip_g")
                return [[states.float(), {"pooled_output": pooled.float()}]]
            return self._encode_sdxl(text)

    def _ids(self, index: int, text: str) -> Any:
        import torch

        device = next(self.encoders[index].parameters()).device
        return torch.tensor([self.tokenizers[index](text)], device=device)

    def _weighted(self, index: int, text: str, default: int | None, final_norm: bool, key: str | None) -> Any:
        """(states [1, 77 k, D], pooled [1, D']) of encoder ``index`` under ComfyUI's prompt syntax."""
        from fewstep.nodes.core import prompt

        model, tok = self.encoders[index], self.tokenizers[index]
        layer = default if self.layer is None else self.layer
        if layer is not None and abs(layer) > model.config.num_hidden_layers:
            layer = None                                  # deeper than the model: its final output
        dim = model.get_input_embeddings().weight.shape[1]
        wins = prompt.windows(text, tok.encode, BOS, EOS, tok.pad_id, prompt.embedding_lookup(dim, key))
        empty = [BOS, EOS] + [tok.pad_id] * (MAX_TOKENS - 2)
        return prompt.encode_windows(model, wins, prompt.LayerChoice(layer, final_norm), empty)

    def _encode_sd1(self, text: str) -> list[list[Any]]:
        states, pooled = self._weighted(0, text, None, True, None)
        return [[states.float(), {"pooled_output": pooled.float()}]]

    def encode_sdxl(self, text_g: str, text_l: str) -> list[list[Any]]:
        """SDXL CONDITIONING with separate prompts for OpenCLIP-G and CLIP-L (ComfyUI's CLIPTextEncodeSDXL):
        ``[[states [1, 77 k, 768 + 1280], {"pooled_output": pooled from G}]]``; when one prompt needs more
        77-token windows, the other encoder's states are padded with its empty-prompt window (as ComfyUI pads
        the shorter token list with empty tokens)."""
        import torch

        from fewstep.nodes.core.loaders.lora import applied

        if self.kind != "sdxl":
            raise ValueError(f"CLIPTextEncodeSDXL needs an SDXL CLIP (CLIP-L + OpenCLIP-G), got a {self.kind!r} CLIP")
        with torch.no_grad(), applied(self.patches):
            states_l, _ = self._weighted(0, text_l, -2, False, "clip_l")
            states_g, pooled = self._weighted(1, text_g, -2, False, "clip_g")
            windows = max(states_l.shape[1], states_g.shape[1])
            states_l = self._pad_windows(0, states_l, windows, "clip_l")
            states_g = self._pad_windows(1, states_g, windows, "clip_g")
        return [[torch.cat([states_l, states_g], dim=-1).float(), {"pooled_output": pooled.float()}]]

    def _pad_windows(self, index: int, states: Any, length: int, key: str) -> Any:
        """states [1, T, D] extended to [1, length, D] with the encoder's empty-prompt window [1, 77, D]."""
        import torch

        if states.shape[1] >= length:
            return states
        empty, _ = self._weighted(index, "", -2, False, key)
        repeats = (length - states.shape[1]) // empty.shape[1]
        return torch.cat([states, *([empty] * repeats)], dim=1)

    def _encode_sdxl(self, text: str) -> list[list[Any]]:
        import torch

        # SDXL conditions on the penultimate layer of both encoders, [1, 77 k, 768 + 1280]; pooled from G
        states_l, _ = self._weighted(0, text, -2, False, "clip_l")
        states_g, pooled = self._weighted(1, text, -2, False, "clip_g")
        cut = min(states_l.shape[1], states_g.shape[1])
        states = torch.cat([states_l[:, :cut], states_g[:, :cut]], dim=-1)
        return [[states.float(), {"pooled_output": pooled.float()}]]
