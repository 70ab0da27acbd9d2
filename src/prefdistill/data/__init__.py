"""Task data: where rows come from, the leakage-free splits, resumable sampling and the preference pairs."""
