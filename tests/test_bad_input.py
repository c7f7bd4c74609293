"""Bad input gets a clear error that names the problem, before any work is done; nothing is silently accepted."""

import pytest
import torch

from pyro_lid.data import images as image_data
from pyro_lid.data import load_images

from .helpers import write_idx


# ------------------------------------------------------------------ loaders
def _mnist_files(folder, num_images=7, num_labels=7):
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", torch.randint(0, 256, (num_images, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", torch.arange(num_labels) % 10)
    return folder


def test_a_root_that_does_not_exist_is_refused_not_replaced_by_the_system_copy(tmp_path, monkeypatch):
    system = _mnist_files(tmp_path / "system")
    monkeypatch.setitem(image_data.DATASETS["mnist"], "system", [str(system)])
    assert load_images("mnist", "test")[0].shape == (7, 784)  # the system copy is there...
    with pytest.raises(FileNotFoundError, match=f"root {tmp_path / 'typo'} does not exist"):
        load_images("mnist", "test", root=tmp_path / "typo")  # ...but a mistyped root is not silently replaced
    with pytest.warns(UserWarning, match=f"no mnist files in {tmp_path / 'empty'}; using the copy in {system}"):
        (tmp_path / "empty").mkdir()
        load_images("mnist", "test", root=tmp_path / "empty")


def test_labels_that_do_not_match_the_images_are_refused_with_path_and_counts(tmp_path):
    _mnist_files(tmp_path / "short", num_images=10, num_labels=5)
    with pytest.raises(ValueError, match=r"labels-idx1-ubyte.gz holds 5 labels but .*images-idx3-ubyte.gz holds 10"):
        load_images("mnist", "test", root=tmp_path / "short")
    swapped = _mnist_files(tmp_path / "swapped")
    write_idx(swapped / "t10k-labels-idx1-ubyte.gz", torch.randint(0, 256, (7, 28, 28)))  # the image file as labels
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz is not a label file: .* shape \(7, 28, 28\)"):
        load_images("mnist", "test", root=swapped)
    write_idx(swapped / "t10k-images-idx3-ubyte.gz", torch.arange(7))  # and the labels as images
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz is not an image file"):
        load_images("mnist", "test", root=swapped)
