"""Every data type that flows between nodes, declared once.

The engine never looks inside these values; the names are what validation matches on links. Packs may
declare more types with :func:`custom_type`; ComfyUI packs simply use new strings.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataType:
    """A named link type and the exact contract of its value."""

    name: str
    doc: str

    def __str__(self) -> str:
        return self.name


# ComfyUI's types (same meaning, so ComfyUI workflows map onto ours) ---------------------------------
IMAGE = DataType("IMAGE", "torch.float32 tensor [B, H, W, C], C = 3 (RGB), values in 0..1, on CPU or GPU.")
MASK = DataType("MASK", "torch.float32 tensor [B, H, W], values in 0..1 (1 = masked / keep alpha).")
LATENT = DataType(
    "LATENT",
    "dict: 'samples' -> tensor [B, C, h, w] in the VAE's scaled latent space; optional 'noise_mask' "
    "[B, 1, h, w] and 'batch_index' list[int].",
)
CONDITIONING = DataType(
    "CONDITIONING",
    "list of [tensor, dict] pairs (ComfyUI layout): tensor = token states [B, T, D] of the text encoder; "
    "dict may hold 'pooled_output' [B, D'], 'attention_mask' [B, T] and model-specific extras "
    "(SDXL: 'width', 'height', 'crop_w', 'crop_h', 'target_width', 'target_height').",
)
MODEL = DataType(
    "MODEL",
    "fewstep.nodes.core.denoiser.Denoiser: the network plus prediction type (eps | v | x0 | flow) and noise "
    "schedule; call D(x [B,C,h,w], sigma [B], cond) -> x0 estimate with x's shape.",
)
CLIP = DataType("CLIP", "fewstep.nodes.core text encoder wrapper: tokenizer + encoder(s); encode(text) -> CONDITIONING.")
VAE = DataType("VAE", "fewstep.nodes.core VAE wrapper: encode(IMAGE) -> latent tensor [B,C,h,w]; decode(latent) -> IMAGE.")
SIGMAS = DataType("SIGMAS", "1-D torch.float32 tensor of noise levels, decreasing, ending in 0 (k-diffusion σ).")
SAMPLER = DataType("SAMPLER", "fewstep.nodes.core.samplers.SamplerSpec: a sampler function of the shared signature + options.")
NOISE = DataType("NOISE", "object with .seed: int and .generate(latent: LATENT) -> tensor [B, C, h, w] of N(0, 1).")
GUIDER = DataType("GUIDER", "fewstep.nodes.core guider: a MODEL plus conditioning and CFG scale; called like a denoiser.")
INT = DataType("INT", "Python int.")
FLOAT = DataType("FLOAT", "Python float.")
STRING = DataType("STRING", "Python str.")
BOOLEAN = DataType("BOOLEAN", "Python bool.")

# fewstep's own ------------------------------------------------------------------------------------
VIDEO = DataType(
    "VIDEO",
    "fewstep.nodes.core.video.Video (frozen): .frames float32 tensor [T, H, W, 3] in 0..1 on CPU (one clip in "
    "IMAGE layout), .fps fractions.Fraction, .metadata Mapping[str, str]; ComfyUI's accessors get_components() "
    "(.images, .frame_rate, .audio = None), get_dimensions() -> (width, height), get_duration() -> seconds.",
)
VIDEO_MODEL = DataType(
    "VIDEO_MODEL",
    "fewstep.nodes.zoo.video.model.VideoModel: a text-to-video DiT (rectified flow) with its per-frame VAE, text "
    "encoder and fps; .denoiser() -> a MODEL-style Denoiser over latents [B, T, C, h, w].",
)
MESH = DataType(
    "MESH",
    "fewstep.nodes.core.mesh.Mesh (frozen): .vertices float32 [V, 3], .faces int64 [F, 3] wound outward, "
    ".vertex_colors float [V, 3] in 0..1 or None; or fewstep.nodes.core.mesh.ArticulatedMesh: .parts "
    "{name: Mesh} in rest pose, .joints tuple of Joint (revolute | prismatic; axis, origin, limits, parent, child).",
)
TRIPLANE = DataType(
    "TRIPLANE",
    "fewstep.nodes.core.render.triplane.Triplane: .planes tensor [3, C, R, R] or [B, 3, C, R, R] (xy, xz, yz "
    "feature planes; row = second coordinate), .decoder (TriplaneDecoder: concatenated bilinear features [.., 3C] "
    "-> SDF, RGB in 0..1), .bound (the planes span [-bound, bound]^3); .field(points [N, M, 3]) -> (sdf [N, M], "
    "rgb [N, M, 3]) renders with fewstep.nodes.core.render.volume.render_field.",
)
AR_MODEL = DataType(
    "AR_MODEL",
    "fewstep.nodes.core.ar.bundle.ARModelBundle: kind ('ar' = next-token ARTransformer over VQ token ids | 'mar' "
    "= masked-AR MARModel over continuous tokens), model, tokenizer (VQTokenizer, images [B,3,64,64] <-> [B,64] "
    "tokens), name; sampled by fewstep.nodes.core.ar.sampling.sample_ar / sample_mar (ARSampler / MARSampler).",
)
DD_PAIRS = DataType(
    "DD_PAIRS",
    "fewstep.nodes.dd.pairs.PairStore: a folder of Distilled Decoding pairs (noise [L, D] -> the AR teacher's "
    "tokens [L] through the flow map, caption index) in safetensors shards, with manifest.json, prompts.json and "
    "conds.safetensors; .load(), .conds(), .prompts().",
)
DD_MODEL = DataType(
    "DD_MODEL",
    "fewstep.nodes.dd.graph.DDBundle: .generator (DDGenerator: noise [B, L, D] -> all L tokens in one pass), "
    ".tokenizer (the teacher's VQ tokenizer), .t_list (trained starts, e.g. (0, 24): 1 or 2 steps), .cfg, .name.",
)
QUANT_CONFIG = DataType(
    "QUANT_CONFIG",
    "dict: 'weight_bits' -> {layer_name: int}, 'act_bits' -> {layer_name: int}, 'keep_fp' -> list[str], "
    "'budget' -> float (average bits); JSON-serialisable.",
)
DATASET = DataType("DATASET", "a torch Dataset of dicts ('image' [H,W,C] 0..1 and/or 'latent', 'prompt': str, ...).")
TRAJECTORIES = DataType("TRAJECTORIES", "dict: 'x' -> tensor [N, S, C, h, w] states, 'sigmas' -> [S], 'cond' -> CONDITIONING.")
REWARD_MODEL = DataType("REWARD_MODEL", "callable (IMAGE [B,H,W,C], prompts: list[str]) -> tensor [B] of rewards, differentiable.")
METRICS = DataType("METRICS", "dict[str, float | int | str]: named numbers, shown as a table in the editor.")
POLICY = DataType(
    "POLICY",
    "fewstep.nodes.culture.runs.Policy: .net (PopulationActorCritic, M GRU actor-critics; "
    "step(obs [M,N,D], h [M,N,H], reset [M,N]) -> logits [M,N,A], value [M,N], h'), .env (the EnvConfig it was "
    "trained on), .social (trained with oracles), .history (metrics per PPO update).",
)
ENV = DataType(
    "ENV",
    "fewstep.nodes.culture.runs.EnvConfig: a frozen description of a vectorised multi-trial environment "
    "(memory_sequence | tsp); .make(batch, others, fixed_tasks, num_trials, device) -> TrialEnv of B episodes "
    "as tensors.",
)

ALL_TYPES: tuple[DataType, ...] = (
    IMAGE, MASK, LATENT, CONDITIONING, MODEL, CLIP, VAE, SIGMAS, SAMPLER, NOISE, GUIDER, INT, FLOAT,
    STRING, BOOLEAN, VIDEO, VIDEO_MODEL, MESH, TRIPLANE, AR_MODEL, DD_PAIRS, DD_MODEL, QUANT_CONFIG, DATASET,
    TRAJECTORIES, REWARD_MODEL, METRICS, POLICY, ENV,
)


def custom_type(name: str, doc: str) -> DataType:
    """Declare a pack's own type (a plain string in graphs)."""
    return DataType(name, doc)
