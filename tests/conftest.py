import json
import os

import pytest
import torch

# A tiny random BERT stands in for MiniLM in tests: whole letters and word pieces, so any lowercase text tokenizes.
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz0123456789,.!") + \
    ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"] + ["fox", "face", "red", "apple", "cat", "style", "3d"]


def build_tiny_bert(folder, seed=0, hidden=32):
    """Save a random 2-layer BERT (hidden size ``hidden``) with a BERT tokenizer into ``folder``."""
    import transformers
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                              "do_lower_case": True}))
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=hidden, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=64)
    transformers.utils.logging.disable_progress_bar()
    transformers.BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_text_encoder(tmp_path_factory):
    """A folder holding the tiny BERT (32-d states, as the "tiny" text-to-image preset expects)."""
    pytest.importorskip("transformers")
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets a private dataset cache, so tests never see each other's files or the user's."""
    monkeypatch.setenv("DANQING_CACHE", str(tmp_path_factory.mktemp("cache")))


def pytest_configure(config):
    # Tests run in parallel workers on small CPUs: one intra-op thread each avoids oversubscription.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
