"""What every command shares: the usage error the CLI prints as one line, and reading a picture to paint from."""
from __future__ import annotations

from typing import Literal

import numpy as np


class UsageError(Exception):
    pass


def read_square(path: str, side: int, channels: int, fit: Literal["crop", "pad"] | None) -> np.ndarray:
    """A picture as uint8 (channels, side, side); a picture that is not square needs ``fit`` (the centre square,
    or the whole picture padded on white), so that nothing is cut off without the user saying so."""
    from PIL import Image

    from ..config import DataConfig
    from ..data.transforms import SkipImage, load_image

    try:
        with Image.open(path) as img:
            w, h = img.size
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder; give a picture file") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {path} as a picture ({e}); give a PNG, JPEG or WebP file") from None
    if w != h and fit is None:
        raise UsageError(f"{path} is {w}x{h}, not square: the model paints {side}x{side}; crop it, or pass "
                         "--fit crop (the centre square) or --fit pad (on white)")
    try:
        array = load_image(path, size=side, channels=channels, fit=fit or "crop", max_pixels=DataConfig().max_pixels)
    except SkipImage as e:
        raise UsageError(f"cannot use {path}: {e}") from None
    return array
