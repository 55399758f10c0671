"""A compact BERT encoder (Devlin et al. 2019) for all-MiniLM-L6-v2, plus its WordPiece tokenizer
through the ``tokenizers`` library (no transformers import).

Embeddings: word + absolute position + token-type-0 rows, LayerNorm. Each layer (post-LN): multi-head
self-attention whose keys at padded positions are masked out, dense, ``LayerNorm(x + attn)``; then
``dense -> GELU(erf) -> dense`` and ``LayerNorm(x + mlp)``. All LayerNorms eps = ``layer_norm_eps``
(1e-12 for MiniLM). Parameter names are transformers' ``BertModel`` names (without its pooler).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import Config, LeanModule

MAX_LENGTH = 77  # MiniLMTextEncoder's fixed padding (SD's CLIP length)


class BertSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``x [B, T, C]``, ``keep [B, 1, 1, T]`` bool (True = real token key) -> ``[B, T, C]``."""
        b, t, c = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, c // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                             attn_mask=keep)
        return out.transpose(1, 2).reshape(b, t, c)


class DenseNorm(nn.Module):
    """``LayerNorm(residual + dense(x))`` (names ``dense``, ``LayerNorm``)."""

    def __init__(self, c_in: int, c_out: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(c_in, c_out)
        self.LayerNorm = nn.LayerNorm(c_out, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dense(x))


class BertAttention(nn.Module):
    def __init__(self, dim: int, heads: int, eps: float):
        super().__init__()
        self.self = BertSelfAttention(dim, heads)
        self.output = DenseNorm(dim, dim, eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, keep), x)


class BertIntermediate(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.dense = nn.Linear(dim, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, dim: int, heads: int, inner: int, eps: float):
        super().__init__()
        self.attention = BertAttention(dim, heads, eps)
        self.intermediate = BertIntermediate(dim, inner)
        self.output = DenseNorm(inner, dim, eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        a = self.attention(x, keep)
        return self.output(self.intermediate(a), a)


class BertEmbeddings(nn.Module):
    def __init__(self, vocab: int, dim: int, positions: int, types: int, eps: float):
        super().__init__()
        # ``_weight`` given: no random init (the weights are always loaded; normal_ on the meta device
        # would also import torch._dynamo, seconds of CPU)
        self.word_embeddings = nn.Embedding(vocab, dim, _weight=torch.empty(vocab, dim))
        self.position_embeddings = nn.Embedding(positions, dim, _weight=torch.empty(positions, dim))
        self.token_type_embeddings = nn.Embedding(types, dim, _weight=torch.empty(types, dim))
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = self.position_embeddings.weight[: ids.shape[1]]                 # [T, C]
        # (word + type) + position: the summation order of the reference, so fp32 results match bitwise
        x = (self.word_embeddings(ids) + self.token_type_embeddings.weight[0]) + pos[None]
        return self.LayerNorm(x)


class BertEncoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.layer = nn.ModuleList([
            BertLayer(cfg["hidden_size"], cfg["num_attention_heads"], cfg["intermediate_size"], cfg["layer_norm_eps"])
            for _ in range(cfg["num_hidden_layers"])])


class LeanBert(LeanModule):
    """``forward(input_ids, attention_mask)`` -> object with ``last_hidden_state [B, T, hidden]``."""

    def __init__(self, config: dict):
        super().__init__()
        if config.get("model_type", "bert") != "bert" or config.get("hidden_act", "gelu") != "gelu" or \
                config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("LeanBert: only BERT with GELU and absolute positions is supported; got "
                             f"{config.get('model_type')}/{config.get('hidden_act')}/{config.get('position_embedding_type')}")
        self.config = Config(config)
        self.embeddings = BertEmbeddings(config["vocab_size"], config["hidden_size"],
                                         config["max_position_embeddings"], config["type_vocab_size"],
                                         config["layer_norm_eps"])
        self.encoder = BertEncoder(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Any:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        keep = attention_mask.bool()[:, None, None, :]                             # [B, 1, 1, T]
        h = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            h = layer(h, keep)
        return SimpleNamespace(last_hidden_state=h)


# ----------------------------------------------------------------------------- tokenizer
class WordPieceTokenizer:
    """BERT's uncased WordPiece through ``tokenizers``, padded/truncated to 77 like ``MiniLMTextEncoder``.

    ``folder``: a model folder with ``tokenizer.json`` (preferred: the exact pipeline the model was
    published with) or ``vocab.txt`` (then BERT's lower-casing normaliser, whitespace/punctuation
    pre-tokeniser and ``[CLS] ... [SEP]`` template are built here).
    """

    def __init__(self, folder: str | Path, max_length: int = MAX_LENGTH):
        from tokenizers import Tokenizer

        folder = Path(folder)
        if (folder / "tokenizer.json").is_file():
            self.tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        elif (folder / "vocab.txt").is_file():
            self.tok = _from_vocab(folder / "vocab.txt")
        else:
            raise FileNotFoundError(f"WordPieceTokenizer: neither tokenizer.json nor vocab.txt in {folder}")
        self.pad_token_id = self.tok.token_to_id("[PAD]")
        self.unk_token_id = self.tok.token_to_id("[UNK]")
        self.all_special_ids = sorted(self.tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"))
        self.max_length = max_length
        self.tok.enable_truncation(max_length=max_length)
        self.tok.enable_padding(length=max_length, pad_id=self.pad_token_id, pad_token="[PAD]")

    def __call__(self, texts: list[str], **options: Any) -> dict[str, torch.Tensor]:
        """``{"input_ids", "attention_mask"}`` as ``[B, 77]`` int64 tensors. ``options`` (transformers'
        ``padding`` / ``max_length`` / ``truncation`` / ``return_tensors``) must ask for what this does."""
        if options.get("max_length", self.max_length) != self.max_length or \
                options.get("padding", "max_length") != "max_length":
            raise ValueError(f"WordPieceTokenizer: only padding='max_length' to {self.max_length} is supported, "
                             f"got {options}")
        enc = self.tok.encode_batch(list(texts))
        return {"input_ids": torch.tensor([e.ids for e in enc], dtype=torch.long),
                "attention_mask": torch.tensor([e.attention_mask for e in enc], dtype=torch.long)}


def _from_vocab(vocab: Path) -> Any:
    """The uncased BERT pipeline from a WordPiece vocabulary file."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    tok = Tokenizer(WordPiece.from_file(str(vocab), unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def read_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())
