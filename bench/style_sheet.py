"""A contact sheet of style transfer: content photos (rows) x styles (column pairs), Gatys and AdaIN side by side.

    python bench/style_sheet.py [--size 384] [--steps 100] [--decoder RUN] [--alpha 1] [--cells DIR]
                                [--redo gatys,adain] -o docs/style-sheet.jpg

The pictures come from `danqing data fetch photos` and `danqing data fetch paintings` (fetch both first).
The first row shows the style pictures, the first column the content photos; every other cell is the
content painted in its column's style, by Gatys et al. (library defaults, --steps L-BFGS iterations) or
by AdaIN (the bundled decoder unless --decoder).  The seconds each method took are printed per cell.
Every cell is also kept as a PNG (with its parameters) in --cells and taken from there the next time unless
its method is in --redo, so the slow Gatys cells need not be painted again for a new decoder.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from style_speed import centre_square  # bench/ is on the path when run as a script

from danqing.data.sources import cache_root
from danqing.style import load_decoder, save, transfer
from danqing.style.vgg import StyleError

CONTENTS = ["scikit-learn/china.jpg", "tuxpaint/lighthouse.jpg", "tuxpaint/sheep.jpg", "opencv/fruits.jpg"]
STYLES = ["starry-night/starry_night.jpg", "leiden-aratea/aratea_small_leo.jpg", "gimp-patterns/Legacy-pastel.png",
          "krita-patterns/13_drawed_swirl.png"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=384, help="longest side the pictures are painted at")
    ap.add_argument("--cell", type=int, default=192, help="side of a cell in the sheet")
    ap.add_argument("--steps", type=int, default=100, help="Gatys L-BFGS iterations")
    ap.add_argument("--alpha", type=float, default=1.0, help="AdaIN content/style trade-off")
    ap.add_argument("--decoder", help="an AdaIN run or checkpoint (default: the bundled decoder)")
    ap.add_argument("--cells", default="style-sheet-cells", help="folder of the cells' PNGs")
    ap.add_argument("--redo", default="", help="methods whose cells are painted again (gatys,adain)")
    ap.add_argument("-o", "--output", default="style-sheet.jpg")
    a = ap.parse_args()

    root = cache_root() / "sources"
    contents = [root / "photos" / "images" / p for p in CONTENTS]
    styles = [root / "paintings" / "images" / p for p in STYLES]
    missing = [str(p) for p in contents + styles if not p.is_file()]
    if missing:
        raise SystemExit(f"missing pictures ({', '.join(missing)}); run `danqing data fetch photos` and "
                         "`danqing data fetch paintings` first")
    c, pad, head = a.cell, 6, 18
    cols = 1 + 2 * len(styles)
    sheet = Image.new("RGB", (cols * (c + pad) + pad, (1 + len(contents)) * (c + pad) + head + pad), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()

    def at(col: int, row: int) -> tuple[int, int]:
        return pad + col * (c + pad), head + pad + row * (c + pad)

    for j, s in enumerate(styles):
        x, y = at(1 + 2 * j, 0)
        sheet.paste(centre_square(Image.open(s), c), (x + (c + pad) // 2, y))
        draw.text((x, 4), "Gatys", fill="black", font=font)
        draw.text((x + c + pad, 4), "AdaIN", fill="black", font=font)
    cells = Path(a.cells)
    cells.mkdir(parents=True, exist_ok=True)
    redo = {m for m in a.redo.split(",") if m}
    decoder: list = []                                   # load_decoder's tuple, loaded when first needed

    def adain_decoder() -> tuple:
        if not decoder:
            try:
                decoder.append(load_decoder(a.decoder))
            except StyleError as e:
                raise SystemExit(str(e)) from None
        return decoder[0]

    def cell(content: Path, style: Path, method: str) -> Image.Image:
        path = cells / f"{content.stem}-{style.stem}-{method}.png"
        if path.is_file() and method not in redo:
            return Image.open(path)
        t0 = time.perf_counter()
        img = (transfer(content, [style], method="gatys", size=a.size, steps=a.steps) if method == "gatys" else
               transfer(content, [style], method="adain", decoder=adain_decoder(), size=a.size, alpha=a.alpha))
        print(f"{content.name} x {style.name}: {method} {time.perf_counter() - t0:.2f} s", flush=True)
        save(img, path)
        return img

    for i, p in enumerate(contents):
        sheet.paste(centre_square(Image.open(p), c), at(0, 1 + i))
        for j, s in enumerate(styles):
            for k, method in enumerate(("gatys", "adain")):
                sheet.paste(centre_square(cell(p, s, method), c), at(1 + 2 * j + k, 1 + i))
    sheet.save(a.output)
    print(f"wrote {a.output}: {len(contents)} photos x {len(styles)} styles at {a.size} px")


if __name__ == "__main__":
    main()
