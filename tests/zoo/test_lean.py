"""The lean runtime (``nodes.zoo.lean``) against diffusers / transformers on the shipped weights.

Tolerance: lean and reference run the same operations in the same order on the same fp32 weights (the
files are fp16; both upcast them identically), so on this machine the outputs agree bitwise. A different
CPU or torch build may pick other conv/GEMM kernels for one side (e.g. by memory layout), which changes
fp32 rounding by ~1e-7 relative per op; through the ~40 layers of these nets (outputs of order 1-5) that
stays far below 1e-5. ``TOL = 1e-4`` leaves margin for that, while any real difference in the math (an
eps, the sin/cos order, a missing residual, a wrong head split) moves outputs by 1e-2 or more - checked
below by showing that a one-step change of the timestep already moves the UNet by far more than TOL.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fewstep.nodes.zoo import builtin, lean  # noqa: E402
from fewstep.nodes.zoo.text_encoder import MAX_LENGTH, package_model_path  # noqa: E402

TOL = 1e-4
CAPTIONS = [
    "a large red circle above a large green cross",
    "",
    "Zebra-striped 'xylophone'!!! über café, naïve?  Multiple   spaces\tand tabs",
    "qwertyuiopasdfgh zxcvbnm 日本語 emoji \U0001F600 (brackets) [x] {y} a/b c-d e_f 3.14 #tag @user",
    " ".join(f"word{i} red square" for i in range(40)),        # ~200 tokens: truncated to 77
]


@pytest.fixture(scope="module")
def lean_bundle() -> builtin.BuiltinBundle:
    return builtin.load_builtin(builtin.BUILTIN_CHECKPOINT, "cpu", lean=True)


@pytest.fixture(scope="module")
def ref_bundle() -> builtin.BuiltinBundle:
    return builtin.load_builtin(builtin.BUILTIN_CHECKPOINT, "cpu", lean=False)


def test_default_is_lean_on_cpu(lean_bundle: builtin.BuiltinBundle, ref_bundle: builtin.BuiltinBundle) -> None:
    default = builtin.load_builtin(builtin.BUILTIN_CHECKPOINT)
    assert isinstance(default.unet, lean.LeanUNet) and isinstance(default.vae, lean.LeanAutoencoderKL)
    assert isinstance(default.text_encoder.model, lean.LeanBert)
    assert type(ref_bundle.unet).__name__ == "UNet2DConditionModel"
    assert type(ref_bundle.text_encoder.model).__name__ == "BertModel"
    # the config fields the core wrappers read
    assert lean_bundle.vae.config.block_out_channels == ref_bundle.vae.config.block_out_channels
    assert lean_bundle.unet.config.in_channels == ref_bundle.unet.config.in_channels == 4
    assert lean_bundle.unet.config.sample_size == ref_bundle.unet.config.sample_size
    assert lean_bundle.unet.dtype == torch.float32 and lean_bundle.unet.device.type == "cpu"
    assert not any(p.requires_grad for p in lean_bundle.unet.parameters())


@pytest.mark.parametrize("batch", [1, 3])
def test_unet_matches_diffusers(lean_bundle: builtin.BuiltinBundle, ref_bundle: builtin.BuiltinBundle,
                                batch: int) -> None:
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 4, 16, 16, generator=g)
    t = torch.rand(batch, generator=g) * 999                     # fractional timesteps, as samplers pass
    ctx = torch.randn(batch, MAX_LENGTH, 384, generator=g)
    with torch.no_grad():
        ref = ref_bundle.unet(x, t, encoder_hidden_states=ctx).sample
        out = lean_bundle.unet(x, t, encoder_hidden_states=ctx).sample
        moved = lean_bundle.unet(x, t + 1, encoder_hidden_states=ctx).sample
    assert out.shape == ref.shape == x.shape
    assert (out - ref).abs().max().item() <= TOL
    assert (moved - ref).abs().max().item() > 100 * TOL       # the comparison can tell a real change


def test_unet_scalar_timestep_and_tuple_return(lean_bundle: builtin.BuiltinBundle,
                                               ref_bundle: builtin.BuiltinBundle) -> None:
    x, ctx = torch.randn(2, 4, 16, 16), torch.randn(2, MAX_LENGTH, 384)
    with torch.no_grad():
        ref = ref_bundle.unet(x, 250, encoder_hidden_states=ctx).sample
        (out,) = lean_bundle.unet(x, torch.tensor(250), encoder_hidden_states=ctx, return_dict=False)
    assert (out - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("batch", [1, 3])
def test_vae_matches_diffusers(lean_bundle: builtin.BuiltinBundle, ref_bundle: builtin.BuiltinBundle,
                               batch: int) -> None:
    g = torch.Generator().manual_seed(10 + batch)
    z = torch.randn(batch, 4, 16, 16, generator=g)
    images = torch.rand(batch, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        dec, dec_ref = lean_bundle.vae.decode(z).sample, ref_bundle.vae.decode(z).sample
        post, post_ref = lean_bundle.vae.encode(images).latent_dist, ref_bundle.vae.encode(images).latent_dist
    assert dec.shape == dec_ref.shape == (batch, 3, 64, 64)
    assert (dec - dec_ref).abs().max().item() <= TOL
    assert post.mean.shape == post_ref.mean.shape == (batch, 4, 16, 16)
    assert (post.mean - post_ref.mean).abs().max().item() <= TOL
    assert (post.std - post_ref.std).abs().max().item() <= TOL


def test_minilm_tokens_match_transformers(lean_bundle: builtin.BuiltinBundle,
                                          ref_bundle: builtin.BuiltinBundle) -> None:
    ids, mask = lean_bundle.text_encoder.tokenize(CAPTIONS)
    ids_ref, mask_ref = ref_bundle.text_encoder.tokenize(CAPTIONS)
    assert ids.shape == (len(CAPTIONS), MAX_LENGTH)
    assert torch.equal(ids, ids_ref) and torch.equal(mask, mask_ref)
    unk = lean_bundle.text_encoder.tokenizer.unk_token_id
    assert (ids[3] == unk).any()                       # the caption with CJK/emoji has unknown pieces
    assert mask[4].all() and ids[4, -1].item() == 102  # truncated to 77 and still closed by [SEP]


def test_tokenizer_from_vocab_txt_matches(tmp_path, lean_bundle: builtin.BuiltinBundle) -> None:
    """Without tokenizer.json the tokenizer is rebuilt from vocab.txt with BERT's uncased pipeline."""
    shutil.copy(package_model_path() / "vocab.txt", tmp_path / "vocab.txt")
    tok = lean.WordPieceTokenizer(tmp_path)
    assert torch.equal(tok(CAPTIONS)["input_ids"], lean_bundle.text_encoder.tokenize(CAPTIONS)[0])
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        lean.WordPieceTokenizer(tmp_path / "missing")


