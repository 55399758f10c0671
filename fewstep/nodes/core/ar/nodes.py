"""AR nodes: built-in AR/MAR/VQ loaders, tokenizer encode/decode, the AR sampler and the MAR sampler.

A graph: ``LoadBuiltinARModel`` -> (AR_MODEL, CLIP) ; ``CLIPTextEncode`` (that CLIP) -> CONDITIONING ;
``ARSampler`` / ``MARSampler`` -> IMAGE (decoded by the model's tokenizer) + AR_TOKENS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fewstep.app.api import (
    Boolean,
    Combo,
    Float,
    Int,
    Link,
    Node,
    NodeOutput,
    Output,
    Schema,
    report_progress,
)
from fewstep.nodes.core.nodes import SEED_MAX

if TYPE_CHECKING:  # importing the node list must not import torch (registry start-up)
    import torch

    from fewstep.nodes.core.ar.bundle import ARModelBundle, ARTokens

BUILTIN_AR_MODELS: dict[str, str] = {"fewstep-tiny-ar": "ar", "fewstep-tiny-mar": "mar"}

CATEGORY = "fewstep/autoregressive"


def _builtin_names() -> list[str]:
    from fewstep.nodes.zoo.ar import builtin

    present = set(builtin.available())
    return [name for name, kind in BUILTIN_AR_MODELS.items() if kind in present and "vq" in present]


class LoadBuiltinARModel(Node):
    """The built-in AR (LlamaGen-style) or MAR (masked AR + diffusion head) model with its tokenizer and text encoder."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="LoadBuiltinARModel", display_name="Load Built-in AR Model", category=CATEGORY,
                      description="fewstep-tiny-ar: next-token transformer over 8x8 VQ tokens; fewstep-tiny-mar: masked "
                                  "AR transformer with a per-token diffusion head over continuous tokens. Both are "
                                  "conditioned on the MiniLM sentence embedding of the prompt (the CLIP output).",
                      inputs=[Combo("model_name", _builtin_names, tooltip="fewstep/nodes/zoo/weights (model cards beside)")],
                      outputs=[Output("AR_MODEL", "AR_MODEL"), Output("AR_TOKENIZER", "AR_TOKENIZER"),
                               Output("CLIP", "CLIP")])

    @classmethod
    def execute(cls, model_name: str) -> NodeOutput:
        from fewstep.nodes.core.ar.bundle import builtin_text_encoder, load_builtin_model

        bundle = load_builtin_model(model_name)
        return NodeOutput(bundle, bundle.tokenizer, builtin_text_encoder())


class LoadBuiltinVQTokenizer(Node):
    """The built-in VQ tokenizer alone (patch PCA + k-means codebook, 8x8 tokens of 64x64 images)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="LoadBuiltinVQTokenizer", display_name="Load Built-in VQ Tokenizer", category=CATEGORY,
                      outputs=[Output("AR_TOKENIZER", "AR_TOKENIZER")])

    @classmethod
    def execute(cls) -> NodeOutput:
        from fewstep.nodes.core.ar.bundle import load_builtin_tokenizer

        return NodeOutput(load_builtin_tokenizer())


class ARTokenizerEncode(Node):
    """IMAGE -> token grid (discrete codebook ids, or the continuous pre-quantisation latents)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ARTokenizerEncode", display_name="AR Tokenizer Encode", category=CATEGORY,
                      inputs=[Link("image", "IMAGE", tooltip="64x64 images (other sizes are resized)"),
                              Link("tokenizer", "AR_TOKENIZER"),
                              Combo("mode", ["discrete", "continuous"], tooltip="codebook ids or PCA latents")],
                      outputs=[Output("AR_TOKENS", "AR_TOKENS")])

    @classmethod
    def execute(cls, image: torch.Tensor, tokenizer: Any, mode: str) -> NodeOutput:
        import torch

        from fewstep.nodes.core.ar.bundle import ARTokens

        size = tokenizer.config.image_size
        x = image.permute(0, 3, 1, 2).float().to(tokenizer.codebook.device)          # [B, 3, H, W]
        if x.shape[-2:] != (size, size):
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        with torch.no_grad():
            z = tokenizer.encode_continuous(x)
            return NodeOutput(ARTokens(latents=z) if mode == "continuous" else ARTokens(tokens=tokenizer.quantize(z)))


