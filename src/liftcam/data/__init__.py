"""Image loading, preprocessing and the bundled sample photos."""

from .images import Preprocessing, find_images, load_image, to_rgb
from .samples import sample_photos

__all__ = ["Preprocessing", "find_images", "load_image", "sample_photos", "to_rgb"]
