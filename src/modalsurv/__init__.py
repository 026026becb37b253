"""modalsurv: multimodal deep survival analysis."""
__version__ = "0.1.0"
