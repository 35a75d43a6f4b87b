"""Multi-crop geometry and the batched photometric ops against Pillow / colorsys / numpy references."""

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from silc_hf.training.arguments import MultiCropArguments
from silc_hf.training.augmentation import (
    MultiCropTransform,
    apply_photometric,
    random_resized_crop_box,
    stack_augment,
)

from conftest import random_image


def _params(**overrides) -> dict:
    """One view's photometric parameters: the identity, except `overrides`."""
    params = dict(
        flip=False,
        jitter=False,
        brightness=1.0,
        contrast=1.0,
        saturation=1.0,
        hue=0.0,
        jitter_order=np.arange(4),
        grayscale=False,
        blur=False,
        blur_sigma=1.0,
        solarize=False,
    )
    return {**params, **overrides}


def _identity_augment(n, **overrides):
    return stack_augment([_params(**overrides)] * n)


def _photometric(image: Image.Image, **overrides) -> np.ndarray:
    """Apply one op through apply_photometric with mean 0 / std 1 -> values in [0, 1], HWC."""
    views = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None]
    out = apply_photometric(views, _identity_augment(1, **overrides), [0, 0, 0], [1, 1, 1])
    return out[0].permute(1, 2, 0).numpy()


def _pil(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255


IMAGE = random_image(11, size=(24, 20))


@pytest.mark.parametrize(
    "overrides, reference",
    [
        (dict(jitter=True, brightness=1.3), lambda im: ImageEnhance.Brightness(im).enhance(1.3)),
        (dict(jitter=True, saturation=0.6), lambda im: ImageEnhance.Color(im).enhance(0.6)),
        (dict(jitter=True, contrast=1.4), lambda im: ImageEnhance.Contrast(im).enhance(1.4)),
        (dict(grayscale=True), lambda im: im.convert("L").convert("RGB")),
        (dict(solarize=True), lambda im: ImageOps.solarize(im, threshold=128)),
        (dict(flip=True), lambda im: ImageOps.mirror(im)),
    ],
    ids=["brightness", "saturation", "contrast", "grayscale", "solarize", "flip"],
)
def test_photometric_ops_match_pillow(overrides, reference):
    # Pillow rounds to uint8 (and its contrast uses an integer mean): agree within 2 / 255
    np.testing.assert_allclose(_photometric(IMAGE, **overrides), _pil(reference(IMAGE)), atol=2 / 255, rtol=0)


def test_hue_shift_matches_colorsys():
    out = _photometric(IMAGE, jitter=True, hue=0.23)
    pixels = np.asarray(IMAGE, dtype=np.float64).reshape(-1, 3) / 255
    expected = []
    for r, g, b in pixels:
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        expected.append(colorsys.hsv_to_rgb((h + 0.23) % 1.0, s, v))
    np.testing.assert_allclose(out.reshape(-1, 3), np.array(expected), atol=1e-5)


def test_blur_matches_a_direct_gaussian_convolution():
    sigma, size = 1.3, 9
    out = _photometric(IMAGE, blur=True, blur_sigma=sigma)
    x = np.asarray(IMAGE, dtype=np.float64) / 255
    offsets = np.arange(size) - size // 2
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(x, ((4, 4), (4, 4), (0, 0)), mode="reflect")
    expected = np.zeros_like(x)
    for dy in range(size):
        for dx in range(size):
            expected += kernel[dy] * kernel[dx] * padded[dy : dy + x.shape[0], dx : dx + x.shape[1]]
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_jitter_order_is_per_view():
    """brightness-then-contrast differs from contrast-then-brightness only through clamping; with a
    saturating brightness the two orders differ, and each view gets the one it drew."""
    views = torch.from_numpy(np.asarray(IMAGE).copy()).permute(2, 0, 1)[None].expand(2, -1, -1, -1)
    common = dict(jitter=True, brightness=1.8, contrast=0.5)
    augment = stack_augment(
        [_params(**common, jitter_order=np.array([0, 1, 2, 3])), _params(**common, jitter_order=np.array([1, 0, 2, 3]))]
    )
    out = apply_photometric(views, augment, [0, 0, 0], [1, 1, 1])
    first = _photometric(ImageEnhance.Brightness(IMAGE).enhance(1.8), jitter=True, contrast=0.5)
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), first, atol=2 / 255)
    assert not torch.allclose(out[0], out[1], atol=0.05)


