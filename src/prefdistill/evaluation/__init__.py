"""Grading a run's test generations: the evaluation rows, metrics and cluster-bootstrap intervals."""
