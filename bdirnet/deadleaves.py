"""Procedural "dead leaves" images: random occluding discs with scale-invariant radii.

Dead leaves images reproduce the edge and scale statistics of natural photos (Lee, Mumford & Huang 2001), and
restoration networks trained on them come close to networks trained on photos (Achddou, Gousseau & Ladjal,
"Synthetic images as a regularity prior for image restoration neural networks", SSVM 2021). They cost no
download; the training stream makes them on the fly for a share of its rows (``pairs.dead_leaves_share``).

Here: radii follow the scale-invariant density ``p(r) ∝ r^-3`` on ``[r_min, r_max]``; discs fall front to back
(each covers only what earlier discs left free) until the square is covered; each disc's colour is a pixel of a
real photo crop (natural colour statistics, the dataset's own). The image is rendered at ``supersample``× and
box-filtered down, so edges are anti-aliased like a camera's, not aliased staircases.
"""

from __future__ import annotations

import numpy as np

MAX_DISCS = 20_000


def disc_radii(rng: np.random.Generator, count: int, r_min: float, r_max: float) -> np.ndarray:
    """``count`` radii with density ``∝ r^-3`` on ``[r_min, r_max]`` (inverse CDF)."""
    if not 0 < r_min < r_max:
        raise ValueError(f"dead leaves: need 0 < r_min < r_max, got {r_min}, {r_max}")
    u = rng.random(count)
    return (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5


def dead_leaves(
    size: int,
    seed: int,
    palette: np.ndarray,
    *,
    r_min: float = 2.0,
    r_max: float | None = None,
    supersample: int = 2,
) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 dead leaves image.

    Args:
        size: side in pixels.
        seed: the image is a pure function of ``(size, seed, palette, r_min, r_max, supersample)``.
        palette: uint8 pixels ``(..., 3)`` the disc colours are drawn from (e.g. a photo crop).
        r_min, r_max: disc radii in output pixels (``r_max`` defaults to ``size / 2``).
        supersample: render at this factor, then average ``supersample²`` blocks.
    """
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if size < 1 or supersample < 1 or len(colours) == 0:
        raise ValueError(f"dead leaves: size {size}, supersample {supersample}, {len(colours)} palette colours")
    rng = np.random.default_rng(seed)
    side = size * supersample
    scale = float(supersample)
    radii = disc_radii(rng, MAX_DISCS, r_min * scale, (r_max if r_max is not None else size / 2) * scale)
    centres = rng.uniform(0, side, size=(MAX_DISCS, 2))
    picks = colours[rng.integers(len(colours), size=MAX_DISCS)]
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    free = np.ones((side, side), dtype=bool)
    remaining = side * side
    for radius, (cy, cx), colour in zip(radii, centres, picks, strict=True):
        top, bottom = max(0, int(cy - radius)), min(side, int(cy + radius) + 1)
        left, right = max(0, int(cx - radius)), min(side, int(cx + radius) + 1)
        ys = np.arange(top, bottom)[:, None] + 0.5 - cy
        xs = np.arange(left, right)[None, :] + 0.5 - cx
        window = free[top:bottom, left:right]
        covered = (ys * ys + xs * xs <= radius * radius) & window
        count = int(covered.sum())
        if count:
            canvas[top:bottom, left:right][covered] = colour
            window[covered] = False
            remaining -= count
            if remaining == 0:
                break
    if remaining:  # not covered after MAX_DISCS discs (tiny r_max): the background takes the last colour
        canvas[free] = picks[-1]
    if supersample > 1:
        blocks = canvas.reshape(size, supersample, size, supersample, 3).astype(np.float32).mean(axis=(1, 3))
        return np.round(blocks).astype(np.uint8)
    return canvas
