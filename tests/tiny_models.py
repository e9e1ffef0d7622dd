"""Tiny stand-ins for pretrained models, built locally so tests never need a download."""
import json

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


FAST = ["--steps", "3", "--batch-size", "8", "-q", "--bf16", "off", "--train.sample_n=2"]


def train_tiny(root, *families):
    """Train tiny runs on the built-in digits into ``root``/NAME, a few steps each, through the CLI.

    Names: "ae" (autoencoder), "t2i" (text to image inside "ae", which must come first), "scorer", "gan" (a
    class-conditional DCGAN).  Text models need $DANQING_TEXT_ENCODER set to the tiny BERT.
    """
    from danqing.cli import main
    args = {"ae": ["autoencoder"], "t2i": ["t2i", "--autoencoder", str(root / "ae")], "scorer": ["scorer"],
            "gan": ["dcgan"]}
    for name in families:
        family, *extra = args[name]
        assert main(["train", family, "--data", "digits", "--preset", "tiny", *FAST, *extra,
                     "--out", str(root / name)]) == 0
    return root


def train_tiny_adain(root):
    """A tiny AdaIN decoder trained 2 steps through the CLI on synthetic pictures, into ``root``/"run"."""
    import numpy as np
    from PIL import Image

    from danqing.cli import main
    g = np.random.default_rng(0)
    for i in range(3):
        for kind, size in (("content", (48, 40)), ("style", (40, 40))):
            (root / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(g.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize(size).save(root / kind / f"{i}.png")
    assert main(["train", "adain", "--preset", "tiny", "--content", str(root / "content"), "--style",
                 str(root / "style"), "--steps", "2", "--batch-size", "2", "--out", str(root / "run"), "-q"]) == 0
    return root / "run"
