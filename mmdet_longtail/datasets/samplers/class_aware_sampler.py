"""Class-aware sampler (work in progress)."""
