"""Local models and KL-constrained trajectory optimisation (guided policy search's inner loop)."""
