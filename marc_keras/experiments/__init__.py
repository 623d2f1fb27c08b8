"""Runs and studies: open, fit and encode a run, evaluate, compare, probe, rank.

The only layer that orchestrates the others; nothing below it imports it.
"""
