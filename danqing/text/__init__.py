"""Text conditioning: a frozen sentence encoder and an on-disk cache of caption embeddings."""
from .cache import EmbeddingCache
from .encoder import (
    MAX_TOKENS,
    TextEncoder,
    TextEncoderError,
    TextWarning,
    find_encoder,
    mean_pool,
    text_encoder_for,
)

__all__ = ["MAX_TOKENS", "EmbeddingCache", "TextEncoder", "TextEncoderError", "TextWarning", "find_encoder",
           "mean_pool", "text_encoder_for"]