def test_minilm_states_match_transformers(lean_bundle: builtin.BuiltinBundle,
                                          ref_bundle: builtin.BuiltinBundle) -> None:
    states, pooled = lean_bundle.text_encoder.encode(CAPTIONS)
    states_ref, pooled_ref = ref_bundle.text_encoder.encode(CAPTIONS)
    assert states.shape == states_ref.shape == (len(CAPTIONS), MAX_LENGTH, 384)
    assert (states - states_ref).abs().max().item() <= TOL     # padded positions included (the UNet sees them)
    assert (pooled - pooled_ref).abs().max().item() <= TOL
    assert torch.allclose(pooled.norm(dim=-1), torch.ones(len(CAPTIONS)))


def test_peft_lora_on_lean_unet_matches_diffusers(lean_bundle: builtin.BuiltinBundle,
                                                  ref_bundle: builtin.BuiltinBundle) -> None:
    """On CPU, CheckpointLoaderSimple hands the distillation packs a lean UNet: LoRA through peft
    (``nodes.core.train.loop.add_lora``) must give the same adapter names, outputs, gradients and merge."""
    import copy

    from fewstep.nodes.core.train.loop import add_lora, merged_state_dict

    targets = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1")
    nets = [add_lora(copy.deepcopy(b.unet), 4, targets) for b in (lean_bundle, ref_bundle)]
    names = [sorted(k for k in n.state_dict() if "lora_" in k) for n in nets]
    assert names[0] == names[1] and len(names[0]) > 100
    g = torch.Generator().manual_seed(3)
    adapters = {k: 0.01 * torch.randn(v.shape, generator=g) for k, v in nets[1].state_dict().items() if "lora_" in k}
    x, ctx, t = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, MAX_LENGTH, 384, generator=g), torch.tensor([10.0, 900.0])
    outs, grads = [], []
    for net in nets:
        net.load_state_dict(adapters, strict=False)
        out = net(x, t, encoder_hidden_states=ctx).sample
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append({k: p.grad for k, p in net.named_parameters() if p.grad is not None})
    assert (outs[0] - outs[1]).abs().max().item() <= TOL
    assert sorted(grads[0]) == sorted(grads[1]) == [k for k in names[0]]
    assert max((grads[0][k] - grads[1][k]).abs().max().item() for k in grads[0]) <= TOL
    merged = [merged_state_dict(n) for n in nets]
    assert sorted(merged[0]) == sorted(merged[1])
    assert max((merged[0][k] - merged[1][k]).abs().max().item() for k in merged[0]) <= TOL


