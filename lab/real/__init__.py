"""Real pretrained pairs offline: models shipped on PyPI, converted once, and steered siblings."""
