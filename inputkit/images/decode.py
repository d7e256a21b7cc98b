"""Decode one encoded image and apply its sampled geometry, written straight into the output.

Backends (``source.decode.backend``):

- ``pillow``: Pillow decodes; the crop box and the resize are one ``resize(box=...)``
  (bilinear, antialiased, as torchvision's Pillow path), and a JPEG whose box is
  at least twice the output size is decoded at 1/2, 1/4 or 1/8 scale with
  ``draft`` (libjpeg's DCT scaling), so fewer pixels are decoded and resized.
- ``opencv`` (``pip install 'inputkit-ml[images]'``): OpenCV decodes JPEGs (with the
  same DCT scaling) and resizes the box with ``cv2.resize`` (bilinear, no
  antialiasing: the DCT scaling already took the output within 2x of the box).
  Other formats, and the files it would decode differently, go to Pillow.
- ``auto``: ``opencv`` when it is installed, else ``pillow``.

``decode.exact`` replays torchvision's steps one by one with Pillow (crop, then
resize, no DCT scaling): the same pixels as torchvision's Pillow recipe, at
about twice the cost. docs/images.md gives the measured speed and pixel
difference of each.

Every image becomes RGB: grey, palette, CMYK and RGBA images are converted as
Pillow's ``convert("RGB")`` does (alpha dropped); 16-bit images keep their top
8 bits. Output is uint8, channels first (3 x H x W).
"""

from __future__ import annotations

import io
import math
import re
from typing import Any

import numpy as np

from inputkit.images.transforms import Geometry, Transforms, bad_key

BACKENDS = ("auto", "pillow", "opencv")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageError(ValueError):
    """An image that cannot become a sample; the message says what is wrong with it."""


def opencv_available() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


class Decoder:
    """Decodes images for one source: ``decode_into(data, out, transforms, seed, epoch, index)``."""

    def __init__(self, backend: str = "auto", exact: bool = False, max_pixels: int | None = None,
                 key: str = "decode") -> None:
        if backend not in BACKENDS:
            raise bad_key(f"{key}.backend", f"expected one of {', '.join(BACKENDS)}, got "
                              f"{backend!r}")
        if not isinstance(exact, bool):
            raise bad_key(f"{key}.exact", f"expected true or false, got {exact!r}")
        if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int)
                                       or max_pixels < 1):
            raise bad_key(f"{key}.max_pixels", f"expected a positive number of pixels or null "
                              f"(Pillow's limit), got {max_pixels!r}")
        try:
            import PIL  # noqa: F401  (every backend reads headers, and non-JPEGs, with Pillow)
        except ImportError:
            raise bad_key(f"{key}.backend", "the image sources need Pillow, which is not "
                          "installed: pip install 'inputkit-ml[images]'") from None
        if backend == "opencv" and not opencv_available():
            raise bad_key(f"{key}.backend", "opencv needs OpenCV, which is not installed: pip "
                              "install 'inputkit-ml[images]' (or opencv-python-headless), or use "
                              "decode.backend=pillow")
        self.requested = backend
        self.backend = ("opencv" if opencv_available() else "pillow") if backend == "auto" \
            else backend
        self.exact = exact
        self.max_pixels = max_pixels
        self._cv2: Any = None

    @property
    def bytes_per_pixel(self) -> int:
        """Memory per pixel while decoding one image: Pillow holds RGB as 4 bytes a pixel
        and its conversion to RGB may hold a second copy; OpenCV decodes to 3 bytes a pixel."""
        return 3 if self.backend == "opencv" and not self.exact else 8

    @property
    def name(self) -> str:
        """What decodes, for the summary: ``pillow``, ``opencv`` or ``pillow (exact)``."""
        return "pillow (exact)" if self.exact else self.backend

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cv2"] = None
        return state

    def decode_into(self, data: bytes, out: np.ndarray, transforms: Transforms, seed: int,
                    epoch: int, index: int) -> Geometry:
        """Decode ``data``, transform it, write it into ``out`` (3 x H x W uint8); ImageError
        (or ValueError from a transform) when it cannot be."""
        from PIL import Image

        if not data:
            raise ImageError("the file is empty (0 bytes)")
        if self.backend == "opencv" and not self.exact:
            header = jpeg_header(data)
            # Grey or YCbCr JPEGs, whole: OpenCV decodes them, sized from the SOF marker (Pillow
            # parses every marker in Python first, 10% of the cost). The rest go to Pillow.
            if header is not None and header[2] in (1, 3) and _complete_jpeg(data):
                width, height = header[0], header[1]
                self._check_pixels(width, height)
                geometry = transforms.plan(width, height, seed, epoch, index)
                try:
                    self._opencv(data, width, height, geometry, out)
                except ImageError:
                    raise
                except Exception as exc:  # cv2.error and friends
                    raise ImageError(f"cannot decode it ({type(exc).__name__}: {exc}); the file "
                                     "is corrupt or truncated") from None
                return geometry
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{exc} (raise decode.max_pixels if you trust the file)") from None
        except Exception as exc:
            raise ImageError(f"not an image Pillow can read ({type(exc).__name__}: "
                             f"{_without_buffer(exc)})") from None
        width, height = img.size
        self._check_pixels(width, height)
        geometry = transforms.plan(width, height, seed, epoch, index)
        try:
            if self.exact:
                _exact(img, geometry, out)
            else:
                _pillow(img, width, height, geometry, out)
        except ImageError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageError(f"cannot decode it ({type(exc).__name__}: {exc}); the file is "
                             "corrupt or truncated") from None
        return geometry

    def _check_pixels(self, width: int, height: int) -> None:
        from PIL import Image

        limit = self.max_pixels if self.max_pixels is not None else Image.MAX_IMAGE_PIXELS
        if limit is not None and width * height > limit:
            raise ImageError(f"{width}x{height} = {width * height:,} pixels is over the "
                             f"decompression-bomb limit of {limit:,} (decode.max_pixels)")

    def _opencv(self, data: bytes, width: int, height: int, geometry: Geometry,
                out: np.ndarray) -> None:
        cv2 = self._cv2
        if cv2 is None:
            import cv2

            cv2.setNumThreads(1)  # one worker, one core: inputkit runs the workers in parallel
            self._cv2 = cv2
        factor = _dct_factor(geometry)
        flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION  # as Pillow: EXIF is not applied
        if factor > 1:
            flags |= {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                      8: cv2.IMREAD_REDUCED_COLOR_8}[factor]
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
        if bgr is None:
            raise ImageError("cannot decode it (OpenCV found no image data); the file is corrupt")
        hwc = _replay(cv2, bgr, width, height, geometry)
        chw = hwc.transpose(2, 0, 1)[::-1]  # BGR -> RGB, channels first
        np.copyto(out, chw[:, :, ::-1] if geometry.flip else chw)


