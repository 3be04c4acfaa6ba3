"""tau-normalised classifier (work in progress)."""
