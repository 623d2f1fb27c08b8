"""Data and checks shared by the tests; fixtures live in conftest.py.

Importing this module loads numpy only; the helpers that need Keras import
`marc_keras` (which picks the torch backend) before `keras` when called.

Tests import these as `from helpers import ...`: pytest puts this folder on
sys.path, as it does for the rootdir conftest.
"""

import numpy as np

GENRES = ("action", "comedy", "drama", "horror")
TINY_WORDS = ("the", "a", "movie", "user", "likes", "film", "female", "male", *GENRES)


def low_rank_vectors(rows=500, dim=16, rank=3, noise=0.05, seed=0):
    """Vectors `latent @ mixing + noise` off the origin, and their latent factors."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(rows, rank))
    vectors = latent @ rng.normal(size=(rank, dim)) + noise * rng.normal(size=(rows, dim)) + 3.0
    return vectors, latent


def explained_fraction(codes, target):
    """R^2 of the best affine map from `codes` to `target`."""
    design = np.c_[codes, np.ones(len(codes))]
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = ((design @ coefficients - target) ** 2).sum()
    return 1.0 - residual / ((target - target.mean(axis=0)) ** 2).sum()


def genre_match_task(count, seed=0):
    """User and item texts whose click label is in the texts: genres match."""
    rng = np.random.default_rng(seed)
    user_genres = rng.choice(GENRES, count)
    item_genres = np.where(rng.random(count) < 0.5, user_genres, rng.choice(GENRES, count))
    users = [f"user likes {genre}" for genre in user_genres]
    items = [f"the {genre} movie" for genre in item_genres]
    return users, items, (user_genres == item_genres).astype("float32")


def numpy_hsic(x, y, sigma_x=None, sigma_y=None, scale="normalised"):
    """Direct transcription of tr(K H L H) / (B-1)^2 (or the bare trace) with Gaussian kernels."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = x.shape[0]

    def kernel(a, sigma):
        d2 = np.array([[np.sum((a[i] - a[j]) ** 2) for j in range(n)] for i in range(n)])
        if sigma is None:
            pairs = d2[np.triu_indices(n, k=1)]
            s2 = max(np.median(pairs), 1e-12)
        else:
            s2 = sigma**2
        return np.exp(-d2 / (2 * s2))

    h = np.eye(n) - np.ones((n, n)) / n
    trace = np.trace(kernel(x, sigma_x) @ h @ kernel(y, sigma_y) @ h)
    return trace if scale == "trace" else trace / (n - 1) ** 2


def hidden_states_of_both(layer, reference, tokens):
    """Every layer's hidden states of `tokens`, numpy (N, T, d) each: the
    `LoRABackbone` `layer`'s and the transformers model `reference`'s."""
    import marc_keras  # noqa: F401  (selects the torch backend before keras loads)

    import keras
    import torch

    inputs = dict(tokens)
    if layer._segment_input:
        inputs["segment_ids"] = np.zeros_like(tokens["token_ids"])
    states = layer._hidden_states(inputs, training=False)
    ours = [keras.ops.convert_to_numpy(state) for state in states]
    with torch.no_grad():
        theirs = reference(
            input_ids=torch.tensor(tokens["token_ids"], dtype=torch.long),
            attention_mask=torch.tensor(tokens["padding_mask"], dtype=torch.long),
            output_hidden_states=True,
        ).hidden_states
    return ours, [state.numpy() for state in theirs]


def tiny_hub_backbone(vocabulary_size, architecture="bert", seed=0, num_layers=2):
    """A random keras-hub BERT or Llama backbone of width 16, built under the global policy."""
    import marc_keras  # noqa: F401  (selects the torch backend before keras loads)

    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    common = dict(
        vocabulary_size=vocabulary_size, num_layers=num_layers, hidden_dim=16, intermediate_dim=32
    )
    if architecture == "bert":
        return keras_hub.models.BertBackbone(num_heads=2, max_sequence_length=32, **common)
    return keras_hub.models.LlamaBackbone(num_query_heads=2, num_key_value_heads=1, **common)


def _numpy_outputs(outputs):
    import keras

    return keras.tree.map_structure(
        lambda x: np.asarray(keras.ops.convert_to_numpy(x), "float32"), outputs
    )


