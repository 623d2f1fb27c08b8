"""A tiny random causal LM (keras-hub Llama) with a word-level tokenizer, for generative tests.

The vocabulary holds every word of the BIGRec prompt and of the given
titles, so prompts tokenize without unknown words; `<|endoftext|>` (id 0) is
padding and end-of-text, as in SmolLM2.
"""

import re

from helpers import tiny_hub_backbone

MOVIE_TITLES = {
    "1": "Heat (1995)",
    "2": "Toy Story (1995)",
    "3": "Casino (1995)",
    "4": "Heat (1995)",
    "5": "Toy Story 2 (1999)",
    "6": "Fargo (1996)",
}


def tiny_causal_tokenizer(titles=None, max_length=160):
    import marc_keras  # selects the torch backend before keras loads
    import tokenizers

    from marc_keras.generative.title_prompts import PromptTemplate

    titles = list(MOVIE_TITLES.values()) if titles is None else list(titles)
    text = PromptTemplate().render(list(titles)) + " ".join(f'"{title}"' for title in titles)
    words = ["<|endoftext|>", "[UNK]", *sorted(set(re.findall(r"\w+|[^\w\s]", text)))]
    tokenizer = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({word: index for index, word in enumerate(words)}, "[UNK]")
    )
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return marc_keras.TextTokenizer(tokenizer, max_length=max_length)


def tiny_generative_model(tokenizer, seed=0, lora_rank=2, lora_alpha=None, num_layers=2):
    """A `GenerativeRecommender` over a random 2-block Llama of width 16."""
    import marc_keras

    from marc_keras.generative.generative_recommender import GenerativeRecommender

    backbone = marc_keras.LoRABackbone(
        tiny_hub_backbone(tokenizer.vocabulary_size, "llama", seed, num_layers=num_layers),
        tokenizer=tokenizer,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        pooling="last",
    )
    return GenerativeRecommender(backbone)
