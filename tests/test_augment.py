import torch

from reslab.augment import pad_crop_flip


def test_each_output_is_a_window_of_the_padded_image_possibly_mirrored():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(1, 2 * 3 * 6 * 6 + 1, dtype=torch.int32).reshape(2, 3, 6, 6).repeat(50, 1, 1, 1)
    out = pad_crop_flip(x, 2, g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = offsets = 0
    for i in range(len(x)):
        windows = {
            (dy, dx, f)
            for dy in range(5)
            for dx in range(5)
            for f in (0, 1)
            if torch.equal(
                out[i],
                (padded[i, :, dy : dy + 6, dx : dx + 6].flip(-1) if f else padded[i, :, dy : dy + 6, dx : dx + 6]),
            )
        }
        assert len(windows) == 1
        ((dy, dx, f),) = windows
        flips += f
        offsets += (dy, dx) != (2, 2)
    assert 30 < flips < 70  # about half mirrored
    assert offsets > 60  # most are shifted


def test_same_generator_state_same_augmentation():
    x = torch.randint(0, 255, (16, 3, 8, 8), dtype=torch.uint8)
    a = pad_crop_flip(x, 1, torch.Generator().manual_seed(5))
    b = pad_crop_flip(x, 1, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == x.shape
