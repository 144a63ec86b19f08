"""attnlab: what self-attention can and cannot learn, as a Hydra + Lightning research codebase."""

__version__ = "0.1.0"
