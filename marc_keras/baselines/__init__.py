"""Compression baselines (PCA, autoencoder, VAE) and the registry of compared methods."""
