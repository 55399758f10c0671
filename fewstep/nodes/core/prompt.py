"""ComfyUI's prompt semantics for CLIP text encoders: emphasis weights, escapes, 77-token windows for long
prompts, textual-inversion embeddings and "clip skip". Used by ``text.TextEncoder`` for SD1.x and SDXL.

Syntax (as ComfyUI reads it; our own code):
- ``(text)`` multiplies the weight of ``text`` by 1.1 (nesting multiplies again); ``(text:1.3)`` sets it
  to 1.3 (the number replaces, it does not multiply); ``\\(`` and ``\\)`` are literal parentheses;
  square brackets are ordinary text (ComfyUI has no ``[de-emphasis]``).
- ``embedding:name`` inserts the vectors of ``models/embeddings/name[.safetensors|.pt|.bin]`` as tokens; a
  missing file is skipped with a warning, trailing punctuation after the name is tokenised as text.

Tokens: the prompt is split on spaces; each word is BPE-tokenised alone. Words are packed into windows of
75 tokens (a word of fewer than 8 tokens is not split across windows), each framed as
``[BOS] tokens [EOS] pad...`` to 77. Every window is encoded separately and the states are concatenated
along the sequence ([1, 77 k, D]); the pooled output is the first window's.

Weights (ComfyUI's rule): with any weight != 1, an empty prompt (``[BOS] [EOS] pad...``) is encoded too,
and a weighted token's state becomes ``e + w (z - e)`` with ``e`` the empty prompt's state at the same
position — interpolation away from the "nothing said" state, not a plain scaling.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

WINDOW = 77
MAX_WORD_TOKENS = 8          # shorter words move whole to the next window
EMPHASIS = 1.1
EMBEDDING_PREFIX = "embedding:"
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
_ESCAPES = {"\\(": "\0\1", "\\)": "\0\2"}


def _escape(text: str) -> str:
    for raw, token in _ESCAPES.items():
        text = text.replace(raw, token)
    return text


def _unescape(text: str) -> str:
    for raw, token in _ESCAPES.items():
        text = text.replace(token, raw[1])
    return text


def _top_level_groups(text: str) -> list[str]:
    """Split into plain runs and top-level ``( ... )`` groups (each kept with its parentheses)."""
    groups, current, depth = [], "", 0
    for char in text:
        if char == "(":
            if depth == 0 and current:
                groups.append(current)
                current = ""
            current += char
            depth += 1
        elif char == ")" and depth > 0:
            depth -= 1
            current += char
            if depth == 0:
                groups.append(current)
                current = ""
        else:
            current += char
    if current:
        groups.append(current)
    return groups


def _weights(text: str, weight: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for group in _top_level_groups(text):
        if len(group) >= 2 and group[0] == "(" and group[-1] == ")":
            inner, inner_weight = group[1:-1], weight * EMPHASIS
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    inner, inner_weight = inner[:colon], float(inner[colon + 1:])
                except ValueError:
                    pass
            out += _weights(inner, inner_weight)
        else:
            out.append((group, weight))
    return out


def parse_weights(text: str) -> list[tuple[str, float]]:
    """``[(segment, weight)]`` of a prompt (escapes resolved)."""
    return [(_unescape(segment), w) for segment, w in _weights(_escape(text), 1.0)]


Token = int | torch.Tensor               # a vocabulary id or an embedding vector [D]
EmbeddingLookup = Callable[[str], torch.Tensor | None]   # name -> vectors [n, D] of this encoder, or None


@dataclass(frozen=True)
class Window:
    """One 77-token window: ids (embedding vectors sit at placeholder id 0) and per-token weights."""

    ids: list[int]
    weights: list[float]
    vectors: dict[int, torch.Tensor]     # position -> embedding vector


def _word_tokens(word: str, weight: float, encode: Callable[[str], list[int]],
                 embedding: EmbeddingLookup | None) -> list[list[tuple[Token, float]]]:
    if not word.startswith(EMBEDDING_PREFIX) or embedding is None:
        return [[(t, weight) for t in encode(word)]]
    name = word[len(EMBEDDING_PREFIX):]
    leftover = ""
    while name:
        vectors = embedding(name)
        if vectors is not None:
            groups = [[(v, weight) for v in vectors.reshape(-1, vectors.shape[-1])]]
            return groups + ([[(t, weight) for t in encode(leftover)]] if leftover else [])
        if name[-1].isalnum():
            break
        name, leftover = name[:-1], name[-1] + leftover
    log.warning("embedding %r not found in models/embeddings; ignored", word[len(EMBEDDING_PREFIX):])
    return [[(t, weight) for t in encode(leftover)]] if leftover else []


def windows(text: str, encode: Callable[[str], list[int]], bos: int, eos: int, pad: int,
            embedding: EmbeddingLookup | None = None) -> list[Window]:
    """The prompt as 77-token windows (see the module docstring for the packing rule)."""
    groups: list[list[tuple[Token, float]]] = []
    for segment, weight in parse_weights(text):
        for word in segment.replace("\n", " ").split(" "):
            if word:
                groups += _word_tokens(word, weight, encode, embedding)
    limit = WINDOW - 2                                    # room between BOS and EOS
    packed: list[list[tuple[Token, float]]] = [[]]
    for group in groups:
        large = len(group) >= MAX_WORD_TOKENS
        while group:
            room = limit - len(packed[-1])
            if len(group) <= room:
                packed[-1] += group
                group = []
            elif large:
                packed[-1] += group[:room]
                group = group[room:]
                packed.append([])
            else:
                packed.append([])
    out = []
    for tokens in packed:
        ids = [bos] + [0 if isinstance(t, torch.Tensor) else int(t) for t, _ in tokens] + [eos]
        weights = [1.0] + [w for _, w in tokens] + [1.0]
        vectors = {i + 1: t for i, (t, _) in enumerate(tokens) if isinstance(t, torch.Tensor)}
        out.append(Window(ids + [pad] * (WINDOW - len(ids)), weights + [1.0] * (WINDOW - len(ids)), vectors))
    return out


@dataclass(frozen=True)
class LayerChoice:
    """Which hidden state an encoder returns: ``index`` None = the final (layer-normed) output, else
    ``hidden_states[index]`` (-1 = last layer, -2 = penultimate ...), through the final layer norm when
    ``final_norm`` (SD1.x's clip skip) or raw (SDXL)."""

    index: int | None
    final_norm: bool


def _final_norm(model: Any) -> Any:
    return next(m for name, m in model.named_modules() if name.endswith("final_layer_norm"))


def _run(model: Any, window_ids: torch.Tensor, vectors: list[dict[int, torch.Tensor]], layer: LayerChoice
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(states [W, 77, D], pooled [W, D']) of a batch of windows; embedding vectors replace the token
    embeddings at their positions (a forward hook on the input embedding)."""
    table = model.get_input_embeddings()

    def put_vectors(module: Any, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        for row, found in enumerate(vectors):
            for pos, vec in found.items():
                output[row, pos] = vec.to(output.device, output.dtype)
        return output

    hook = table.register_forward_hook(put_vectors) if any(vectors) else None
    try:
        out = model(window_ids, output_hidden_states=layer.index is not None)
    finally:
        if hook is not None:
            hook.remove()
    pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
    if layer.index is None:
        return out.last_hidden_state, pooled
    states = out.hidden_states[layer.index]
    return (_final_norm(model)(states) if layer.final_norm else states), pooled


def encode_windows(model: Any, wins: list[Window], layer: LayerChoice, empty: list[int]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """States [1, 77 k, D] (weights applied as e + w (z - e), ``empty`` = the ids of the empty prompt) and
    the first window's pooled output [1, D']."""
    device = next(model.parameters()).device
    weighted = any(w != 1.0 for win in wins for w in win.weights)
    batch = [win.ids for win in wins]
    vectors = [win.vectors for win in wins]
    if weighted:
        batch.append(list(empty))
        vectors.append({})
    states, pooled = _run(model, torch.tensor(batch, device=device), vectors, layer)
    chunks = []
    for k, win in enumerate(wins):
        z = states[k]
        if weighted:
            w = torch.tensor(win.weights, device=z.device, dtype=z.dtype)[:, None]
            z = states[-1] + w * (z - states[-1])
        chunks.append(z)
    return torch.cat(chunks, dim=0)[None], pooled[:1]


def embedding_lookup(dim: int, key: str | None = None) -> EmbeddingLookup:
    """name -> vectors [n, dim] from ``models/embeddings`` (A1111 ``string_to_param``, ``emb_params``, SDXL
    ``clip_l`` / ``clip_g`` files; ``key`` picks the SDXL tower); None when absent or of another width."""
    def lookup(name: str) -> torch.Tensor | None:
        from fewstep.app.api import current_paths
        from fewstep.nodes.core.loaders.files import read_state_dict

        paths = current_paths()
        path = None
        for candidate in (name, *(name + s for s in EMBEDDING_SUFFIXES)):
            try:
                path = paths.find_model("embeddings", candidate)
                break
            except (FileNotFoundError, ValueError):
                continue
        if path is None or not path.is_file():
            return None
        state = read_state_dict(path)
        tensors = _embedding_tensors(state, key)
        found = [t for t in tensors if t.shape[-1] == dim]
        return found[0].reshape(-1, dim).float() if found else None

    return lookup


def _embedding_tensors(state: dict[str, Any], key: str | None) -> list[torch.Tensor]:
    if key is not None and key in state:
        return [state[key]]
    if "string_to_param" in state:
        return [v for v in state["string_to_param"].values() if isinstance(v, torch.Tensor)]
    if "emb_params" in state:
        return [state["emb_params"]]
    return [v for v in state.values() if isinstance(v, torch.Tensor)]
