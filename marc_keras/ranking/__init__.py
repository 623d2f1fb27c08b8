"""The downstream CTR ranker: features, DCNv2, expert adaptors, metrics, TFRS.

Kept free of imports: the TFRS child process (`tfrs_ranker.py`, run as a
file) imports `marc_keras.ranking.ranking_features` and must not load Keras 3
or torch on the way.
"""
