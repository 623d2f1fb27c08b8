import json

import numpy as np

import keras
import marc_keras
from helpers import genre_match_task


def test_encoder_outputs_equal_the_model_towers_in_input_order(make_tiny_marc):
    model = make_tiny_marc()
    users, items, _ = genre_match_task(10)
    encoder = model.encoder("item")
    vectors = encoder.encode(items, batch_size=3)
    assert vectors["compressed"].shape == (10, 8) and vectors["original"].shape == (10, 16)
    assert vectors["compressed"].dtype == np.float32
    outputs = model.predict(model.tokenize(users, items), verbose=0)
    np.testing.assert_allclose(vectors["compressed"], outputs["item_compressed"], atol=1e-5)
    np.testing.assert_allclose(vectors["original"], outputs["item_original"], atol=1e-5)


def test_encoder_is_a_frozen_copy(make_tiny_marc):
    model = make_tiny_marc()
    encoder = model.encoder()
    assert encoder.trainable_weights == []
    assert model.trainable_weights, "freezing the encoder must not freeze the model"
    before = encoder.encode(["the action movie"])["compressed"]
    users, items, labels = genre_match_task(32)
    model.compile(optimizer=keras.optimizers.Adam(1e-1))
    model.fit(model.tokenize(users, items), labels, batch_size=16, verbose=0)
    np.testing.assert_array_equal(encoder.encode(["the action movie"])["compressed"], before)


def test_encoder_round_trips_through_keras_file(make_tiny_marc, tmp_path):
    encoder = make_tiny_marc().encoder()
    encoder.save(tmp_path / "encoder.keras")
    loaded = keras.saving.load_model(tmp_path / "encoder.keras")
    texts = ["user likes comedy", "user likes the horror film"]
    np.testing.assert_array_equal(
        loaded.encode(texts)["compressed"], encoder.encode(texts)["compressed"]
    )
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(
        encoder.get_config(), sort_keys=True
    )


def test_empty_input_gives_empty_arrays(make_tiny_marc):
    vectors = make_tiny_marc().encoder().encode([])
    assert vectors["compressed"].shape == (0, 8) and vectors["original"].shape == (0, 16)


def test_minilm_encoder_end_to_end(minilm_path):
    model = marc_keras.MARC.from_preset(minilm_path, lora_rank=4, max_length=32)
    vectors = model.encoder().encode(["Heat (1995). Genres: Action, Crime, Thriller.", ""])
    assert vectors["compressed"].shape == (2, 128) and vectors["original"].shape == (2, 384)
    assert np.isfinite(vectors["compressed"]).all()


def test_verbose_encoding_off_a_terminal_logs_plain_lines(make_tiny_marc, capsys):
    encoder = make_tiny_marc().encoder()
    texts = ["user likes drama", "the horror movie", "a film"] * 5
    quiet = encoder.encode(texts, batch_size=4)["compressed"]
    loud = encoder.encode(texts, batch_size=4, verbose=True)["compressed"]
    captured = capsys.readouterr()
    np.testing.assert_array_equal(loud, quiet)
    assert "\x1b[" not in captured.out + captured.err
    # One line at the end (the 30-second interval never passes here).
    assert captured.err.strip().splitlines()[-1].startswith("15/15 texts encoded (100%)")


def test_encoder_without_compression_gives_the_pooled_state_and_round_trips(
    make_tiny_backbone, tmp_path
):
    backbone = make_tiny_backbone(pooling="last", architecture="llama")
    encoder = marc_keras.MARCEncoder(backbone, None)
    assert encoder.output_dims == {"original": 16}
    texts = ["user likes comedy", "the horror film"]
    vectors = encoder.encode(texts)
    assert set(vectors) == {"original"}
    np.testing.assert_allclose(
        vectors["original"],
        keras.ops.convert_to_numpy(backbone(backbone.tokenize(texts))),
        atol=1e-6,
    )
    encoder.save(tmp_path / "prompt-encoder.keras")
    loaded = keras.saving.load_model(tmp_path / "prompt-encoder.keras")
    assert loaded.compression is None
    np.testing.assert_allclose(loaded.encode(texts)["original"], vectors["original"], atol=1e-6)
