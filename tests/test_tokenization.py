import torch
import torch.nn.functional as F

from silc_hf import SilcModel
from silc_hf.training.tokenization import train_clip_tokenizer

from conftest import tiny_silc_config


def test_trained_tokenizer_learns_caption_words_and_round_trips():
    captions = ["a red circle on a green background.", "two blue squares, one small triangle"] * 5
    tokenizer = train_clip_tokenizer(captions, vocab_size=600, model_max_length=24)
    assert tokenizer.tokenize("A red circle.") == ["a</w>", "red</w>", "circle</w>", ".</w>"]
    encoded = tokenizer("Two blue squares", padding="max_length")
    assert len(encoded["input_ids"]) == 24
    assert encoded["input_ids"][0] == tokenizer.bos_token_id and tokenizer.eos_token_id in encoded["input_ids"]
    assert tokenizer.decode(encoded["input_ids"], skip_special_tokens=True) == "two blue squares"


def test_unseen_words_never_become_eos():
    """Words (and characters) absent from the captions split into byte-level symbols; the only EOS is the one the
    tokenizer appends, so EOS pooling reads the whole prompt."""
    tokenizer = train_clip_tokenizer(["a red circle on a green background."] * 5, vocab_size=600)
    for prompt in ["a photo of a blue square", "zebra quokka xylophone", "ünïcödé Ω 漢字 🙂", "jjj qqq vvv"]:
        ids = tokenizer(prompt)["input_ids"]
        assert ids[-1] == tokenizer.eos_token_id and tokenizer.eos_token_id not in ids[:-1], (prompt, ids)
        assert tokenizer.unk_token_id not in ids[:-1]
        assert tokenizer.decode(ids, skip_special_tokens=True) == prompt.lower()


def test_prompts_with_unseen_words_get_distinct_embeddings():
    """With EOS pooling, an unknown word mapped onto EOS made every prompt with the same prefix identical
    ("a photo of a red circle" == "a photo of a blue square", cosine 1.0)."""
    tokenizer = train_clip_tokenizer(["a red circle on a green background.", "a blue square"] * 5, vocab_size=600)
    config = tiny_silc_config(
        text_config={
            "vocab_size": len(tokenizer),
            "pooling_type": "eos",
            "causal_attention": True,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
    )
    torch.manual_seed(0)
    model = SilcModel(config).eval()
    prompts = ["a photo of a red circle", "a photo of a blue square", "a photo of a green circle"]
    tokens = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        embeds = F.normalize(model.get_text_features(**tokens).text_embeds, dim=-1)
    cosine = embeds @ embeds.t()
    assert cosine[0, 1] < 0.999 and cosine[0, 2] < 0.999 and cosine[1, 2] < 0.999, cosine


def test_vocab_size_too_small_for_the_byte_alphabet_is_refused():
    import pytest

    with pytest.raises(ValueError, match="vocab_size=400 leaves no room"):
        train_clip_tokenizer(["a red circle"], vocab_size=400)


def test_training_twice_gives_the_same_token_ids():
    """tokenizers numbers the alphabet in hash order; the ids here must not change between runs (resumption)."""
    captions = ["a red circle on a green background."] * 3
    vocabularies = [train_clip_tokenizer(captions, vocab_size=600).get_vocab() for _ in range(3)]
    assert vocabularies[0] == vocabularies[1] == vocabularies[2]


def test_the_processor_pads_to_the_longest_and_truncates_at_the_tower_length_without_warnings():
    import warnings

    from silc_hf import SilcImageProcessor, SilcProcessor

    tokenizer = train_clip_tokenizer(
        ["a red car", "a small white flower on grass"] * 10, vocab_size=600, model_max_length=8
    )
    processor = SilcProcessor(SilcImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # transformers' "max_length is ignored when padding=True" would raise
        tokens = processor(text=["a red car", "a small white flower on grass " * 4], return_tensors="pt")
    assert tokens["input_ids"].shape == (2, 8)
