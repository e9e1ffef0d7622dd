"""Emoji names: match keys shared by all sets, CLDR names, aliases, Fluent's file names, and the
caption variants built from them ("fox face, 3d style" for the fox)."""
from __future__ import annotations

import functools
import re
import unicodedata
from typing import Iterable, Sequence

from .base import DataError


# ---------------------------------------------------------------- names

def key_of(codepoints: Iterable[int]) -> str:
    """``[0x1F98A, 0xFE0F]`` -> ``"1f98a"``: the match key shared by all sources."""
    return "-".join(f"{c:x}" for c in codepoints if c != 0xFE0F)


def key_from_hex(stem: str) -> str | None:
    """A file stem such as ``"1F441-FE0F-200D-1F5E8"`` as a key, or None if it is not hex."""
    try:
        return key_of(int(part, 16) for part in stem.split("-"))
    except ValueError:
        return None


_TONE = r"(?:light|medium-light|medium|medium-dark|dark) skin tone"
_PEOPLE = r"(?:man|woman|person|boy|girl|adult|child)"


def cldr_name(text: str, en: str) -> str:
    """Restore CLDR punctuation to a name from the ``emoji`` package.

    That package stores ``:woman_technologist_medium_skin_tone:``; CLDR (and
    Unicode's emoji-test.txt) says "woman technologist: medium skin tone".
    These rules reproduce over 99% of the Unicode 15 names exactly.
    """
    name = en.strip(":").replace("_", " ")
    cps = [ord(c) for c in text if ord(c) != 0xFE0F]
    if (len(cps) == 2 and all(0x1F1E6 <= c <= 0x1F1FF for c in cps)) or \
            (len(cps) > 1 and cps[0] == 0x1F3F4 and 0xE0020 <= cps[1] <= 0xE007F):
        return f"flag: {name}"          # regional-indicator pairs and subdivision tag flags
    if name.startswith("keycap "):
        return f"keycap: {name[7:]}"
    tones = re.fullmatch(rf"(.*?) ({_TONE})(?: ({_TONE}))?(?: (.*))?", name)
    if tones:
        name = f"{tones[1]}: " + ", ".join(p for p in tones.groups()[1:] if p)
    people = re.fullmatch(rf"(kiss|couple with heart|family) ({_PEOPLE}(?: {_PEOPLE})*)(?:: (.*))?", name)
    if people:
        return f"{people[1]}: " + ", ".join([*people[2].split(), *([people[3]] if people[3] else [])])
    hair = re.fullmatch(r"(man|woman|person) (white hair|red hair|curly hair|bald|beard|blond hair)", name)
    return f"{hair[1]}: {hair[2]}" if hair else name


@functools.lru_cache(maxsize=1)
def emoji_table() -> dict[str, tuple[str, str]]:
    """key -> (subject, emoji text); components (skin-tone swatches) and lone regional letters have no name."""
    try:
        import emoji
    except ImportError:
        raise DataError("the emoji data set takes its names from the `emoji` package, which is not "
                        "installed; run `pip install 'danqing[emoji]'` (or `pip install emoji`)") from None
    table: dict[str, tuple[str, str]] = {}
    for text, info in emoji.EMOJI_DATA.items():
        if info.get("status") == emoji.STATUS["fully_qualified"]:
            table[key_of(map(ord, text))] = (cldr_name(text, info["en"]), text)
    return table


@functools.lru_cache(maxsize=1)
def emoji_aliases() -> dict[str, list[str]]:
    """key -> other names people use for the emoji, as words: the ``emoji`` package's aliases (mostly
    GitHub and Slack shortcodes), e.g. the fox ``:fox_face:`` -> "fox face", the red apple -> "apple".
    Codes of one or two letters ("fr") and names with symbols ("+1") are left out.  Empty without
    the package (sources that bring their own names, as in tests, then get no aliases)."""
    try:
        import emoji
    except ImportError:
        return {}
    out: dict[str, list[str]] = {}
    for text, info in emoji.EMOJI_DATA.items():
        names = [a.strip(":").replace("_", " ") for a in info.get("alias") or ()]
        kept = [a for a in names if len(a) > 2 and re.fullmatch(r"[\w '’.&-]+", a)]
        if kept:
            out[key_of(map(ord, text))] = list(dict.fromkeys(kept))
    return out


