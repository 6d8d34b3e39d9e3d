"""amlc: product images to entity values, the way the Amazon ML Challenge 2024 asks."""

__version__ = "0.1.0"
