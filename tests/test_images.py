"""Image sources, transforms and decoders on real files: geometry, pixels, layouts, bad input."""

from __future__ import annotations

import io
import os
import random

import numpy as np
import pytest
from imagefiles import awkward_images, encoded, jpeg_bytes, photo, write_folder, write_shards
from PIL import Image

from inputkit import SourceError
from inputkit.images.decode import Decoder, opencv_available
from inputkit.images.transforms import Transforms, random_resized_box
from inputkit.sources.images import ImageFolderSource, ImageListSource, ImageShardSource

TRAIN = [{"random_resized_crop": {"size": 224}}, {"horizontal_flip": {"p": 0.5}}]
VAL = [{"resize": 256}, {"center_crop": 224}]
BACKENDS = ["pillow", "opencv"] if opencv_available() else ["pillow"]


# RandomResizedCrop's sampling -----------------------------------------------------------------

def test_random_resized_boxes_stay_inside_torchvisions_bounds():
    rng = random.Random(0)
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    fallbacks = 0
    for _ in range(5000):
        width, height = rng.randint(1, 900), rng.randint(1, 900)
        left, top, w, h = random_resized_box(width, height, scale, ratio, rng)
        assert 0 <= left and 0 <= top and 0 < w and 0 < h
        assert left + w <= width and top + h <= height
        area = w * h / (width * height)
        if not (scale[0] - 0.02 <= area <= scale[1] and
                ratio[0] - 0.05 <= w / h <= ratio[1] + 0.05):
            # only torchvision's fallback (the whole image, centre-cropped to the nearest
            # allowed ratio) may break the rule, and only for images too small or too narrow
            fallbacks += 1
            assert (left, top) == ((width - w) // 2, (height - h) // 2)
    assert fallbacks < 500


def test_the_fallback_is_the_centre_crop_at_the_nearest_allowed_ratio():
    # A 1000 x 10 strip: no crop of ratio 3/4..4/3 fits, so the fallback takes the full height.
    left, top, w, h = random_resized_box(1000, 10, (0.08, 1.0), (3 / 4, 4 / 3), random.Random(1))
    assert (h, w) == (10, 13) and left == (1000 - 13) // 2 and top == 0


@pytest.mark.parametrize("steps,size", [(TRAIN, (224, 224)), (VAL, (224, 224)),
                                        ([{"resize": [100, 60]}], (100, 60)),
                                        ([{"random_resized_crop": {"size": [96, 128]}}], (96, 128))])
def test_every_image_size_gives_the_declared_output_shape(steps, size):
    transforms = Transforms.parse(steps)
    assert transforms.out_size == size
    decoder = Decoder("pillow")
    for i, (w, h) in enumerate([(500, 375), (375, 500), (100, 80), (256, 256), (1200, 300)]):
        out = np.zeros((3, *size), np.uint8)
        decoder.decode_into(jpeg_bytes(photo(w, h, i)), out, transforms, 0, 0, i)
        assert out.std() > 1  # a real picture, not zeros


def test_the_same_seed_epoch_and_index_give_the_same_geometry_and_others_differ():
    transforms = Transforms.parse(TRAIN)
    first = transforms.plan(500, 375, seed=5, epoch=2, index=17)
    assert transforms.plan(500, 375, seed=5, epoch=2, index=17) == first
    others = {transforms.plan(500, 375, 5, e, i).box for e, i in [(3, 17), (2, 18), (0, 0)]}
    assert first.box not in others
    flips = [transforms.plan(500, 375, 0, 0, i).flip for i in range(400)]
    assert 150 < sum(flips) < 250  # p = 0.5


@pytest.mark.parametrize("steps,key", [
    ([], "the transforms must give every image the same size"),
    ([{"resize": 256}], "add center_crop after it"),
    ([{"random_crop": {"size": 3}}], "unknown transform 'random_crop'"),
    ([{"center_crop": {"size": 0}}], "transforms[0].center_crop.size"),
    ([{"random_resized_crop": {"size": 224, "scale": [0.5, 0.1]}}], "random_resized_crop.scale"),
    ([{"horizontal_flip": {"p": 2}}, {"center_crop": 8}], "horizontal_flip.p"),
    ([{"resize": {"size": 8, "antialias": False}}], "resize.antialias"),
    ("train_224", "expected a list of steps"),
])
def test_bad_transform_lists_name_the_step_and_key(steps, key):
    with pytest.raises(ValueError, match="transforms") as info:
        Transforms.parse(steps)
    assert key in str(info.value)


def test_an_image_smaller_than_the_crop_is_upscaled_like_torchvision():
    transforms = Transforms.parse([{"random_resized_crop": {"size": 224}}])
    out = np.zeros((3, 224, 224), np.uint8)
    Decoder("pillow").decode_into(jpeg_bytes(photo(40, 30, 0)), out, transforms, 0, 0, 0)
    assert out.std() > 1


# pixels ---------------------------------------------------------------------------------------

def torchvision_recipe(data: bytes, transforms: Transforms, index: int) -> np.ndarray:
    """torchvision's PIL path, written out with Pillow (crop, then resize; flip), CHW uint8."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    geometry = transforms.plan(img.size[0], img.size[1], 0, 0, index)
    for name, value in geometry.steps:
        if name == "resize":
            img = img.resize(value, Image.Resampling.BILINEAR)
        elif name == "flip" and value:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        elif name in ("center_crop", "random_resized_crop"):
            (left, top, w, h), size = value
            img = img.crop((left, top, left + w, top + h))
            if name == "random_resized_crop":
                img = img.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(img).transpose(2, 0, 1)


@pytest.mark.parametrize("steps", [TRAIN, VAL], ids=["train", "val"])
def test_exact_mode_matches_torchvisions_pillow_recipe_pixel_for_pixel(steps):
    transforms = Transforms.parse(steps)
    decoder = Decoder("auto", exact=True)
    for i in range(12):
        data = jpeg_bytes(photo(500 - 9 * i, 375 + 7 * i, i))
        out = np.zeros((3, 224, 224), np.uint8)
        decoder.decode_into(data, out, transforms, 0, 0, i)
        assert np.array_equal(out, torchvision_recipe(data, transforms, i))


# The documented tolerances (docs/images.md): mean absolute difference per pixel from the exact
# recipe, over real photographs; these synthetic photos are smoother, so the bound has room.
TOLERANCE = {"pillow": 1.0, "opencv": 2.5}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("steps", [TRAIN, VAL], ids=["train", "val"])
def test_fast_decoders_stay_within_their_documented_difference(backend, steps):
    transforms = Transforms.parse(steps)
    fast, exact = Decoder(backend), Decoder(backend, exact=True)
    differences = []
    for i in range(16):
        data = jpeg_bytes(photo(480 - 11 * i, 360 + 9 * i, 100 + i))
        a, b = np.zeros((3, 224, 224), np.uint8), np.zeros((3, 224, 224), np.uint8)
        fast.decode_into(data, a, transforms, 0, 0, i)
        exact.decode_into(data, b, transforms, 0, 0, i)
        differences.append(np.abs(a.astype(np.int16) - b).mean())
    assert np.mean(differences) < TOLERANCE[backend], differences
    assert max(differences) < 4 * TOLERANCE[backend]


def test_a_decoded_image_matches_pillows_own_decode():
    data = jpeg_bytes(photo(300, 200, 3))
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1)
    transforms = Transforms.parse([{"resize": [200, 300]}])  # same size: a plain decode
    for backend in BACKENDS:
        out = np.zeros((3, 200, 300), np.uint8)
        Decoder(backend).decode_into(data, out, transforms, 0, 0, 0)
        # Pillow: the same libjpeg decode; OpenCV: its own libjpeg-turbo build (same IDCT)
        assert np.abs(out.astype(np.int16) - reference).mean() < (0.01 if backend == "pillow"
                                                                  else 1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_image_mode_becomes_rgb(tmp_path, backend):
    same_size = Transforms.parse([{"resize": [48, 64]}])
    decoder = Decoder(backend)
    for name, (data, expected) in awkward_images().items():
        out = np.zeros((3, 48, 64), np.uint8)
        decoder.decode_into(data, out, same_size, 0, 0, 0)
        if expected is not None:
            assert np.abs(out.astype(np.int16) - expected.transpose(2, 0, 1)).max() <= 1, name
        else:  # lossy JPEG (CMYK, grey): close to the picture it was made from
            assert out.std() > 5, name


# the sources: layouts and bad input -------------------------------------------------------------

def test_folder_classes_are_sorted_into_indices_and_images_found_recursively(tmp_path):
    root = tmp_path / "train"
    for cls, files in {"zebra": ["a.JPG", "sub/b.jpeg"], "ant": ["c.png", "notes.txt", ".hidden.jpg"],
                       "moth": ["d.WebP"]}.items():
        for f in files:
            path = root / cls / f
            path.parent.mkdir(parents=True, exist_ok=True)
            img = photo(40, 30, len(f))
            path.write_bytes(encoded_as(img, f))
    source = ImageFolderSource(str(root), VAL)
    assert source.classes == ["ant", "moth", "zebra"]
    assert source.class_to_index == {"ant": 0, "moth": 1, "zebra": 2}
    assert len(source) == 4 and source.labels.tolist() == [0, 1, 2, 2]
    info = source.run_info()
    assert info["class_to_index"] == {"ant": 0, "moth": 1, "zebra": 2} and info["samples"] == 4
    batch = source.read(np.array([3, 0]))
    assert batch["image"].shape == (2, 3, 224, 224) and batch["label"].tolist() == [2, 0]


def encoded_as(img: Image.Image, name: str) -> bytes:
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP"}
    buffer = io.BytesIO()
    img.save(buffer, format=fmt.get(name.rsplit(".", 1)[-1].lower(), "PNG"))
    return buffer.getvalue()


def test_bad_folders_get_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        ImageFolderSource(str(tmp_path / "missing"), VAL)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(jpeg_bytes(photo(30, 30, 0)))
    with pytest.raises(ValueError, match="holds no class folders"):
        ImageFolderSource(str(tmp_path / "flat"), VAL)
    (tmp_path / "none" / "cat").mkdir(parents=True)
    (tmp_path / "none" / "cat" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no images in them"):
        ImageFolderSource(str(tmp_path / "none"), VAL)
    write_folder(tmp_path / "some", classes=2, per_class=1)
    (tmp_path / "some" / "class_9").mkdir()
    with pytest.raises(ValueError, match="class_9.*allow_empty_classes"):
        ImageFolderSource(str(tmp_path / "some"), VAL)
    kept = ImageFolderSource(str(tmp_path / "some"), VAL, allow_empty_classes=True)
    assert kept.class_to_index["class_9"] == 2 and kept.empty_classes == ["class_9"]


def bad_files(folder) -> dict[str, str]:
    """Files with image names that cannot become a sample, and what their error must say."""
    good = jpeg_bytes(photo(120, 90, 1))
    files = {
        "truncated.jpg": (good[: len(good) // 2], "corrupt or truncated"),
        "zero.jpg": (b"", "empty (0 bytes)"),
        "text.jpg": (b"just some words, not pixels\n" * 10, "not an image"),
        "garbage.jpg": (b"\xff\xd8\xff" + bytes(range(256)) * 4, "not an image"),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    os.symlink(folder / "gone", folder / "dangling.jpg")
    return {**{name: why for name, (_, why) in files.items()},
            "dangling.jpg": "cannot read it"}  # unreadable (root reads any file, so: gone)


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_bad_file_gets_one_error_naming_it(tmp_path, backend):
    folder = tmp_path / "train" / "cls"
    folder.mkdir(parents=True)
    expected = bad_files(folder)
    source = ImageFolderSource(str(tmp_path / "train"), VAL, decode={"backend": backend})
    assert len(source) == len(expected)
    for index in range(len(source)):
        name = os.path.basename(source.files[index].decode())
        with pytest.raises(SourceError) as info:
            source.read(np.array([index]))
        message = str(info.value)
        assert name in message and expected[name] in message, message


def test_an_image_over_the_pixel_limit_is_refused_before_it_is_decoded(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "big.png").write_bytes(encoded_as(photo(300, 200, 0), "x.png"))
    source = ImageFolderSource(str(tmp_path), VAL, decode={"max_pixels": 10_000})
    with pytest.raises(SourceError, match=r"big.png.*60,000 pixels.*decompression-bomb limit"):
        source.read(np.array([0]))
    with pytest.raises(ValueError, match="decode.max_pixels"):
        ImageFolderSource(str(tmp_path), VAL, decode={"max_pixels": -1})
    with pytest.raises(ValueError, match="decode.backend"):
        ImageFolderSource(str(tmp_path), VAL, decode={"backend": "magic"})


def test_a_file_list_reads_paths_and_labels_relative_to_its_folder(tmp_path):
    write_folder(tmp_path / "imgs", classes=2, per_class=2)
    rows = ["path,label", "imgs/class_0/img_000.jpg,4", "# a comment", "",
            "imgs/class_1/img_001.jpg 7"]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    source = ImageListSource(str(tmp_path / "train.csv"), TRAIN)
    assert len(source) == 2 and source.labels.tolist() == [4, 7]
    assert source.read(np.array([1, 0]))["label"].tolist() == [7, 4]
    (tmp_path / "bad.csv").write_text("imgs/class_0/img_000.jpg,cat\n")
    with pytest.raises(ValueError, match="line 1 .*'cat' is not a whole number"):
        ImageListSource(str(tmp_path / "bad.csv"), TRAIN)
    (tmp_path / "moved.csv").write_text("elsewhere/a.jpg,0\n")
    with pytest.raises(ValueError, match="root.*does not exist"):
        ImageListSource(str(tmp_path / "moved.csv"), TRAIN)


def test_shards_are_indexed_and_read_by_position(tmp_path):
    images = [jpeg_bytes(photo(300 + i, 240, i)) for i in range(25)]
    labels = [i % 4 for i in range(25)]
    write_shards(tmp_path, images, labels, per_shard=10)
    source = ImageShardSource(str(tmp_path / "train-*.tar"), VAL)
    assert len(source) == 25 and source.labels.tolist() == labels
    out = source.read(np.array([24, 3, 11]))
    for k, i in enumerate([24, 3, 11]):
        expected = np.zeros((3, 224, 224), np.uint8)
        source.decoder.decode_into(images[i], expected, source.transforms, 0, 0, i)
        assert np.array_equal(out["image"][k], expected)
    source.close()


def test_bad_shards_name_the_shard_and_member(tmp_path):
    good = jpeg_bytes(photo(100, 80, 0))
    write_shards(tmp_path / "a", [good, b"", good], [0, 1, 2], per_shard=3)
    source = ImageShardSource(str(tmp_path / "a" / "train-000.tar"), VAL)
    with pytest.raises(SourceError, match=r"shard '.*train-000.tar', member '000001.jpg'.*empty"):
        source.read(np.array([0, 1]))
    source.close()
    import gzip
    (tmp_path / "z.tar.gz").write_bytes(gzip.compress((tmp_path / "a" / "train-000.tar").read_bytes()))
    with pytest.raises(ValueError, match="gzip-compressed.*uncompressed tar"):
        ImageShardSource(str(tmp_path / "z.tar.gz"), VAL)
    (tmp_path / "nolabel").mkdir()
    import tarfile
    with tarfile.open(tmp_path / "nolabel" / "s.tar", "w") as tar:
        info = tarfile.TarInfo("k1.jpg")
        info.size = len(good)
        tar.addfile(info, io.BytesIO(good))
    with pytest.raises(ValueError, match="'k1.cls' label member"):
        ImageShardSource(str(tmp_path / "nolabel" / "s.tar"), VAL)
    unlabelled = ImageShardSource(str(tmp_path / "nolabel" / "s.tar"), VAL, label=None)
    assert unlabelled.labels.tolist() == [-1]
    unlabelled.close()
    whole = (tmp_path / "a" / "train-000.tar").read_bytes()
    last = int(source.offsets[2])
    for name, end in [("in-member.tar", last + 10), ("between.tar", last - 512)]:
        (tmp_path / name).write_bytes(whole[:end])  # cut inside the last image, or before it
        with pytest.raises(ValueError, match=f"{name}.*truncated"):
            ImageShardSource(str(tmp_path / name), VAL)


def test_the_jpeg_header_reader_agrees_with_pillow():
    from inputkit.images.decode import jpeg_header

    base = photo(123, 77, 4)
    for img, save in [(base, {}), (base, {"progressive": True}), (base.convert("L"), {}),
                      (base.convert("CMYK"), {}), (base, {"exif": b"Exif\x00\x00" + b"\x00" * 40})]:
        data = encoded(img, "JPEG", **save)
        expected_components = {"RGB": 3, "L": 1, "CMYK": 4}[img.mode]
        assert jpeg_header(data) == (123, 77, expected_components)
    data = encoded(base, "JPEG")
    assert jpeg_header(encoded(base, "PNG")) is None
    assert jpeg_header(data[:20]) is None  # cut before the frame header
    assert jpeg_header(b"\xff\xd8\xff\xda\x00\x02") is None  # scan data before any frame
    assert jpeg_header(b"") is None


def test_shards_with_long_member_names_are_indexed_through_tarfile(tmp_path):
    import tarfile

    images = [jpeg_bytes(photo(60, 50, i)) for i in range(3)]
    folder = "a" * 120  # past ustar's 100-character name field: a pax header carries it
    with tarfile.open(tmp_path / "long.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for i, data in enumerate(images):
            for name, payload in ((f"{folder}/{i:03d}.jpg", data), (f"{folder}/{i:03d}.cls", b"%d" % i)):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    source = ImageShardSource(str(tmp_path / "long.tar"), VAL)
    assert len(source) == 3 and source.labels.tolist() == [0, 1, 2]
    assert source.names[2].decode() == f"{folder}/002.jpg"
    expected = np.zeros((3, 224, 224), np.uint8)
    source.decoder.decode_into(images[2], expected, source.transforms, 0, 0, 2)
    assert np.array_equal(source.read(np.array([2]))["image"][0], expected)
    source.close()


def sixteen_bit_files() -> dict[str, tuple[bytes, np.ndarray]]:
    """Real 16-bit files (grey PNG from Pillow; grey PNG, RGB PNG and PGM from OpenCV when it is
    installed), each storing 100 beside a brightest pixel of 200 (all values under 256) or of
    4000 (with 0x1234 too): each with the RGB pixels it must decode to, the top 8 bits
    (value >> 8) of every value."""
    files: dict[str, tuple[bytes, np.ndarray]] = {}
    for brightest in (200, 4000):
        grey = np.full((6, 8), 100, np.uint16)
        if brightest > 255:
            grey[2:4, 2:6] = 0x1234
        grey[0, 0] = brightest
        expected = np.repeat((grey >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
        files[f"pillow-{brightest}.png"] = (encoded(Image.fromarray(grey), "PNG"), expected)
        if opencv_available():
            import cv2

            bgr = np.stack([grey, grey // 2 + 0x0800, np.full_like(grey, 0xABCD)], axis=-1)
            rgb = (bgr[:, :, ::-1] >> 8).astype(np.uint8)
            for name, array, want in (("grey.png", grey, expected), ("rgb.png", bgr, rgb),
                                      ("grey.pgm", grey, expected)):
                ok, data = cv2.imencode("." + name.split(".")[1], array)
                assert ok
                files[f"opencv-{brightest}-{name}"] = (data.tobytes(), want)
    return files


@pytest.mark.parametrize("exact", [False, True], ids=["fast", "exact"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_sixteen_bit_images_keep_their_top_8_bits_whatever_their_brightest_pixel(
        tmp_path, backend, exact):
    """One rule for every 16-bit image: 100 decodes to 0 (100 >> 8) beside a brightest pixel
    of 200 as beside one of 4000 (it decoded to 100 and 0), and 0x1234 to 0x12, with either
    backend, fast or exact."""
    files = sixteen_bit_files()
    (tmp_path / "c").mkdir()
    for name, (data, _) in files.items():
        (tmp_path / "c" / name).write_bytes(data)
    source = ImageFolderSource(str(tmp_path), [{"resize": [6, 8]}],
                               decode={"backend": backend, "exact": exact})
    out = source.read(np.arange(len(source)))["image"]
    for k in range(len(source)):
        name = os.path.basename(source.describe(k)["file"])
        want = files[name][1].transpose(2, 0, 1)
        assert np.array_equal(out[k], want), (name, out[k][:, :4, :4], want[:, :4, :4])
        assert out[k][2, 1, 1] == 0, name  # blue holds the grey values: 100 >> 8
        if "4000" in name:
            assert out[k][2, 2, 2] == 0x12, name


def test_a_32_bit_image_outside_the_16_bit_range_is_refused_naming_the_file(tmp_path):
    (tmp_path / "c").mkdir()
    wide = Image.fromarray(np.array([[70000, 5], [5, 5]], np.int32), "I")
    (tmp_path / "c" / "depth.tif").write_bytes(encoded(wide, "TIFF"))
    source = ImageFolderSource(str(tmp_path), [{"resize": [2, 2]}])
    with pytest.raises(SourceError, match=r"depth.tif.*pixels from 5 to 70000, outside the "
                                          r"16-bit range"):
        source.read(np.array([0]))
