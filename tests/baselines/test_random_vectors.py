import numpy as np

from marc_keras.baselines.random_vectors import RandomVectors


def test_random_vectors_match_the_reference_spread_and_repeat_per_seed():
    reference = np.random.default_rng(0).normal(size=(5000, 3)) * [0.1, 1.0, 10.0]
    draw = RandomVectors(reference, seed=7)
    users = draw.draw(20000, stream=0)
    np.testing.assert_allclose(users.std(axis=0), reference.std(axis=0), rtol=0.03)
    np.testing.assert_array_equal(users, RandomVectors(reference, seed=7).draw(20000, stream=0))
    assert not np.allclose(users[:10], draw.draw(20000, stream=1)[:10])
    assert not np.allclose(users[:10], RandomVectors(reference, seed=8).draw(20000)[:10])
