"""DD on a tiny random teacher (seconds on CPU): the pair map is the teacher's, the pair store resumes, the
generator has the right shapes and its loss falls, and the samplers keep what they promise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fewstep.nodes.core.train.loop import Checkpointer
from fewstep.nodes.dd.flow import flow_space
from fewstep.nodes.dd.generator import DDGenerator, partial_inputs
from fewstep.nodes.dd.pairs import PairSpec, PairStore, build_pairs
from fewstep.nodes.dd.sampling import sample_dd, sample_dd_teacher, sample_marginals, sample_parallel
from fewstep.nodes.dd.teacher import TeacherConditional, teacher_flow_tokens
from fewstep.nodes.dd.train import DDTrainConfig, load_generator, save_generator, train_dd
from fewstep.nodes.zoo.ar.models import ARConfig, ARTransformer
from fewstep.nodes.zoo.ar.tokenizer import VQConfig, VQTokenizer

L, K, D, C = 16, 12, 4, 8


@pytest.fixture(scope="module")
def teacher() -> ARTransformer:
    torch.manual_seed(0)
    model = ARTransformer(ARConfig(vocab_size=K, seq_len=L, dim=32, n_layers=2, n_heads=2, cond_dim=C))
    with torch.no_grad():                              # sharper than N(0, 0.02) init: distinct conditionals
        model.output.weight.mul_(40)
    return model.eval()


@pytest.fixture(scope="module")
def book() -> torch.Tensor:
    return flow_space(torch.randn(K, D, generator=torch.Generator().manual_seed(1)))


def test_teacher_conditional_with_cache_equals_full_forward(teacher: ARTransformer) -> None:
    cond = torch.randn(3, C)
    tokens = torch.randint(0, K, (3, L))
    full = torch.log_softmax(teacher(tokens, cond).float(), -1)                 # [3, L, K]
    step = TeacherConditional(teacher, cond)
    got = torch.stack([step(tokens[:, :i]) for i in range(L)], 1)
    assert torch.allclose(got, full, atol=1e-5)


def test_flow_tokens_follow_the_teacher_and_continue_from_a_prefix(teacher: ARTransformer, book: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(3)
    cond, noise = torch.randn(4, C, generator=gen), torch.randn(4, L, D, generator=gen)
    tokens = teacher_flow_tokens(teacher, noise, cond, book)
    assert tokens.shape == (4, L)
    assert torch.equal(tokens, teacher_flow_tokens(teacher, noise, cond, book))          # deterministic
    cont = teacher_flow_tokens(teacher, noise, cond, book, prefix=tokens[:, :5])
    assert torch.equal(cont, tokens)                                                     # same noise, same tokens
    other = noise.clone()
    other[:, 7:] = torch.randn(4, L - 7, D, generator=gen)
    changed = teacher_flow_tokens(teacher, other, cond, book)
    assert torch.equal(changed[:, :7], tokens[:, :7])                                    # token i depends on ε_≤i
    assert not torch.equal(changed, tokens)


def _decode_fn(teacher: ARTransformer, book: torch.Tensor, calls: list[int]):
    def run(noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        calls.append(len(noise))
        return teacher_flow_tokens(teacher, noise, cond, book)
    return run


def test_pair_store_resumes_to_the_same_files(tmp_path: Path, teacher: ARTransformer, book: torch.Tensor) -> None:
    prompts = ["a", "b", "c"]
    conds = torch.randn(3, C, generator=torch.Generator().manual_seed(4))
    spec = PairSpec(count=10, seq_len=L, dim=D, vocab=K, shard_size=4, seed=5)
    calls: list[int] = []
    full = build_pairs(PairStore(tmp_path / "full"), spec, prompts, conds, _decode_fn(teacher, book, calls)).load()
    part = PairStore(tmp_path / "part")
    build_pairs(part, spec, prompts, conds, _decode_fn(teacher, book, calls))
    part.shard_path(1).unlink()                                   # an interrupted build: shard 1 missing
    calls.clear()
    resumed = build_pairs(part, spec, prompts, conds, _decode_fn(teacher, book, calls)).load()
    assert calls == [4]                                           # only the missing shard was recomputed
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert full["noise"].shape == (10, L, D) and full["tokens"].shape == (10, L)
    index = full["prompt_index"]
    want = teacher_flow_tokens(teacher, full["noise"], conds[index], book)
    assert torch.equal(part.conds(), conds) and part.prompts() == prompts
    assert torch.equal(full["tokens"], want)
    with pytest.raises(ValueError, match="other settings"):
        build_pairs(part, PairSpec(count=10, seq_len=L, dim=D, vocab=K, shard_size=4, seed=6), prompts, conds,
                    _decode_fn(teacher, book, calls))


def test_teacher_tag_names_the_checkpoint(teacher: ARTransformer) -> None:
    import copy

    from fewstep.nodes.dd.pairs import teacher_tag

    tag = teacher_tag("ar", teacher)
    assert tag.startswith("ar@") and len(tag) == len("ar@") + 16
    assert teacher_tag("ar", copy.deepcopy(teacher)) == tag                 # same weights, same tag
    later = copy.deepcopy(teacher)
    with torch.no_grad():
        next(later.parameters()).view(-1)[0] += 1e-4                        # one weight moved: another checkpoint
    assert teacher_tag("ar", later) != tag


def test_generator_shapes_and_init_from_teacher(teacher: ARTransformer, book: torch.Tensor) -> None:
    gen = DDGenerator.from_teacher(teacher, book)
    noise, cond = torch.randn(2, L, D), torch.randn(2, C)
    logits, cont = gen(noise, 0, cond)
    assert logits.shape == (2, L, K) and cont.shape == (2, L, D)
    assert torch.equal(gen.ar.output.weight, teacher.output.weight)
    assert not hasattr(gen.ar, "tok_embeddings")
    with pytest.raises(ValueError, match="DDGenerator"):
        gen(torch.randn(2, L - 1, D), 0, cond)


def test_partial_inputs_keep_codewords_before_t_and_noise_after(book: torch.Tensor) -> None:
    tokens, noise = torch.randint(0, K, (2, L)), torch.randn(2, L, D)
    x = partial_inputs(tokens, noise, torch.tensor([0, 5]), book)
    assert torch.equal(x[0], noise[0])
    assert torch.equal(x[1, :5], book[tokens[1, :5]]) and torch.equal(x[1, 5:], noise[1, 5:])


def test_loss_falls_in_training_and_generator_learns_the_pairs(tmp_path: Path, teacher: ARTransformer,
                                                               book: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(7)
    conds = torch.randn(4, C, generator=gen)
    noise = torch.randn(64, L, D, generator=gen)
    index = torch.randint(0, 4, (64,), generator=gen)
    tokens = teacher_flow_tokens(teacher, noise, conds[index], book)
    pairs = {"noise": noise, "tokens": tokens, "prompt_index": index}
    tok = VQTokenizer(VQConfig(image_size=8, patch=2, dim=D, codebook_size=K))
    cfg = DDTrainConfig(steps=60, batch_size=32, lr=3e-3, warmup=5, t_list=(0, 8), patch_weight=0.5)
    model, state = train_dd(teacher, book, pairs, conds, cfg, tokenizer=tok,
                            checkpointer=Checkpointer(tmp_path / "run", every=30))
    assert len(state.losses) == 60
    assert sum(state.losses[-10:]) / 10 < 0.5 * sum(state.losses[:5]) / 5
    before = sample_dd(DDGenerator.from_teacher(teacher, book).eval(), noise, conds[index], (0,))
    one = sample_dd(model, noise, conds[index], (0,))
    # 60 steps on 64 pairs: the untrained copy matches ~1/K of the tokens, the trained one far more
    assert (one == tokens).float().mean() > (before == tokens).float().mean() + 0.25
    # resume: a second call finds the final checkpoint and runs no step
    again, resumed = train_dd(teacher, book, pairs, conds, cfg, tokenizer=tok,
                              checkpointer=Checkpointer(tmp_path / "run", every=30))
    assert resumed.resumed_from == 60 and resumed.losses == state.losses
    path = save_generator(model, tmp_path / "dd.safetensors", {"teacher": "tiny"})
    loaded, meta = load_generator(path)
    assert meta["teacher"] == "tiny" and torch.equal(sample_dd(loaded, noise, conds[index]), sample_dd(model.float(), noise, conds[index]))


def test_samplers_keep_prefixes_and_steps(teacher: ARTransformer, book: torch.Tensor) -> None:
    gen = DDGenerator.from_teacher(teacher, book).eval()
    noise, cond = torch.randn(3, L, D), torch.randn(3, C)
    one = sample_dd(gen, noise, cond, (0,))
    two = sample_dd(gen, noise, cond, (0, 6))
    assert torch.equal(two[:, :6], one[:, :6])
    with pytest.raises(ValueError, match="t_list"):
        sample_dd(gen, noise, cond, (3,))
    mixed = sample_dd_teacher(gen, teacher, noise, cond, dd_prefix=4, switch=10)
    assert torch.equal(mixed[:, :4], one[:, :4])
    teacher_rest = teacher_flow_tokens(teacher, noise, cond, book, prefix=one[:, :4], until=10)
    assert torch.equal(mixed[:, :10], teacher_rest)
    full_teacher = sample_dd_teacher(gen, teacher, noise, cond, dd_prefix=0, switch=L)
    assert torch.equal(full_teacher, teacher_flow_tokens(teacher, noise, cond, book))


def test_naive_baselines_shapes_and_marginals(teacher: ARTransformer) -> None:
    probs = torch.zeros(2, L, K)
    probs[..., 3] = 1.0
    assert torch.equal(sample_marginals(probs), torch.full((2, L), 3))
    draft = torch.randint(0, K, (2, L))
    out = sample_parallel(teacher, draft, torch.randn(2, C), cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, L) and out.dtype == torch.long


def test_shipped_generator_was_distilled_from_the_shipped_teacher() -> None:
    """The shipped generator's pairs came from the AR model the nodes load, at the CFG its sampler uses."""
    from fewstep.nodes.dd.pairs import teacher_tag
    from fewstep.nodes.dd.weights_io import load_shipped_generator
    from fewstep.nodes.zoo.ar.builtin import load_ar

    _, meta = load_shipped_generator()
    assert meta["pair_teacher"] == teacher_tag("fewstep-tiny-ar", load_ar())
    assert meta["pair_cfg"] == meta["eval_setup"]["cfg"] == 3.0
