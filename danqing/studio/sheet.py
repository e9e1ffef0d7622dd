"""A grid job's sheet: one picture per (x, y) cell, column labels on top, row labels on the left.

Small pictures are enlarged by a whole factor (nearest neighbour, so pixels stay pixels) until a cell is at
least ``MIN_CELL`` pixels wide, which leaves room for readable labels.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from ..images import save_image

MIN_CELL = 96
PAD = 4
MAX_LINES = 3


def label(param: str, value: Any) -> str:
    return f"{param}: {value:g}" if isinstance(value, float) else f"{param}: {value}"


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels, at most MAX_LINES lines (the last one cut with an ellipsis)."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    lines.append(line)
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES]
        lines[-1] += " …"
    out = []
    for ln in lines:                                          # a single word wider than the cell: cut it
        while len(ln) > 1 and draw.textlength(ln, font=font) > width:
            ln = ln[:-2] + "…"
        out.append(ln)
    return out


def compose(cells: list[list[Image.Image]], x_labels: list[str], y_labels: list[str] | None) -> Image.Image:
    """cells[row][col] -> one RGB sheet with the labels drawn in."""
    w, h = cells[0][0].size
    k = max(1, math.ceil(MIN_CELL / max(w, h)))
    cw, ch = w * k, h * k
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = int(probe.textbbox((0, 0), "Ag", font=font)[3]) + 2
    x_wrapped = [_wrap(probe, t, font, cw) for t in x_labels]
    top = PAD + line_h * max(len(t) for t in x_wrapped) + PAD
    y_wrapped = [_wrap(probe, t, font, max(cw, 120)) for t in y_labels] if y_labels else []
    left = (PAD + max(int(probe.textlength(ln, font=font)) for t in y_wrapped for ln in t) + PAD) if y_wrapped else 0
    rows, cols = len(cells), len(cells[0])
    sheet = Image.new("RGB", (left + cols * (cw + PAD) + PAD, top + rows * (ch + PAD)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, lines in enumerate(x_wrapped):
        x0 = left + PAD + c * (cw + PAD)
        for j, ln in enumerate(lines):
            draw.text((x0, PAD + j * line_h), ln, fill="black", font=font)
    for r, row in enumerate(cells):
        y0 = top + r * (ch + PAD)
        if y_wrapped:
            for j, ln in enumerate(y_wrapped[r]):
                draw.text((PAD, y0 + j * line_h), ln, fill="black", font=font)
        for c, img in enumerate(row):
            sheet.paste(img.convert("RGB").resize((cw, ch), Image.Resampling.NEAREST),
                        (left + PAD + c * (cw + PAD), y0))
    return sheet


def save_sheet(sheet: Image.Image, path: str | Path, params: dict[str, Any], a1111: str) -> Path:
    """Write the sheet as PNG: ``danqing`` holds the first cell's parameters plus ``grid`` (the axes and every
    cell's parameters); ``parameters`` is the first cell's A1111 text with the axes appended."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", a1111)
    info.add_text("danqing", json.dumps(params))
    return save_image(sheet, path, pnginfo=info)


def sheet_params(cell_params: list, x: dict[str, Any], y: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """The sheet's parameters (see ``save_sheet``) and its A1111 text, from the cells' Params (row-major)."""
    first = cell_params[0]
    grid = {"x": x, "y": y, "cells": [asdict(p) for p in cell_params]}
    axes = f"x={x['param']} " + "|".join(map(str, x["values"]))
    if y:
        axes += f"; y={y['param']} " + "|".join(map(str, y["values"]))
    return {**asdict(first), "grid": grid}, f"{first.a1111()}, Grid: {json.dumps(axes)}"
