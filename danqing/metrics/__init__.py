"""Evaluation: feature extractors, distribution scores, diversity and memorisation."""
from .diversity import (
    Memorisation,
    class_coverage,
    diversity_ratio,
    mean_pairwise_distance,
    memorisation,
    near_duplicate_rate,
    nearest,
)
from .efficientnet import (
    EFFICIENTNET_FILE,
    EFFICIENTNET_RESIZE,
    EfficientNetLite0,
    find_efficientnet,
    load_state_by_order,
    state_shapes,
)
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
    bootstrap,
    classifier_score,
    density_coverage,
    fid,
    fid_from_stats,
    fid_low_rank,
    kid,
    kth_neighbour_distance,
    load_stats,
    pairwise_distances,
    precision_recall,
    save_stats,
    stats,
)

__all__ = [
    "EFFICIENTNET_FILE", "EFFICIENTNET_RESIZE", "EfficientNetLite0", "FID_MIN_N", "INCEPTION_RESIZE", "Inception",
    "Memorisation", "MetricsError", "SmallSampleWarning", "bootstrap", "class_coverage", "classifier_score",
    "density_coverage", "diversity_ratio", "extract", "fid", "fid_from_stats", "fid_low_rank", "find_efficientnet",
    "find_inception", "kid", "kth_neighbour_distance", "load_state_by_order", "load_stats",
    "mean_pairwise_distance", "memorisation", "near_duplicate_rate", "nearest", "pairwise_distances",
    "precision_recall", "resize_tf_bilinear", "save_stats", "state_shapes", "stats", "to_uint8",
]
