"""Every bad image file fails when the data is loaded, naming the data file and line, the image path and what
was expected: missing, a directory, empty, not an image, a bad PNG checksum, pixel data cut short (which
Image.verify() alone lets through), a decompression bomb, a shape the image processor refuses, a symlink
loop, no permission. Images PIL reads in any mode the processor takes (palette, 16-bit, CMYK, 1 pixel)
load, and go through the real image processor. Real files throughout; `bad_images` also feeds the builder's
tests."""
import json
import os
import random
import re
import shutil
import struct
import zlib

import pytest
from PIL import Image

from data import load_jsonl


def noise(size, seed=0):
    """An RGB image of random pixels (it compresses badly: its PNG data spans many bytes)."""
    rng = random.Random(seed)
    image = Image.new("RGB", size)
    image.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(size[0] * size[1])])
    return image


def png_chunk(raw, kind):
    """(start, length) of the first chunk of that kind in a PNG file's bytes."""
    pos = 8
    while pos < len(raw):
        (length,) = struct.unpack(">I", raw[pos:pos + 4])
        if raw[pos + 4:pos + 8] == kind:
            return pos, length
        pos += 12 + length
    raise AssertionError(f"no {kind} chunk")


def bad_images(folder):
    """{case: file name} of image files that cannot be used, made in `folder`, each at least 100 pixels a
    side where it has a size (the builder's min-side filter must not be what removes them)."""
    folder = str(folder)
    noise((120, 110)).save(os.path.join(folder, "good.png"))
    with open(os.path.join(folder, "good.png"), "rb") as f:
        raw = f.read()
    start, length = png_chunk(raw, b"IDAT")
    files = {}

    def write(name, content):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(content)
        return name

    files["empty file"] = write("empty.png", b"")
    files["not an image"] = write("text.png", b"just some text, not a PNG")
    flipped = bytearray(raw)
    flipped[start + 8 + length // 2] ^= 0xFF  # one byte of pixel data: the IDAT checksum no longer matches
    files["bad checksum in the pixel data"] = write("crc_data.png", bytes(flipped))
    flipped = bytearray(raw)
    flipped[start + 8 + length] ^= 0xFF  # the checksum itself: the pixels decode, the file is corrupt
    files["bad checksum, pixels intact"] = write("crc_only.png", bytes(flipped))
    files["file cut inside the pixel data"] = write("cut.png", raw[:start + 8 + length // 2])
    half = raw[start + 8:start + 8 + length // 2]  # a shorter IDAT with a valid checksum: verify() passes
    short = struct.pack(">I", len(half)) + b"IDAT" + half + struct.pack(">I", zlib.crc32(b"IDAT" + half))
    files["pixel data cut, chunks valid"] = write("short_idat.png",
                                                  raw[:start] + short + raw[start + 12 + length:])
    files["no end chunk"] = write("no_iend.png", raw[:-12])
    noise((150, 120), seed=1).save(os.path.join(folder, "full.jpg"), quality=90)
    with open(os.path.join(folder, "full.jpg"), "rb") as f:
        jpeg = f.read()
    files["JPEG cut short"] = write("cut.jpg", jpeg[:len(jpeg) * 6 // 10])
    # over PIL's limit (2 x Image.MAX_IMAGE_PIXELS: an error) and between 1x and 2x (a warning): 1-bit, small
    Image.new("1", (20_000, 10_000)).save(os.path.join(folder, "bomb.png"))
    files["decompression bomb"] = "bomb.png"
    Image.new("1", (10_000, 9_000)).save(os.path.join(folder, "bomb_warning.png"))
    files["decompression bomb warning"] = "bomb_warning.png"
    Image.new("RGB", (100, 20_100), (9, 9, 9)).save(os.path.join(folder, "tall.png"))
    files["aspect ratio over 200"] = "tall.png"
    os.makedirs(os.path.join(folder, "a_directory.png"), exist_ok=True)
    files["a directory"] = "a_directory.png"
    for name in ("loop.png", "dangling.png"):
        if os.path.lexists(os.path.join(folder, name)):
            os.remove(os.path.join(folder, name))
    os.symlink("loop.png", os.path.join(folder, "loop.png"))
    files["symlink loop"] = "loop.png"
    os.symlink("nowhere.png", os.path.join(folder, "dangling.png"))
    files["dangling symlink"] = "dangling.png"
    files["missing"] = "missing.png"
    files["path through a file"] = "good.png/inner.png"
    if shutil.which("gs") is None:  # EPS: PIL reads the header, decoding needs Ghostscript
        write("figure.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 120 120\nshowpage\n")
        files["EPS without Ghostscript"] = "figure.eps"
    return files


# what each message says, after the data file and line and before the path
EXPECTED = {
    "empty file": "is empty", "not an image": "unreadable", "bad checksum in the pixel data": "unreadable",
    "bad checksum, pixels intact": "unreadable", "file cut inside the pixel data": "unreadable",
    "pixel data cut, chunks valid": "unreadable", "no end chunk": "unreadable",
    "JPEG cut short": "unreadable",
    "decompression bomb": "too large", "decompression bomb warning": "too large",
    "aspect ratio over 200": "aspect ratio", "a directory": "is a directory", "symlink loop": "unreadable",
    "dangling symlink": "not found", "missing": "not found", "path through a file": "unreadable",
    "EPS without Ghostscript": "unreadable", "no permission": "unreadable",
}


def write_data(folder, image):
    path = os.path.join(str(folder), "bad.jsonl")
    with open(path, "w") as f:
        f.write(json.dumps({"question": "fine", "answer": "1", "image": "good.png"}) + "\n")
        f.write(json.dumps({"question": "q", "answer": "1", "image": ["good.png", image]}) + "\n")
    return path


def assert_named(path, image, case, match):
    """The error names the data file and line 2, the case's words, the image's path and what was expected."""
    with pytest.raises(ValueError) as e:
        load_jsonl(path)
    message = str(e.value)
    assert message.startswith(f"{path}:2: "), message
    assert match in message and os.path.join(os.path.dirname(path), image) in message, (case, message)
    assert "expected" in message, (case, message)
    assert "\n" not in message and len(message) < 600, message


def test_every_bad_image_fails_at_load_naming_file_line_path_and_what_was_expected(tmp_path):
    files = bad_images(tmp_path)
    assert len(files) >= 17
    for case, image in files.items():
        assert_named(write_data(tmp_path, image), image, case, EXPECTED[case])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its permissions")
def test_an_image_without_read_permission_fails_at_load(tmp_path):
    noise((120, 110)).save(tmp_path / "good.png")
    noise((120, 110)).save(tmp_path / "secret.png")
    os.chmod(tmp_path / "secret.png", 0)
    try:
        assert_named(write_data(tmp_path, "secret.png"), "secret.png", "no permission",
                     EXPECTED["no permission"])
    finally:
        os.chmod(tmp_path / "secret.png", 0o644)


MODES = {"P": (120, 100), "LA": (120, 100), "L": (120, 100), "1": (120, 100),
         "I;16": (120, 100), "I": (120, 100), "F": (120, 100), "CMYK": (120, 100), "RGBA": (120, 100),
         "one pixel": (1, 1), "ratio 150": (2, 300), "ratio 200": (1, 200)}


def test_images_in_any_mode_the_processor_takes_load_and_go_through_the_processor(tmp_path, tiny_vlm):
    """What the load check lets through, the real image processor takes (as training opens images)."""
    from models import load_tokenizer
    from rollout import PAPER_PIXELS, image_inputs

    rows = []
    for name, size in MODES.items():
        mode = name if name in Image.MODES or name == "I;16" else "RGB"
        file = re.sub(r"\W", "_", name) + (".tiff" if mode in ("F", "CMYK", "I") else ".png")
        Image.new(mode, size).save(tmp_path / file)
        rows.append(json.dumps({"question": name, "answer": "1", "image": file}))
    (tmp_path / "modes.jsonl").write_text("\n".join(rows) + "\n")
    examples = load_jsonl(str(tmp_path / "modes.jsonl"))
    assert len(examples) == len(MODES)
    tokenizer, _ = load_tokenizer(tiny_vlm, pixels=PAPER_PIXELS)
    for ex in examples:
        with Image.open(ex["images"][0]) as image:
            assert image.size == MODES[ex["question"]]
        vision = image_inputs(tokenizer, ex["images"])
        assert vision["image_grid_thw"].shape == (1, 3), ex["question"]
    Image.new("RGB", (1, 201)).save(tmp_path / "ratio.png")  # just over: the processor refuses it
    with pytest.raises(ValueError, match="aspect ratio"):
        image_inputs(tokenizer, [str(tmp_path / "ratio.png")])
    (tmp_path / "ratio.jsonl").write_text(json.dumps({"question": "q", "answer": "1", "image": "ratio.png"}))
    refused = r"ratio.jsonl:1: .*ratio.png is 1 x 201 pixels, aspect ratio 201; expected at most 200"
    with pytest.raises(ValueError, match=refused):
        load_jsonl(str(tmp_path / "ratio.jsonl"))


def test_a_bad_image_of_a_hub_set_names_the_row(tmp_path):
    """A hub set's image column holds opened PIL images (decoded lazily): one whose pixel data is cut fails
    when it is written to the cache, naming the set, the split and the row."""
    from data import save_hub_images

    files = bad_images(tmp_path)
    good = Image.open(tmp_path / "good.png")
    row = save_hub_images({"question": "q", "image": good}, "org/set", "train", 3, folder=str(tmp_path / "c"))
    assert row["image"] == [str(tmp_path / "c" / "train_3_0.png")] and os.path.exists(row["image"][0])
    for case in ("pixel data cut, chunks valid", "JPEG cut short", "aspect ratio over 200"):
        image = Image.open(tmp_path / files[case])
        with pytest.raises(ValueError, match=r"^org/set\[train\]\[4\]: .*image 1 of the row.*expected"):
            save_hub_images({"question": "q", "image": [good, image]}, "org/set", "train", 4,
                            folder=str(tmp_path / "c"))
        assert not os.path.exists(tmp_path / "c" / "train_4_1.png")