_TONE_CODES = {"light": "1f3fb", "medium-light": "1f3fc", "medium": "1f3fd", "medium-dark": "1f3fe", "dark": "1f3ff"}
# Fluent file names that differ from the CLDR name by more than punctuation.
_FLUENT_NAMES = {
    "blackbird": "1f426-200d-2b1b", "phoenix-bird": "1f426-200d-1f525", "red-triangle": "1f53a",
    "stuffedbread-flat": "1f959", "hugging-face": "1f917", "knocked-out-face": "1f635", "pouting-face": "1f621",
    "keycap-asterisk": "2a-20e3", "keycap-hashtag": "23-20e3",
    "person-blonde-hair": "1f471", "man-blonde-hair": "1f471-200d-2642", "woman-blonde-hair": "1f471-200d-2640",
    **{f"{who}-{what}": f"{base}{suffix}"
       for who, suffix in (("person", ""), ("man", "-200d-2642"), ("woman", "-200d-2640"))
       for what, base in (("merpeople", "1f9dc"), ("deaf", "1f9cf"), ("with-bunny-ears", "1f46f"), ("wrestling", "1f93c"))},
}


def _slug(text: str) -> str:
    """"eight o’clock" -> "eight-oclock", "piñata" -> "pinata" (the Fluent spelling)."""
    plain = unicodedata.normalize("NFKD", text.lower().replace("’", "").replace("'", ""))
    return re.sub(r"[^a-z0-9]+", "-", plain.encode("ascii", "ignore").decode()).strip("-")


def fluent_keys(stems: Iterable[str]) -> dict[str, str]:
    """Match Fluent file names ("thumbs-up-medium-dark", "fox") to keys; unmatched ones are left out.
    Names are CLDR names with tone suffixes, a tone only when the "-default" file exists too."""
    table = emoji_table()
    by_slug: dict[str, str | None] = {}
    for key, (name, _) in table.items():       # "keycap: #" and "keycap: *" both slug to "keycap": ambiguous
        slug = _slug(name)
        by_slug[slug] = key if by_slug.get(slug, key) == key else None
    stems = set(stems)
    out: dict[str, str] = {}
    for stem in stems:
        base, tone = stem.removesuffix("-default"), None
        for word in sorted(_TONE_CODES, key=len, reverse=True):
            if stem.endswith(f"-{word}") and f"{stem[:-len(word) - 1]}-default" in stems:
                base, tone = stem[:-len(word) - 1], word
                break
        key = _FLUENT_NAMES.get(base) or by_slug.get(base) or by_slug.get(base.removeprefix("person-"))
        if key is not None and tone is not None:
            # "X: dark skin tone" by name, else the tone modifier right after the first codepoint.
            parts = key.split("-")
            toned = [by_slug.get(f"{_slug(table[key][0])}-{tone}-skin-tone"),
                     "-".join([parts[0], _TONE_CODES[tone], *parts[1:]])]
            key = next((k for k in toned if k in table), None)
        if key is not None:
            out[stem] = key
    return out


# ---------------------------------------------------------------- captions

_NO_ARTICLE = re.compile(r"(?:\d|(?:a|an|the|no|one|two|three|flag|keycap)\b)", re.IGNORECASE)


def _plain(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", name.casefold()).strip()


def _with_article(name: str) -> str:
    """"fox" -> "a fox", "owl" -> "an owl", "unicorn" -> "a unicorn" (by sound, as far as spelling tells)."""
    an = name[:1].lower() in "aeiou" and not re.match(r"(?:uni|use|eu|one)", name, re.IGNORECASE)
    return f"{'an' if an else 'a'} {name}"


def aliases_of(key: str, subject: str) -> list[str]:
    """The aliases of ``key``; a skin-tone variant without its own takes its base emoji's, toned:
    "thumbsup: medium skin tone"."""
    table = emoji_aliases()
    if key in table:
        return table[key]
    base = "-".join(part for part in key.split("-") if part not in _TONE_CODES.values())
    tones = subject.partition(": ")[2]
    return [f"{a}: {tones}" for a in table.get(base, ())] if base != key and "skin tone" in tones else []


def caption_variants(subject: str, style: str, aliases: Sequence[str] = ()) -> list[str]:
    """Other phrasings of the caption "{subject}, {style}", which text-to-image training draws too:
    each alias, then the subject and each alias with an article.  For the fox: "fox face, 3d style",
    "a fox, 3d style", "a fox face, 3d style".  Names and counted things ("flag: Finland",
    "two hearts", "keycap: 5") get no article; aliases equal to the subject but for case, hyphens
    or spaces are dropped."""
    by_plain: dict[str, str] = {}
    for name in (subject, *aliases):
        by_plain.setdefault(_plain(name), name)
    names = list(by_plain.values())
    article = not _NO_ARTICLE.match(subject)
    out = [f"{name}, {style}" for name in names[1:]]
    if article:
        out += [f"{_with_article(name)}, {style}" for name in names]
    return out
