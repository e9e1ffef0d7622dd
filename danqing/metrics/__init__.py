"""Evaluation: feature extractors and distribution scores (FID, KID)."""
from .features import (
    INCEPTION_RESIZE,
    Inception,
    MetricsError,
    extract,
    find_inception,
    resize_tf_bilinear,
    to_uint8,
)
from .scores import (
    FID_MIN_N,
    SmallSampleWarning,
    fid,
    fid_from_stats,
    kid,
    load_stats,
    save_stats,
    stats,
)

__all__ = [
    "FID_MIN_N", "INCEPTION_RESIZE", "Inception", "MetricsError", "SmallSampleWarning", "extract", "fid",
    "fid_from_stats", "find_inception", "kid", "load_stats", "resize_tf_bilinear", "save_stats", "stats", "to_uint8",
]
