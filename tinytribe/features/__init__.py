"""Stages 0-1: media decoding, word events, the tiny backbones, and the feature cache."""
