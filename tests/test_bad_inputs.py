"""Bad inputs named where they are, and derived data never stale (docs/failure.md): a model whose weights hold
NaN or inf stops at load whatever its role, naming the tensor; an image that changed after the data loaded
is named when a prompt needs it; a hub set's images are cached per revision of the set."""
import os

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import data
import train
from models import load_model
from rollout import encode_prompt, open_image
from test_train import ARGS


def poisoned(model_dir, tmp_path, value):
    """A copy of the model whose first MLP weight holds one `value` (nan or inf)."""
    import shutil

    out = tmp_path / f"poisoned_{value}"
    shutil.copytree(model_dir, out)
    weights = load_file(os.path.join(out, "model.safetensors"))
    name = next(k for k in weights if "mlp" in k)
    weights[name].view(-1)[3] = float(value)
    save_file(weights, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    return str(out), name


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_model_with_non_finite_weights_stops_at_load_naming_the_tensor(tiny_model, tmp_path, value):
    """Was: the student loaded, then sampling failed ("probability tensor contains either inf, nan or element
    < 0") with a traceback naming nothing. The student, an in-process teacher and eval.py's model alike."""
    path, name = poisoned(tiny_model, tmp_path, value)
    with pytest.raises(ValueError, match=rf"the student .*poisoned.* holds NaN or inf weights in 1 tensors "
                                         rf"\(first: {name}\)"):
        train.main(train.parse_config(["--student", path, *ARGS, "--steps", "1",
                                       "--out-dir", str(tmp_path / f"s_{value}")]))
    with pytest.raises(ValueError, match=rf"the teacher .*holds NaN or inf weights .*first: {name}"):
        train.main(train.parse_config(["--student", tiny_model, *ARGS[2:], "--teacher", path, "--steps", "1",
                                       "--teacher-engine", "transformers",
                                       "--out-dir", str(tmp_path / f"t_{value}")]))
    with pytest.raises(ValueError, match=rf"holds NaN or inf weights .*first: {name}"):
        load_model(path, role="judge")


def test_an_image_changed_after_the_data_loaded_is_named_when_a_prompt_needs_it(tiny_vlm, tmp_path):
    image = tmp_path / "a.png"
    Image.new("RGB", (40, 40), (10, 200, 10)).save(image)
    _, tok = load_model(tiny_vlm)
    encode_prompt(tok, {"text": "What?", "images": [str(image)]})  # fine at first
    image.write_bytes(image.read_bytes()[:60])  # cut short, as a copy still being written
    with pytest.raises(ValueError, match=rf"image unreadable: {image} .*changed or removed since"):
        encode_prompt(tok, {"text": "What?", "images": [str(image)]})
    os.remove(image)
    with pytest.raises(ValueError, match=rf"image unreadable: {image}"):
        open_image(str(image))


def test_a_hub_sets_images_are_cached_per_revision(tmp_path, monkeypatch):
    """Stand-in for the hub (unreachable here): datasets.load_dataset returns a local Dataset. Was: the cached
    files were named by row only, so a new revision of the set kept the old revision's images."""
    import datasets

    monkeypatch.setenv("HOME", str(tmp_path))
    revisions = [datasets.Dataset.from_dict({"question": ["What colour?"], "answer": ["red"],
                                             "image": [Image.new("RGB", (32, 32), colour)]})
                 for colour in ((250, 0, 0), (0, 0, 250))]
    seen = []
    for rows in revisions:
        monkeypatch.setattr(datasets, "load_dataset", lambda *a, rows=rows, **k: rows)
        (example,) = data.load_hub("org/set")
        with Image.open(example["images"][0]) as im:
            seen.append(im.convert("RGB").getpixel((0, 0)))
    assert seen == [(250, 0, 0), (0, 0, 250)]
    assert torch.tensor(seen).shape == (2, 3)
