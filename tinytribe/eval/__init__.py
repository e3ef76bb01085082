"""Evaluation: metrics, ROIs, noise ceilings, baselines, reports and plots."""
