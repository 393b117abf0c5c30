"""Turn a picture of a digit into the 784 pixels an MNIST network reads.

MNIST's digits are light ink on a black field, in [0, 1]: the ink was
size-normalised to fit a 20x20 box keeping its aspect ratio (with
antialiasing), then placed in a 28x28 field so that its centre of mass
sits at the centre. :func:`preprocess` does the same to any grey image:

1. invert it when its border is light (dark ink on paper);
2. a 28x28 image stops here: it is taken as an MNIST digit as it is;
3. level it: the border's median grey becomes 0 and the brightest ink 1;
4. crop to the bounding box of the ink (levels above ``INK``);
5. resize that box by area averaging so its longer side is 20 pixels;
6. paste it into 28x28 with its centre of mass, rounded to a whole pixel,
   at (14, 14), counting pixel ``i`` at coordinate ``i``: there MNIST's
   test digits have theirs (mean 14.0 in both axes, spread 0.3).

``hmnist/web/hmnist.js`` runs the same steps in the browser; the two are
kept step for step alike so a page and ``hmnist predict`` see the same
input. Reading image files needs Pillow (the ``image`` extra); the steps
themselves are NumPy only.

The ink box spans every pixel above ``INK``, so specks, shadows or a frame
beside the digit widen it and shrink the digit: a photo needs cropping to
the digit by hand before it reads well.
"""

import numpy as np

from .errors import HmnistError

SIDE = 28
BOX = 20
INK = 0.1
# Luma weights in thousandths: integer sums, then one division, so a grey
# pixel v reads as exactly v / 255.
_LUMA = np.array([299, 587, 114])


class ImageError(HmnistError):
    """An image cannot be read or holds no digit; the message is one line."""


def border(grey):
    """Return the pixels of the outer rows and columns of ``grey``."""
    return np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])


def invert_if_light(grey):
    """Return ``grey`` as light ink on dark: inverted if its border is light."""
    return 1 - grey if np.median(border(grey)) > 0.5 else grey


def level(grey):
    """Map the border's median grey to 0 and the maximum to 1, clipping.

    Raises
    ------
    ImageError
        When nothing is brighter than the background by more than ``INK``.
    """
    background, peak = np.median(border(grey)), grey.max()
    if peak - background <= INK:
        raise ImageError("no ink found: the image is blank")
    return np.clip((grey - background) / (peak - background), 0, 1)


def ink_box(grey):
    """Return ``(top, bottom, left, right)`` bounding the pixels above ``INK``."""
    rows = np.flatnonzero((grey > INK).any(axis=1))
    cols = np.flatnonzero((grey > INK).any(axis=0))
    if not len(rows):
        raise ImageError("no ink found: the image is blank")
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def area_weights(n_in, n_out):
    """Return the ``(n_out, n_in)`` matrix that resizes a line by area averaging.

    Output pixel ``j`` covers the input span ``[j s, (j + 1) s)`` with
    ``s = n_in / n_out``; its weight on input pixel ``i`` is the share of
    that span which ``[i, i + 1)`` covers, so each row sums to 1.
    """
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    i = np.arange(n_in)[None, :]
    overlap = np.minimum(hi, i + 1) - np.maximum(lo, i)
    return np.clip(overlap, 0, None) / (hi - lo)


def fit(grey, size=BOX):
    """Resize ``grey`` by area averaging so its longer side is ``size``."""
    h, w = grey.shape
    scale = size / max(h, w)
    nh = max(1, int(np.floor(h * scale + 0.5)))
    nw = max(1, int(np.floor(w * scale + 0.5)))
    # (nh, h) @ (h, w) @ (w, nw)
    return area_weights(h, nh) @ grey @ area_weights(w, nw).T


def centre_of_mass(grey):
    """Return ``(row, col)`` of the centre of mass, pixel ``i`` at coordinate i."""
    total = grey.sum()
    rows = grey.sum(axis=1) @ np.arange(grey.shape[0]) / total
    cols = grey.sum(axis=0) @ np.arange(grey.shape[1]) / total
    return rows, cols


def place(box, side=SIDE):
    """Paste ``box`` into a ``side`` square so its centre of mass is central.

    The centre of mass goes to pixel ``(side // 2, side // 2)``; the shift
    is rounded to a whole pixel and clipped so the box stays inside the
    square, as MNIST's digits were placed.
    """
    h, w = box.shape
    rows, cols = centre_of_mass(box)
    top = int(np.clip(np.floor(side // 2 - rows + 0.5), 0, side - h))
    left = int(np.clip(np.floor(side // 2 - cols + 0.5), 0, side - w))
    field = np.zeros((side, side))
    field[top : top + h, left : left + w] = box
    return field


def preprocess(grey):
    """Return the MNIST input for a grey image of a digit.

    Parameters
    ----------
    grey : array_like, shape (height, width)
        Grey levels in [0, 1], 0 black, 1 white; either ink on paper or
        light ink on a dark field.

    Returns
    -------
    ndarray, shape (784,), float64
        Light ink on black in [0, 1], row by row, as MNIST's pixels.

    Raises
    ------
    ImageError
        When the image has no ink.
    """
    grey = np.asarray(grey, dtype=np.float64)
    if grey.ndim != 2 or not grey.size:
        raise ImageError(f"expected a 2-D grey image, got shape {grey.shape}")
    grey = invert_if_light(grey)
    if grey.shape == (SIDE, SIDE):
        return grey.ravel().copy()
    grey = level(grey)
    top, bottom, left, right = ink_box(grey)
    return place(fit(grey[top:bottom, left:right])).ravel()


def load_grey(path):
    """Read an image file as grey levels in [0, 1].

    Colour becomes luma (ITU-R 601: 0.299 R + 0.587 G + 0.114 B);
    transparent pixels are laid on white, as a page shows them.

    Parameters
    ----------
    path : str or Path
        A PNG, JPEG, GIF, BMP, TIFF or WebP file: any format Pillow reads.

    Returns
    -------
    ndarray, shape (height, width), float64

    Raises
    ------
    ImageError
        When Pillow is not installed or the file is not a readable image.
    """
    try:
        from PIL import Image
    except ImportError:
        raise ImageError(
            "reading images needs Pillow: pip install 'hmnist[image]'"
        ) from None
    try:
        with Image.open(path) as image:
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file Pillow can read") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(f"{path}: cannot read the image ({err})") from None
    grey = rgba[..., :3] @ _LUMA / (1000 * 255)
    alpha = rgba[..., 3] / 255
    return grey * alpha + (1 - alpha)


def load_digit(path):
    """Return the MNIST input, ``(784,)`` float64, for the image file ``path``."""
    grey = load_grey(path)
    try:
        return preprocess(grey)
    except ImageError as err:
        raise ImageError(f"{path}: {err}") from None