def _replay(cv2: Any, image: np.ndarray, width: int, height: int, geometry: Geometry) -> np.ndarray:
    """The sampled steps with OpenCV: each resize of the whole image and each crop at its
    integer offsets, as torchvision does them (a crop is a view: nothing is copied)."""
    vw, vh = width, height  # the size the steps see; ``image`` may be DCT-reduced from it
    for name, value in geometry.steps:
        if name == "flip":
            continue  # applied when the result is written out
        if name == "resize":
            vw, vh = value
            image = _resize(cv2, image, vw, vh)
            continue
        (left, top, w, h), (out_w, out_h) = value
        sx, sy = image.shape[1] / vw, image.shape[0] / vh
        if sx == 1 and sy == 1:
            image = image[top:top + h, left:left + w]
        else:  # a reduced decode: the crop in its pixels, to the nearest pixel
            x0, y0 = int(left * sx), int(top * sy)
            image = image[y0:max(y0 + 1, int(math.ceil((top + h) * sy))),
                          x0:max(x0 + 1, int(math.ceil((left + w) * sx)))]
        if name == "random_resized_crop" or image.shape[:2] != (out_h, out_w):
            image = _resize(cv2, image, out_w, out_h)
        vw, vh = out_w, out_h
    return image


def _resize(cv2: Any, image: np.ndarray, w: int, h: int) -> np.ndarray:
    if image.shape[1] == w and image.shape[0] == h:
        return image
    shrink = min(image.shape[1] / w, image.shape[0] / h)
    # Bilinear, without Pillow's antialiasing; past 2x, area averaging instead (no aliasing).
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink >= 2
                      else cv2.INTER_LINEAR)


# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic).
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) from a JPEG's start-of-frame marker; None if ``data``
    is not a JPEG or its markers end before one."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no length
            pos += 2
            continue
        length = (data[pos + 2] << 8) | data[pos + 3]
        if marker in _SOF:
            if pos + 10 > end:
                return None
            height = (data[pos + 5] << 8) | data[pos + 6]
            width = (data[pos + 7] << 8) | data[pos + 8]
            return (width, height, data[pos + 9]) if width and height else None
        if marker == 0xDA or length < 2:  # scan data before any frame header: not for us
            return None
        pos += 2 + length
    return None


def _dct_factor(geometry: Geometry) -> int:
    """The largest of 1, 2, 4, 8 by which the box may shrink and still cover the output."""
    x0, y0, x1, y1 = geometry.box
    w, h = geometry.out
    room = min((x1 - x0) / w, (y1 - y0) / h)
    factor = 1
    while factor < 8 and room >= factor * 2:
        factor *= 2
    return factor


def _complete_jpeg(data: bytes) -> bool:
    """Whether the JPEG ends with its end-of-image marker (OpenCV decodes a truncated file
    with a warning; Pillow refuses it, which is what a sample needs)."""
    return data[-2:] == b"\xff\xd9" or data.rstrip(b"\0")[-2:] == b"\xff\xd9"


def _rgb(img: Any) -> Any:
    """``img`` as RGB (8 bits per channel)."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT:
        # convert() would clip at 255. One rule for every image, as torchvision's 16-bit
        # branch and Pillow's own 16-bit RGB decode: the top 8 bits (value >> 8), whatever
        # the brightest pixel. Mode I also holds 32-bit TIFFs: a value outside 16 bits has
        # no top 8 bits to keep, so it is refused rather than guessed at.
        wide = np.asarray(img)
        low, high = (int(wide.min()), int(wide.max())) if wide.size else (0, 0)
        if low < 0 or high > 0xFFFF:
            raise ImageError(f"it holds {img.mode} pixels from {low} to {high}, outside the "
                             "16-bit range whose top 8 bits an image keeps; store such data "
                             "as .npy")
        img = Image.fromarray((wide.astype(np.uint16) >> 8).astype(np.uint8), mode="L")
    elif img.mode in ("F",):
        raise ImageError("it holds floating-point pixels (mode F); store such data as .npy")
    return img.convert("RGB")


def _write(rgb: Any, flip: bool, out: np.ndarray) -> None:
    hwc = np.asarray(rgb)
    if hwc.shape[:2] != out.shape[1:]:
        raise ImageError(f"decoded to {hwc.shape[1]}x{hwc.shape[0]}, not the "
                         f"{out.shape[2]}x{out.shape[1]} the transforms promise")
    chw = hwc.transpose(2, 0, 1)
    np.copyto(out, chw[:, :, ::-1] if flip else chw)


def _pillow(img: Any, width: int, height: int, geometry: Geometry, out: np.ndarray) -> None:
    from PIL import Image

    factor = _dct_factor(geometry) if img.format == "JPEG" else 1
    if factor > 1:  # libjpeg decodes at 1/factor: fewer pixels to decode and to resize
        img.draft("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
    rgb = _rgb(img)
    sx, sy = rgb.size[0] / width, rgb.size[1] / height
    x0, y0, x1, y1 = geometry.box
    box = (x0 * sx, y0 * sy, min(x1 * sx, rgb.size[0]), min(y1 * sy, rgb.size[1]))
    _write(rgb.resize(geometry.out, Image.Resampling.BILINEAR, box=box), geometry.flip, out)


def _exact(img: Any, geometry: Geometry, out: np.ndarray) -> None:
    """torchvision's Pillow recipe, step by step: the same pixels as transforms.v1/v2 on PIL."""
    from PIL import Image

    rgb = _rgb(img)
    for name, value in geometry.steps:
        if name == "flip":
            if value:
                rgb = rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        elif name == "resize":
            rgb = rgb.resize(value, Image.Resampling.BILINEAR)
        else:
            (left, top, w, h), size = value
            rgb = rgb.crop((left, top, left + w, top + h))
            if name == "random_resized_crop":
                rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    _write(rgb, False, out)


_BUFFER = re.compile(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def _without_buffer(exc: BaseException) -> str:
    """Pillow names the in-memory buffer it was given (`<_io.BytesIO object at 0x...>`): a
    memory address that means nothing to the user, whose file the error already names."""
    return _BUFFER.sub("", str(exc))
