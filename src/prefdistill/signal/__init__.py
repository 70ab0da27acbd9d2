"""The teacher's signal during training: the top-k cache, a served teacher, its fingerprint and per-row failures."""
