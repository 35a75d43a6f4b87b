"""Zero-shot segmentation: exact masks from constructed dense features, sliding window vs resize, pipeline."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import pipeline

from silc_hf import SilcImageProcessor, SilcModel, SilcProcessor
from silc_hf.zero_shot.segmentation import zero_shot_segmentation

from conftest import clip_tokenizer, tiny_silc_config

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


class ColourDouble(SilcModel):
    """Test double: a patch's embedding is its mean (positive part of the normalised) colour, so a pure red
    patch is (1, 0, 0); a text's embedding is the one-hot of the colour word it contains. A patch's nearest
    class is therefore its colour, and a grey patch is equally close to all three."""

    def get_dense_image_features(self, pixel_values, method="value", interpolate_pos_encoding=False):
        patch = self.config.vision_config.patch_size
        means = F.relu(F.avg_pool2d(pixel_values, patch)) + 1e-6  # (batch, 3, grid_h, grid_w)
        return means.permute(0, 2, 3, 1)  # (batch, grid_h, grid_w, 3)

    def get_text_features(self, input_ids, attention_mask=None, **kwargs):
        ids = [self.colour_ids[c] for c in COLOURS]
        embeds = torch.stack([(input_ids == i).any(dim=1).float() for i in ids], dim=1)
        return type("Out", (), {"text_embeds": embeds})()


def _double():
    tokenizer = clip_tokenizer()
    config = tiny_silc_config(
        loss_type="softmax", text_config=dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    )
    model = ColourDouble(config).eval()
    model.colour_ids = {c: tokenizer.convert_tokens_to_ids(f"{c}</w>") for c in COLOURS}
    processor = SilcProcessor(SilcImageProcessor(size={"height": 32, "width": 32}), tokenizer, fixed_text_length=16)
    return model, processor


def _block_image(grid: np.ndarray, block: int) -> Image.Image:
    colours = np.array(list(COLOURS.values()), dtype=np.uint8)
    return Image.fromarray(np.kron(colours[grid], np.ones((block, block, 1), dtype=np.uint8)).astype(np.uint8))


def test_constructed_features_give_the_known_mask_exactly():
    model, processor = _double()
    # one colour per 8 px column band of a 32 px image: every boundary separates two classes along a patch edge,
    # where bilinear upsampling of the patch logits switches class exactly (at a three-class corner it would not)
    grid = np.array([[2, 0, 1, 2]]).repeat(4, axis=0)
    image = _block_image(grid, 8)
    result = zero_shot_segmentation(model, processor, image, list(COLOURS), templates=("a {}",))
    expected = torch.from_numpy(np.kron(grid, np.ones((8, 8), dtype=np.int64)))
    assert torch.equal(result.labels, expected)

    segmenter = pipeline(
        "zero-shot-image-segmentation",
        model=model,
        tokenizer=processor.tokenizer,
        image_processor=processor.image_processor,
    )
    segments = segmenter(image, candidate_labels=list(COLOURS), hypothesis_template="a {}")
    for segment in segments:
        colour_index = list(COLOURS).index(segment["label"])
        assert np.array_equal(np.asarray(segment["mask"]) == 255, grid.repeat(8, 0).repeat(8, 1) == colour_index)
        assert 0 < segment["score"] <= 1
    assert {s["label"] for s in segments} == {list(COLOURS)[i] for i in np.unique(grid)}


def test_the_whole_image_is_segmented_even_with_a_center_cropping_processor():
    """A CLIP-style processor center-crops for classification; segmentation must still label every pixel."""
    from transformers import CLIPImageProcessorPil

    model, processor = _double()
    processor.image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    grid = np.array([[0, 1, 2, 1]]).repeat(2, axis=0)  # 64 x 32 px: four 16 px column bands
    image = _block_image(grid, 16)
    result = zero_shot_segmentation(model, processor, image, list(COLOURS), templates=("a {}",), sliding_window=False)
    assert torch.equal(result.labels, torch.from_numpy(np.kron(grid, np.ones((16, 16), dtype=np.int64))))


def test_sliding_window_on_a_3x_image_matches_resizing_where_the_content_allows():
    model, processor = _double()
    grid = np.array([[0, 1, 2], [2, 0, 1], [1, 2, 0]])
    image = _block_image(grid, 32)  # 96 x 96: three times the 32 px input
    sliding = zero_shot_segmentation(
        model, processor, image, list(COLOURS), templates=("a {}",), sliding_window=True
    ).labels
    resized = zero_shot_segmentation(
        model, processor, image, list(COLOURS), templates=("a {}",), sliding_window=False
    ).labels
    assert sliding.shape == resized.shape == (96, 96)
    interior = np.zeros((96, 96), dtype=bool)  # at least 12 px from every block edge
    for i in range(3):
        for j in range(3):
            interior[32 * i + 12 : 32 * i + 20, 32 * j + 12 : 32 * j + 20] = True
    expected = torch.from_numpy(np.kron(grid, np.ones((32, 32), dtype=np.int64)))
    assert torch.equal(sliding[interior], resized[interior]) and torch.equal(sliding[interior], expected[interior])
    # at native resolution the windows' 8 px patches resolve the block edges better than 24 px resized ones
    assert (sliding == expected).float().mean() >= (resized == expected).float().mean()


def test_background_threshold_marks_uncertain_pixels():
    model, processor = _double()
    grey = Image.new("RGB", (32, 32), (128, 128, 128))  # channels tie: every class equally likely (1/3)
    result = zero_shot_segmentation(
        model, processor, grey, list(COLOURS), templates=("a {}",), background_threshold=0.5
    )
    assert (result.labels == -1).all()
    segmenter = pipeline(
        "zero-shot-image-segmentation",
        model=model,
        tokenizer=processor.tokenizer,
        image_processor=processor.image_processor,
    )
    segments = segmenter(grey, candidate_labels=list(COLOURS), hypothesis_template="a {}", background_threshold=0.5)
    assert [(s["label"], s["score"]) for s in segments] == [("background", None)]


@pytest.mark.parametrize("pooling, loss_type", [("map", "sigmoid"), ("cls", "softmax"), ("mean", "softmax")])
@pytest.mark.parametrize("method", ["value", "plain"])
def test_pipeline_runs_on_saved_models_and_its_masks_partition_the_image(tmp_path, pooling, loss_type, method):
    torch.manual_seed(0)
    tokenizer = clip_tokenizer()
    config = tiny_silc_config(
        loss_type=loss_type,
        vision_config=dict(pooling_type=pooling),
        text_config=dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id),
    )
    SilcModel(config).save_pretrained(tmp_path)
    SilcProcessor(
        SilcImageProcessor(size={"height": 32, "width": 32}), tokenizer, fixed_text_length=16
    ).save_pretrained(tmp_path)
    segmenter = pipeline("zero-shot-image-segmentation", model=str(tmp_path))
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    out = segmenter(image, candidate_labels=["cat", "dog", "bird"], method=method, return_label_map=True)
    assert out["label_map"].shape == (50, 70)
    masks = np.stack([np.asarray(s["mask"]) == 255 for s in out["segments"]])
    assert masks.shape[1:] == (50, 70) and (masks.sum(axis=0) == 1).all()
    with pytest.raises(ValueError, match="candidate_labels is empty"):
        segmenter(image)