def test_crop_boxes_cover_the_requested_area_and_stay_inside():
    rng = np.random.default_rng(0)
    fractions = []
    for _ in range(500):
        left, top, right, bottom = random_resized_crop_box(rng, 200, 120, [0.05, 0.4], [3 / 4, 4 / 3])
        assert 0 <= left < right <= 200 and 0 <= top < bottom <= 120
        fractions.append((right - left) * (bottom - top) / (200 * 120))
        assert 3 / 4 - 0.05 <= (right - left) / (bottom - top) <= 4 / 3 + 0.05
    assert 0.04 <= min(fractions) and max(fractions) <= 0.42
    # a 1000x10 strip cannot hold a 3/4..4/3 box of 40% area: fallback is the centred box at the ratio limit
    assert random_resized_crop_box(np.random.default_rng(0), 1000, 10, [0.4, 1.0], [3 / 4, 4 / 3]) == (493, 0, 506, 10)


def test_multicrop_views_are_deterministic_for_a_seed_and_have_the_configured_shapes():
    args = MultiCropArguments(num_local_crops=3, local_crop_size=16)
    transform = MultiCropTransform(args, global_crop_size=32)
    image = random_image(1, size=(50, 70))
    a, b = transform(image, np.random.default_rng([0, 0, 5])), transform(image, np.random.default_rng([0, 0, 5]))
    other = transform(image, np.random.default_rng([0, 0, 6]))
    assert a["global_views"].shape == (2, 3, 32, 32) and a["local_views"].shape == (3, 3, 16, 16)
    assert a["global_views"].dtype == torch.uint8
    assert torch.equal(a["global_views"], b["global_views"]) and torch.equal(a["local_views"], b["local_views"])
    assert all(torch.equal(a["local_augment"][k], b["local_augment"][k]) for k in a["local_augment"])
    assert not torch.equal(a["global_views"], other["global_views"])
    # blur always on global view 1 and solarize never on it; solarize possible only on global view 2
    views = [transform(image, np.random.default_rng(i)) for i in range(200)]
    assert all(bool(v["global_augment"]["blur"][0]) for v in views)
    assert not any(bool(v["global_augment"]["solarize"][0]) for v in views)
    assert 0.1 < np.mean([bool(v["global_augment"]["solarize"][1]) for v in views]) < 0.3
    assert not any(bool(v["local_augment"]["solarize"].any()) for v in views)


def test_crop_arguments_are_checked():
    with pytest.raises(ValueError, match="local_crop_size=100 is not a multiple of patch_size=16; use 96 or 112"):
        MultiCropArguments(local_crop_size=100).check_patch_size(16)
    with pytest.raises(ValueError, match=r"blur_probs=\[1.0, 0.5\] needs 3 probabilities"):
        MultiCropArguments(blur_probs=[1.0, 0.5])
    with pytest.raises(ValueError, match="blur_kernel_size=8 must be odd"):
        MultiCropArguments(blur_kernel_size=8)


def test_flip_only_global_views_keep_the_crops_and_drop_the_photometric_ops():
    import numpy as np
    from PIL import Image

    from silc_hf.training.arguments import MultiCropArguments
    from silc_hf.training.augmentation import MultiCropTransform

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8))
    dino = MultiCropTransform(MultiCropArguments(num_local_crops=2, local_crop_size=16), 32)
    flip = MultiCropTransform(
        MultiCropArguments(num_local_crops=2, local_crop_size=16, global_view_augmentation="flip"), 32
    )
    a, b = dino(image, np.random.default_rng(1)), flip(image, np.random.default_rng(1))
    assert torch.equal(a["global_views"], b["global_views"]) and torch.equal(a["local_views"], b["local_views"])
    assert torch.equal(a["global_augment"]["flip"], b["global_augment"]["flip"])
    assert a["global_augment"]["blur"][0]  # global-1 is always blurred in DINO's recipe ...
    for key in ("jitter", "grayscale", "blur", "solarize"):  # ... and never with flips only
        assert not b["global_augment"][key].any()
    for key, value in a["local_augment"].items():  # local views keep DINO's photometric set
        assert torch.equal(value, b["local_augment"][key])
    with pytest.raises(ValueError, match="global_view_augmentation='clip' is not supported"):
        MultiCropArguments(global_view_augmentation="clip")
