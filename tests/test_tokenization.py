from silc_hf.tokenization import train_clip_tokenizer


def test_trained_tokenizer_learns_caption_words_and_round_trips():
    captions = ["a red circle on a green background.", "two blue squares, one small triangle"] * 5
    tokenizer = train_clip_tokenizer(captions, vocab_size=400, model_max_length=24)
    assert tokenizer.tokenize("A red circle.") == ["a</w>", "red</w>", "circle</w>", ".</w>"]
    encoded = tokenizer("Two blue squares", padding="max_length")
    assert len(encoded["input_ids"]) == 24
    assert encoded["input_ids"][0] == tokenizer.bos_token_id and tokenizer.eos_token_id in encoded["input_ids"]
    assert tokenizer.decode(encoded["input_ids"], skip_special_tokens=True) == "two blue squares"
    assert "<unk>" not in tokenizer.tokenize("ünïcödé")  # byte-level alphabet: nothing is out of vocabulary


def test_training_twice_gives_the_same_token_ids():
    """tokenizers numbers the alphabet in hash order; the ids here must not change between runs (resumption)."""
    captions = ["a red circle on a green background."] * 3
    vocabularies = [train_clip_tokenizer(captions, vocab_size=300).get_vocab() for _ in range(3)]
    assert vocabularies[0] == vocabularies[1] == vocabularies[2]
