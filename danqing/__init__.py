"""danqing (丹青, "painting"): every family of AI painting algorithms under one protocol."""
__version__ = "0.1.0"
