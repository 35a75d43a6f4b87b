"""Tokenizers trained from captions, for training from scratch without any download."""

import json
from collections.abc import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import CLIPTokenizer


def train_clip_tokenizer(texts: Iterable[str], vocab_size: int = 4096, model_max_length: int = 77) -> CLIPTokenizer:
    """Train a byte-level BPE with CLIP's conventions (lower-case, `</w>` word ends, `<|startoftext|>` /
    `<|endoftext|>`) on `texts` with the `tokenizers` library, and return it as a `CLIPTokenizer`.

    Like CLIP's own vocabulary, the base symbols are all 256 byte characters, each also in its word-final
    `</w>` form, so that any text splits into known tokens. Without the `</w>` forms a word of unseen letters
    would hit the unknown token, which CLIP's tokenizer maps to `<|endoftext|>`: EOS pooling would then stop
    there and every prompt sharing that prefix would get the same embedding. `vocab_size` must leave room for
    the 514 base and special tokens."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size <= 2 * len(alphabet) + 2:
        raise ValueError(
            f"vocab_size={vocab_size} leaves no room for merges after the {2 * len(alphabet) + 2} byte-level base "
            f"and special tokens; use e.g. vocab_size={2 * len(alphabet) + 2 + 512}."
        )
    template = CLIPTokenizer()  # CLIP's normalizer and pre-tokenizer, with a placeholder vocabulary
    special = [template.bos_token, template.eos_token]
    backend = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    backend.normalizer = template.backend_tokenizer.normalizer
    backend.pre_tokenizer = template.backend_tokenizer.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=alphabet,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    trained = json.loads(backend.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    # The trainer's merges are deterministic but its token ids are not (hash-set order of the alphabet):
    # number the tokens ourselves (special tokens, sorted base symbols, then merge results in merge order).
    merged = ["".join(pair) for pair in merges]
    word_final = {symbol + "</w>" for symbol in alphabet}
    base = sorted((set(trained["vocab"]) | set(alphabet) | word_final) - set(special) - set(merged))
    vocab = {token: index for index, token in enumerate(dict.fromkeys([*special, *base, *merged]))}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


__all__ = ["train_clip_tokenizer"]
