"""Diagnostics: gradient flow through time, gate statistics and the long-range task."""