def _assert_outputs_close(actual, expected, what, rtol=1e-6, atol=1e-6):
    import keras

    keras.tree.assert_same_structure(actual, expected)
    for got, want in zip(keras.tree.flatten(actual), keras.tree.flatten(expected)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


def _symbolic_input(data, name):
    """`keras.Input`s of the structure of `data` (an array or a dict of arrays)."""
    import keras

    def one(x, name):
        x = np.asarray(x)
        return keras.Input(shape=x.shape[1:], dtype=str(x.dtype), name=name)

    if isinstance(data, dict):
        return {key: one(value, key) for key, value in data.items()}
    return one(data, name)


def _call(layer_or_model, inputs, call_kwargs, positional):
    if positional:
        return layer_or_model(*inputs, **call_kwargs)
    return layer_or_model(inputs, **call_kwargs)


def run_layer_test(
    layer_cls,
    init_kwargs,
    inputs,
    *,
    call_kwargs=None,
    prepare=None,
    expected_output_shape=None,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
    run_saving_test=True,
    run_mixed_precision_test=True,
    mixed_precision_tolerance=0.05,
):
    """The checks of keras' `TestCase.run_layer_test`, for one layer class.

    1. Builds `layer_cls(**init_kwargs)` and calls it on `inputs`.
    2. `get_config` -> `from_config` gives the same config, and, with the
       weights copied over, the same outputs.
    3. A `keras.Model` wrapping the layer, saved to a `.keras` file and read
       back with plain `keras.saving.load_model`, gives the same outputs.
    4. Built anew under the global policy "mixed_bfloat16" (restored after)
       with the same weights: bfloat16 floating outputs of the same shape,
       float32 variables, finite values within `mixed_precision_tolerance`
       (max abs difference over max abs float32 output) of the float32 ones.
    5. Optionally, the number of trainable and non-trainable weights.

    Args:
        layer_cls: the layer (or model) class.
        init_kwargs: constructor arguments, or a function returning them; a
            function is called again under the mixed policy, so that nested
            objects (a keras-hub backbone) take that policy too.
        inputs: one input (array or dict of arrays), or a tuple of inputs
            passed as separate positional arguments.
        call_kwargs: keyword arguments of every call.
        prepare: optional function applied to the first layer after it is
            built (fill tables, perturb zero-initialised weights); the other
            layers get its weights.
        expected_output_shape: shape (or structure of shapes) of the output.
        expected_num_trainable_weights: checked when given.
        expected_num_non_trainable_weights: checked when given.
        run_saving_test: do step 3.
        run_mixed_precision_test: do step 4.
        mixed_precision_tolerance: the relative tolerance of step 4.

    Returns:
        The built layer and its outputs (numpy), for further checks.
    """
    import tempfile
    from pathlib import Path

    import marc_keras  # noqa: F401  (selects the torch backend before keras loads)

    import keras

    call_kwargs = dict(call_kwargs or {})
    positional = isinstance(inputs, tuple)

    def make_layer():
        return layer_cls(**(init_kwargs() if callable(init_kwargs) else init_kwargs))

    # 1. Build and call.
    layer = make_layer()
    outputs = _call(layer, inputs, call_kwargs, positional)
    if prepare is not None:
        prepare(layer)
        outputs = _call(layer, inputs, call_kwargs, positional)
    expected = _numpy_outputs(outputs)
    for value in keras.tree.flatten(expected):
        assert np.all(np.isfinite(value)), f"{layer_cls.__name__}: non-finite output"
    if expected_output_shape is not None:
        if isinstance(expected, dict):
            shapes = {key: tuple(value.shape) for key, value in expected.items()}
            assert shapes == {key: tuple(s) for key, s in expected_output_shape.items()}
        else:
            assert tuple(expected.shape) == tuple(expected_output_shape)
    counts = len(layer.trainable_weights), len(layer.non_trainable_weights)
    for count, want, kind in zip(
        counts,
        (expected_num_trainable_weights, expected_num_non_trainable_weights),
        ("trainable", "non-trainable"),
    ):
        assert want is None or count == want, f"{count} {kind} weights, expected {want}"
    weights = layer.get_weights()

    # 2. get_config -> from_config.
    config = layer.get_config()
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config
    _call(clone, inputs, call_kwargs, positional)  # builds
    clone.set_weights(weights)
    _assert_outputs_close(
        _numpy_outputs(_call(clone, inputs, call_kwargs, positional)), expected, "from_config"
    )
    assert (len(clone.trainable_weights), len(clone.non_trainable_weights)) == counts

    # 3. A .keras file of a model wrapping the layer.
    if run_saving_test:
        symbolic = (
            tuple(_symbolic_input(x, f"input_{index}") for index, x in enumerate(inputs))
            if positional
            else _symbolic_input(inputs, "input")
        )
        model_inputs = list(symbolic) if positional else symbolic
        model = keras.Model(model_inputs, _call(layer, symbolic, call_kwargs, positional))
        model_data = list(inputs) if positional else inputs
        _assert_outputs_close(_numpy_outputs(model(model_data)), expected, "wrapping model")
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "layer.keras"
            model.save(path)
            loaded = keras.saving.load_model(path)
        _assert_outputs_close(_numpy_outputs(loaded(model_data)), expected, "saved and loaded")

    # 4. Mixed precision.
    if run_mixed_precision_test:
        previous = keras.config.dtype_policy()
        try:
            keras.config.set_dtype_policy("mixed_bfloat16")
            mixed = make_layer()
            _call(mixed, inputs, call_kwargs, positional)  # builds
            mixed.set_weights(weights)
            mixed_outputs = _call(mixed, inputs, call_kwargs, positional)
        finally:
            keras.config.set_dtype_policy(previous)
        for variable in mixed.weights:
            dtype = keras.backend.standardize_dtype(variable.dtype)
            assert "bfloat16" not in dtype, f"{variable.path} is stored as {dtype}"
        keras.tree.assert_same_structure(mixed_outputs, outputs)
        assert mixed.compute_dtype == "bfloat16", mixed.compute_dtype
        for got, want in zip(keras.tree.flatten(mixed_outputs), keras.tree.flatten(expected)):
            dtype = keras.backend.standardize_dtype(got.dtype)
            if "float" in dtype:
                assert dtype == "bfloat16", f"mixed_bfloat16 output has dtype {dtype}"
            got = np.asarray(keras.ops.convert_to_numpy(got), "float32")
            assert got.shape == want.shape
            assert np.all(np.isfinite(got)), "non-finite mixed_bfloat16 output"
            scale = max(float(np.abs(want).max()), 1e-6)
            error = float(np.abs(got - want).max())
            assert error <= mixed_precision_tolerance * scale, (
                f"mixed_bfloat16 output differs from float32 by {error:.3g} "
                f"(max |float32 output| {scale:.3g})"
            )
    return layer, expected


SIZES = {"train": 3000, "validation": 750, "test": 750}


def synthetic_features(unique_items=False, seed=0, sizes=SIZES):
    """Samples clicked when their item is "even" (10% label noise).

    With `unique_items`, every sample gets an item index of its own, so item
    ids carry nothing across splits and only an external item vector can
    tell even from odd items. Returns real `RankingFeatures` (built from
    arrays, not from a split) and that vector table.
    """
    from marc_keras.ranking.ranking_features import RankingFeatures

    rng = np.random.default_rng(seed)
    total = sum(sizes.values())
    even = rng.random(total) < 0.5
    item_index = (
        np.arange(1, total + 1)
        if unique_items
        else np.where(even, 2, 1) * rng.integers(1, 20, total)
    )
    num_items = int(item_index.max()) + 1
    item_vectors = np.zeros((num_items, 4), "float32")
    item_vectors[item_index, 0] = even
    labels = (even ^ (rng.random(total) < 0.1)).astype("float32")
    features = RankingFeatures.__new__(RankingFeatures)
    features.inputs, features.labels, features._tier_inputs = {}, {}, {}
    features.item_genres = rng.integers(0, 4, (num_items, 2)).astype("int32")
    features.genre_vocabulary = {f"g{i}": i for i in range(1, 4)}
    features.user_vocabulary = {f"u{i}": i for i in range(1, 51)}
    features.user_field_sizes = [3]
    start = 0
    for name, size in sizes.items():
        rows = slice(start, start + size)
        start += size
        features.inputs[name] = {
            "user": rng.integers(1, 51, size).astype("int32"),
            "item": item_index[rows].astype("int32"),
            "history_items": rng.integers(1, num_items, (size, 5)).astype("int32"),
            "history_ratings": rng.integers(1, 6, (size, 5)).astype("int32"),
            "user_fields": rng.integers(1, 3, (size, 1)).astype("int32"),
        }
        features.labels[name] = labels[rows]
    return features, item_vectors
