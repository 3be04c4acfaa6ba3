"""Repeat Factor Sampling dataset wrapper (work in progress)."""
