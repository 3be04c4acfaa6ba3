"""TDE RoI heads (work in progress)."""
