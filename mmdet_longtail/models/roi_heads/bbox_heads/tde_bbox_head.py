"""TDE bbox head (work in progress)."""
