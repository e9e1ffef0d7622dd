"""danqing (丹青, "painting"): every family of AI painting algorithms under one protocol."""
from .version import __version__

__all__ = ["__version__", "load"]


def load(name_or_path: str = "emoji", *, device: str = "cpu", scorer: str = "emoji-scorer"):
    """A painter: a bundled model by name ("emoji") or a run/checkpoint folder, with the prompt-consistency
    scorer its ``best_of`` ranks with.  See danqing.pipeline."""
    from .pipeline import load as _load
    return _load(name_or_path, device=device, scorer=scorer)
