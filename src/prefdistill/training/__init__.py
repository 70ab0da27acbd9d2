"""The training loop, its resumable state and the best-checkpoint keeper."""
