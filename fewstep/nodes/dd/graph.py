"""What the DD nodes do, as plain functions over the AR link values (``fewstep.nodes.core.ar.bundle``).

Link types of this pack (described in ``fewstep.app.types``):
    DD_PAIRS   a :class:`~fewstep.nodes.dd.pairs.PairStore` (folder of noise → teacher-token pairs)
    DD_MODEL   a :class:`DDBundle` (the generator, the teacher's tokenizer, its step set, its name)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fewstep.app.api import report_progress
from fewstep.nodes.core.ar.bundle import ARModelBundle, ARTokens
from fewstep.nodes.core.text import TextEncoder
from fewstep.nodes.core.train.distill_graph import run_folder
from fewstep.nodes.core.train.distributed import main_rank_first
from fewstep.nodes.core.train.loop import Checkpointer
from fewstep.nodes.dd.flow import flow_space
from fewstep.nodes.dd.generator import DDGenerator
from fewstep.nodes.dd.pairs import PairSpec, PairStore, build_pairs, teacher_tag
from fewstep.nodes.dd.sampling import sample_dd, sample_dd_teacher
from fewstep.nodes.dd.teacher import teacher_flow_tokens
from fewstep.nodes.dd.train import DDTrainConfig, train_dd
from fewstep.nodes.zoo.ar.tokenizer import VQTokenizer


@dataclass
class DDBundle:
    """The DD_MODEL link value."""

    generator: DDGenerator
    tokenizer: VQTokenizer
    t_list: tuple[int, ...]
    name: str
    cfg: float = 1.0                           # the teacher CFG its pairs were made with (teacher-involved mode)
    teacher: str = ""                          # teacher_tag of the checkpoint that made its pairs ("": unknown)


def embed_prompts(clip: TextEncoder, prompts: list[str], batch: int = 64) -> Tensor:
    """MiniLM sentence embeddings [P, 384] of ``prompts`` through the AR loader's CLIP: the same pooled output
    ``CLIPTextEncode`` gives the samplers, computed in batches."""
    if not isinstance(clip, TextEncoder) or clip.kind != "builtin":
        raise ValueError("DD needs the CLIP output of 'Load Built-in AR Model' (the MiniLM encoder the teacher "
                         "is conditioned on)")
    encoder = clip.encoders[0]
    with torch.no_grad():
        return torch.cat([encoder.encode(prompts[i:i + batch])[1].float().cpu() for i in range(0, len(prompts), batch)])


def make_pairs(ar_model: ARModelBundle, clip: TextEncoder, prompts: list[str], *, count: int, cfg: float, flow_steps: int,
               seed: int, name: str, batch_size: int = 256) -> PairStore:
    """Build (or resume) the pair dataset in ``<models>/dd_pairs/<name>-<hash>``."""
    ar_model.require("ar", "DD Pair Dataset")
    teacher = ar_model.model
    book = flow_space(ar_model.tokenizer.codebook).to(teacher.output.weight.device)
    spec = PairSpec(count=count, seq_len=teacher.config.seq_len, dim=book.shape[1], vocab=book.shape[0],
                    shard_size=min(count, 256), seed=seed, flow_steps=flow_steps,
                    teacher=teacher_tag(ar_model.name, teacher), cfg=cfg)
    folder = run_folder(name, [repr(spec), *prompts], kind="dd_pairs")
    conds = embed_prompts(clip, prompts)

    def decode(noise: Tensor, cond: Tensor) -> Tensor:
        dev = teacher.output.weight.device
        return teacher_flow_tokens(teacher, noise.to(dev), cond.to(dev), book, cfg_scale=cfg, flow_steps=flow_steps)

    with main_rank_first(str(teacher.output.weight.device)):     # N processes: rank 0 writes the shards once
        return build_pairs(PairStore(folder), spec, prompts, conds, decode, batch_size=batch_size,
                           progress=lambda j, n: report_progress(j, n))


def train_generator(ar_model: ARModelBundle, pairs: PairStore, cfg: DDTrainConfig, *, run_name: str,
                    checkpoint_every: int) -> tuple[DDBundle, list[float]]:
    """Train (or resume) a DD generator on ``pairs``; checkpoints in ``<models>/checkpoints/distill/<run>-<hash>``."""
    ar_model.require("ar", "DD Train")
    manifest = pairs.manifest()
    if manifest is None:
        raise ValueError(f"{pairs.folder} holds no pair dataset")
    tag = teacher_tag(ar_model.name, ar_model.model)
    if manifest["teacher"] != tag:
        raise ValueError(f"these pairs were made by the teacher {manifest['teacher']!r}, not by this one ({tag!r}): "
                         "make the pairs with the AR model you distil")
    teacher = ar_model.model
    device = str(teacher.output.weight.device)
    book = flow_space(ar_model.tokenizer.codebook).to(device)
    ckpt = Checkpointer(run_folder(run_name, ["dd", cfg.fingerprint(), pairs.folder.name]), every=checkpoint_every)
    generator, state = train_dd(teacher, book, pairs.load(), pairs.conds(), cfg, tokenizer=ar_model.tokenizer,
                                checkpointer=ckpt, device=device, meta={"pairs": pairs.folder.name},
                                autocast=torch.bfloat16 if device.startswith("cuda") else None)
    name = f"{run_name} (DD, {state.step} steps)"
    return DDBundle(generator, ar_model.tokenizer, cfg.t_list, name, float(manifest["cfg"]), tag), state.losses


def load_bundle(file_name: str) -> DDBundle:
    """A shipped generator with the built-in tokenizer (checked to be the one it was distilled over)."""
    from fewstep.nodes.core.ar.bundle import load_builtin_tokenizer
    from fewstep.nodes.dd.weights_io import load_shipped_generator

    tok = load_builtin_tokenizer()
    generator, meta = load_shipped_generator(file_name, str(tok.codebook.device))
    if not torch.allclose(flow_space(tok.codebook), generator.book, atol=1e-4):
        raise ValueError(f"{file_name} was distilled over another VQ codebook than the built-in tokenizer's")
    t_list = tuple(meta.get("train", {}).get("t_list", (0,)))
    return DDBundle(generator, tok, t_list, file_name, float(meta.get("eval_setup", {}).get("cfg", 1.0)),
                    str(meta.get("pair_teacher", "")))


def check_teacher(bundle: DDBundle, teacher: ARModelBundle) -> None:
    """The teacher-involved mode continues DD's prefix with the teacher DD was distilled from: another checkpoint
    (compared by the weights digest of :func:`teacher_tag`, not the name) is refused."""
    if not bundle.teacher:
        return
    have = teacher_tag(teacher.name, teacher.model).rsplit("@", 1)[-1]
    if have != bundle.teacher.rsplit("@", 1)[-1]:
        raise ValueError(f"DD Sampler (teacher-involved): {bundle.name} was distilled from the teacher "
                         f"{bundle.teacher!r}, not from the connected {teacher.name!r} (weights digest {have}); "
                         "connect that teacher or sample without one")


def sample(bundle: DDBundle, cond: Tensor, *, steps: int, seed: int, head: str, teacher: ARModelBundle | None = None,
           dd_prefix: int = 8) -> ARTokens:
    """Tokens of a 1- or 2-step DD run (or, with a teacher, DD prefix + teacher to t₁ + DD)."""
    if steps not in (1, 2):
        raise ValueError(f"DD samples in 1 or 2 steps, got {steps}")
    if steps == 2 and len(bundle.t_list) < 2:
        raise ValueError(f"{bundle.name} was trained for one step only (step set {bundle.t_list})")
    gen = bundle.generator
    noise = torch.randn(cond.shape[0], gen.config.teacher.seq_len, gen.config.flow_dim,
                        generator=torch.Generator().manual_seed(seed)).to(cond.device)
    if teacher is not None:
        teacher.require("ar", "DD Sampler (teacher-involved)")
        check_teacher(bundle, teacher)
        tokens = sample_dd_teacher(gen, teacher.model, noise, cond, dd_prefix=dd_prefix, switch=bundle.t_list[-1],
                                   cfg_scale=bundle.cfg, head=head)
    else:
        tokens = sample_dd(gen, noise, cond, bundle.t_list[:steps], head)
    return ARTokens(tokens=tokens)
