"""Generative recommendation: an LLM writes the next item's title (BIGRec), decoded in
language space (beam search, greedy + grounding) or in latent space (L2D)."""