def test_scorer_text_tower_matches(lean_bundle: builtin.BuiltinBundle, ref_bundle: builtin.BuiltinBundle) -> None:
    """The scorer's text embeddings through the lean MiniLM equal those through transformers'."""
    from safetensors.torch import load_file

    from fewstep.nodes.zoo.models import ScorerHeads

    cfg = json.loads((builtin.weights_dir() / builtin.SCORER_FILE).with_suffix(".json").read_text())
    heads = ScorerHeads(**cfg["heads"])
    heads.load_state_dict({k: v.float() for k, v in load_file(builtin.weights_dir() / builtin.SCORER_FILE).items()})
    lean_emb = builtin.Scorer(heads, None, lean_bundle.text_encoder).text_embeds(CAPTIONS)
    ref_emb = builtin.Scorer(heads, None, ref_bundle.text_encoder).text_embeds(CAPTIONS)
    assert lean_emb.shape == (len(CAPTIONS), 256)
    assert (lean_emb - ref_emb).abs().max().item() <= TOL


def test_unsupported_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="upcast_attention"):
        lean.LeanUNet({**_teacher_unet_config(), "upcast_attention": True})
    with pytest.raises(ValueError, match="do not mirror"):
        lean.LeanUNet({**_teacher_unet_config(), "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"]})
    with pytest.raises(ValueError, match="latent_channels_x"):
        lean.LeanAutoencoderKL({"latent_channels_x": 1, "down_block_types": [], "up_block_types": []})
    with pytest.raises(ValueError, match="added_cond_kwargs"):
        lean_unet = lean.LeanUNet(_teacher_unet_config())
        lean_unet(torch.zeros(1, 4, 16, 16), 1, encoder_hidden_states=torch.zeros(1, 77, 384),
                  added_cond_kwargs={"text_embeds": torch.zeros(1, 4)})


def _teacher_unet_config() -> dict:
    return json.loads((builtin.weights_dir() / "fewstep-tiny-teacher.json").read_text())["unet"]


def _modules_after(code: str) -> list[str]:
    """Top-level heavy modules present in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = ("import sys\n" + code + "\nprint(' '.join(m for m in ('diffusers', 'transformers', 'peft', 'scipy', "
             "'timm', 'torch._dynamo') if m in sys.modules))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_lean_path_imports_neither_diffusers_nor_transformers() -> None:
    """Importing the modules, loading the bundle and running all three nets pulls in none of the heavy
    libraries (nor torch._dynamo, which meta-device ``normal_`` init would import: seconds of CPU)."""
    assert _modules_after("import fewstep.nodes.zoo.lean, fewstep.nodes.zoo.builtin") == []
    run = ("import torch\nfrom fewstep.nodes.zoo import builtin\n"
           "b = builtin.load_builtin(builtin.BUILTIN_CHECKPOINT, 'cpu')\n"
           "s, _ = b.text_encoder.encode(['a red circle'])\n"
           "b.vae.decode(b.unet(torch.zeros(1, 4, 16, 16), 5, encoder_hidden_states=s).sample)\n"
           "b.vae.encode(torch.zeros(1, 3, 64, 64))")
    assert _modules_after(run) == []
