"""Layer-wise probing: every backbone layer's vectors scored downstream (the MRA curve)."""