class ARTokenizerDecode(Node):
    """Token grid -> IMAGE."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ARTokenizerDecode", display_name="AR Tokenizer Decode", category=CATEGORY,
                      inputs=[Link("tokens", "AR_TOKENS"), Link("tokenizer", "AR_TOKENIZER")],
                      outputs=[Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, tokens: ARTokens, tokenizer: Any) -> NodeOutput:
        return NodeOutput(tokens.decode(tokenizer))


def _common_inputs() -> list:
    return [Link("ar_model", "AR_MODEL"), Link("positive", "CONDITIONING", tooltip="prompt encoded by the loader's CLIP"),
            Int("batch_size", 4, min=1, max=1024),
            Int("seed", 0, min=0, max=SEED_MAX, control_after_generate=True)]


def _progress(i: int, total: int, *_: int) -> None:
    report_progress(i + 1, total)


class ARSampler(Node):
    """Next-token sampling of an AR model: temperature, top-k, top-p, classifier-free guidance, KV cache."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="ARSampler", display_name="AR Sampler (next-token)", category=CATEGORY,
            description="Samples the 64 tokens one by one (LlamaGen's generate) and decodes them with the tokenizer.",
            inputs=[*_common_inputs(),
                    Float("temperature", 1.0, min=0.0, max=5.0, step=0.05, tooltip="0 = greedy"),
                    Int("top_k", 0, min=0, max=65536, tooltip="keep the k most likely tokens (0 = all)"),
                    Float("top_p", 1.0, min=0.01, max=1.0, step=0.01, tooltip="nucleus mass kept (1 = all)"),
                    Float("cfg", 3.0, min=0.0, max=20.0, step=0.1, tooltip="guidance against the learned null caption"),
                    Boolean("kv_cache", True, tooltip="reuse past keys/values (same tokens, faster)")],
            outputs=[Output("IMAGE", "IMAGE"), Output("AR_TOKENS", "AR_TOKENS")])

    @classmethod
    def execute(cls, ar_model: ARModelBundle, positive: list, batch_size: int, seed: int, temperature: float,
                top_k: int, top_p: float, cfg: float, kv_cache: bool) -> NodeOutput:
        import torch

        from fewstep.nodes.core.ar.bundle import ARTokens, caption_condition
        from fewstep.nodes.core.ar.sampling import sample_ar

        ar_model.require("ar", "AR Sampler")
        model = ar_model.model
        cond = caption_condition(positive, batch_size, model.config.cond_dim, model.output.weight.device)
        tokens = sample_ar(model, cond, temperature=temperature, top_k=top_k, top_p=top_p, cfg_scale=cfg,
                           generator=torch.Generator().manual_seed(seed), use_kv_cache=kv_cache, callback=_progress)
        grid = ARTokens(tokens=tokens)
        return NodeOutput(grid.decode(ar_model.tokenizer), grid)


class MARSampler(Node):
    """MAR's iterative masked generation with a per-token diffusion head (steps per iteration constant or scheduled)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="MARSampler", display_name="MAR Sampler (masked AR + diffusion head)", category=CATEGORY,
            description="Reveals the 64 continuous tokens in a random order over K iterations (cosine schedule); the "
                        "head samples each revealed token with its own diffusion steps.",
            inputs=[*_common_inputs(),
                    Int("iterations", 16, min=1, max=64, tooltip="AR iterations K"),
                    Int("head_steps", 50, min=1, max=1000, tooltip="diffusion steps of the head at every iteration"),
                    Float("temperature", 1.0, min=0.0, max=5.0, step=0.05, tooltip="head noise temperature (MAR's tau)"),
                    Float("cfg", 3.0, min=0.0, max=20.0, step=0.1, tooltip="guidance of the head, ramped linearly"),
                    Link("head_step_schedule", "HEAD_STEP_SCHEDULE", optional=True,
                         tooltip="overrides head_steps: steps per iteration (e.g. DiSA's annealing)")],
            outputs=[Output("IMAGE", "IMAGE"), Output("AR_TOKENS", "AR_TOKENS")])

    @classmethod
    def execute(cls, ar_model: ARModelBundle, positive: list, batch_size: int, seed: int, iterations: int,
                head_steps: int, temperature: float, cfg: float, head_step_schedule: Any = None) -> NodeOutput:
        import torch

        from fewstep.nodes.core.ar.bundle import ARTokens, caption_condition
        from fewstep.nodes.core.ar.sampling import ConstantHeadSteps, sample_mar

        ar_model.require("mar", "MAR Sampler")
        model = ar_model.model
        cond = caption_condition(positive, batch_size, model.config.cond_dim, model.pos.device)
        schedule = head_step_schedule if head_step_schedule is not None else ConstantHeadSteps(head_steps)
        latents = sample_mar(model, cond, iterations=iterations, head_steps=schedule, temperature=temperature,
                             cfg_scale=cfg, generator=torch.Generator().manual_seed(seed), callback=_progress,
                             head_t_max=getattr(schedule, "t_max", None))   # DiSA's schedules clip at 950
        grid = ARTokens(latents=latents)
        return NodeOutput(grid.decode(ar_model.tokenizer), grid)


NODES: list[type[Node]] = [LoadBuiltinARModel, LoadBuiltinVQTokenizer, ARTokenizerEncode, ARTokenizerDecode,
                           ARSampler, MARSampler]
