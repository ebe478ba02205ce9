"""The guidance-scale embedding equals diffusers' LatentConsistencyModelPipeline's."""

from __future__ import annotations

import numpy as np
import pytest

from lcm_lite.errors import UsageError
from lcm_lite.sampling.guidance_embedding import guidance_scale_embedding


def _diffusers_embedding(guidance_scale: float, batch_size: int, embedding_dim: int) -> np.ndarray:
    """What the diffusers pipeline computes: ``w = guidance_scale - 1``, repeated per image."""
    torch = pytest.importorskip("torch")
    pipelines = pytest.importorskip("diffusers.pipelines.latent_consistency_models")
    w = torch.tensor(guidance_scale - 1).repeat(batch_size)
    # a method that does not use its pipeline instance
    embed = pipelines.LatentConsistencyModelPipeline.get_guidance_scale_embedding
    return embed(None, w, embedding_dim=embedding_dim).numpy()


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("embedding_dim", [32, 256, 33])
@pytest.mark.parametrize("guidance_scale", [1.0, 1.5, 8.0, 14.0])
@pytest.mark.parity
def test_embedding_matches_diffusers(guidance_scale, embedding_dim, batch_size):
    ours = guidance_scale_embedding(guidance_scale, batch_size, embedding_dim)
    theirs = _diffusers_embedding(guidance_scale, batch_size, embedding_dim)

    assert ours.dtype == np.float32
    assert ours.shape == (batch_size, embedding_dim)
    # The angles reach 1000 * w radians: a one-ulp difference in a frequency (torch's float32 exp
    # is not correctly rounded) moves sin/cos by up to one float32 ulp of the largest angle.
    angle_ulp = float(np.spacing(np.float32(1000 * abs(guidance_scale - 1))))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6 + 2 * angle_ulp)


def test_scale_one_means_no_guidance_and_embeds_zero_angles():
    embedding = guidance_scale_embedding(1.0, 2, 8)

    np.testing.assert_array_equal(embedding, [[0, 0, 0, 0, 1, 1, 1, 1]] * 2)


def test_odd_dimension_is_zero_padded_at_the_end():
    embedding = guidance_scale_embedding(8.0, 1, 33)

    assert embedding[0, -1] == 0
    np.testing.assert_array_equal(embedding[:, :32], guidance_scale_embedding(8.0, 1, 32))


@pytest.mark.parametrize(
    ("batch_size", "embedding_dim", "message"),
    [
        (0, 256, "batch_size must be at least 1"),
        (1, 3, "embedding_dim must be at least 4"),
    ],
)
def test_impossible_sizes_are_usage_errors(batch_size, embedding_dim, message):
    with pytest.raises(UsageError, match=message):
        guidance_scale_embedding(8.0, batch_size, embedding_dim)
