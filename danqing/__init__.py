"""danqing (丹青, "painting"): every family of AI painting algorithms under one protocol."""
__version__ = "0.1.0"


def load(name_or_path: str = "emoji", *, device: str = "cpu", scorer: str = "emoji-scorer"):
    """A painter: a bundled model by name ("emoji") or a run/checkpoint folder, with the prompt-consistency
    scorer its ``best_of`` ranks with.  See danqing.pipeline."""
    from .pipeline import load as _load
    return _load(name_or_path, device=device, scorer=scorer)
