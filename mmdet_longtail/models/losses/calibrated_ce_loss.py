"""Post-hoc calibrated cross-entropy (NorCal) (work in progress)."""
