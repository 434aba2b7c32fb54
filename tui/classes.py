"""Class names per data set and ten colour-blind-aware colours for them (no Textual here)."""

from __future__ import annotations

NAMES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}
# Okabe & Ito's colour-blind-safe set (black left out: the background is dark), plus grey, white and
# a pale pink; points are also drawn as their class's digit, so no two classes rely on colour alone.
PALETTE = ((230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
           (204, 121, 167), (153, 153, 153), (255, 255, 255), (255, 182, 193))


def class_names(dataset: str) -> tuple[str, ...]:
    """Names of classes 0..9 ("0".."9" for digits and unknown data sets)."""
    return NAMES.get(dataset, tuple(str(d) for d in range(10)))
