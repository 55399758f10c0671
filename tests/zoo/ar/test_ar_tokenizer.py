"""VQTokenizer: patch layout, exact re-encoding of codebook images, fitted round trip, k-means."""

from __future__ import annotations

import pytest
import torch

from fewstep.nodes.zoo import data
from fewstep.nodes.zoo.ar.tokenizer import VQConfig, VQTokenizer, fit_tokenizer, kmeans
from fewstep.nodes.zoo.ar.train import render_images

SMALL = VQConfig(dim=8, codebook_size=32)


@pytest.fixture(scope="module")
def fitted() -> tuple[VQTokenizer, torch.Tensor]:
    scenes = data.make_split("train", 48, seed=3)
    return fit_tokenizer(render_images(scenes), SMALL, kmeans_iters=8), render_images(data.make_split("heldout", 8))


def test_patchify_is_raster_order_and_inverts_exactly():
    tok = VQTokenizer(SMALL)
    x = torch.rand(2, 3, 64, 64)
    p = tok.patchify(x)
    assert p.shape == (2, 64, 192)
    # token 9 = grid row 1, column 1: pixels 8..15 x 8..15, channel-major
    assert torch.equal(p[0, 9].view(3, 8, 8), x[0, :, 8:16, 8:16])
    assert torch.equal(tok.unpatchify(p), x)


@pytest.mark.parametrize("which", ["random", "fitted"])
def test_codebook_images_re_encode_to_their_exact_tokens(which, fitted):
    tok = VQTokenizer(SMALL) if which == "random" else fitted[0]
    tokens = torch.randint(0, SMALL.codebook_size, (4, 64), generator=torch.Generator().manual_seed(0))
    images = tok.decode(tokens)
    assert images.shape == (4, 3, 64, 64)
    assert torch.equal(tok.encode(images), tokens)
    assert torch.allclose(tok.decode(tok.encode(images)), images, atol=1e-5)


def test_fitted_round_trip_of_real_renders_beats_the_mean_patch(fitted):
    tok, x = fitted
    rec = tok.decode(tok.encode(x))
    mean_only = tok.unpatchify(tok.mean.expand(x.shape[0], 64, -1))
    err, baseline = (rec - x).pow(2).mean(), (mean_only - x).pow(2).mean()
    # 32 codes over 8 PCA dims of 48 scenes: measured err/baseline ~0.2; a broken fit is ~1
    assert err < 0.5 * baseline
    cont = tok.decode_continuous(tok.encode_continuous(x))
    assert (cont - x).pow(2).mean() < err  # quantisation only adds error on top of the PCA projection


def test_pca_basis_is_orthonormal_and_latent_std_matches(fitted):
    tok, x = fitted
    eye = tok.basis.T @ tok.basis
    assert torch.allclose(eye, torch.eye(SMALL.dim), atol=1e-5)
    assert float(tok.latent_std) > 0


def test_bad_inputs_raise_clear_errors():
    tok = VQTokenizer(SMALL)
    with pytest.raises(ValueError, match="images must be"):
        tok.encode(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="token ids must be in"):
        tok.decode(torch.full((1, 64), SMALL.codebook_size))
    with pytest.raises(ValueError, match="multiple of patch"):
        VQConfig(image_size=60)


def test_kmeans_recovers_well_separated_centres():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = (centres[:, None] + 0.1 * torch.randn(3, 100, 2, generator=g)).reshape(-1, 2)
    found = kmeans(x, 3, 10, g)
    dist = torch.cdist(found, centres)
    assert dist.min(1).values.max() < 0.1   # every centre found within the noise level
    assert len(set(dist.argmin(1).tolist())) == 3
