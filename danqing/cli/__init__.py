"""The ``danqing`` command: one subcommand per verb.

    danqing paint "a fox face, 3d style" [-n 4] [--seed S] [--best-of N] [--model M] [-o paintings]
    danqing train FAMILY --data SRC --preset P [--steps N] [--out DIR] [--resume] [--model.x=..]
    danqing sample CKPT -n 64 --seed S [--sampler heun] [--steps K] [--guidance G] [--class C] -o grid.png
    danqing eval --generated DIR|MODEL --reference DIR|DATASET --metrics fid,kid,...
    danqing project PICTURE --model RUN -o OUT/ [--steps 300] [--space w|w+] [--class C]
    danqing translate INPUT... --model RUN -o OUT/ [--reverse yes] [--seed S]
    danqing export CKPT -o FOLDER
    danqing data info|preview|fetch SRC
    danqing models
    danqing studio [--host 127.0.0.1] [--port 7860] [--data-dir ./studio-data] [--runs ./runs] [--queue 32] [--decoder RUN]
                   [--token TOKEN]
    danqing style CONTENT --style STYLE [--style S2 --style-weights 0.7,0.3] [--method gatys|adain] -o out.png

One module per group of verbs (train.py, paint.py, project.py, translate.py, data.py, studio.py, style.py); this one builds the parser and
runs a verb.

Every user mistake ends in one line on stderr saying what was wrong and what
to do, with exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..config import ConfigError
from .common import UsageError
from .data import cmd_data, cmd_eval
from .paint import add_option_flags, cmd_paint, cmd_sample
from .project import cmd_project
from .studio import cmd_studio
from .style import cmd_style
from .translate import cmd_translate
from .train import cmd_export, cmd_models, cmd_train

# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    from ..families import FAMILIES

    p = argparse.ArgumentParser(prog="danqing", description="danqing: AI painting under one protocol")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model on a folder of images or a built-in dataset",
                       description="Extra settings: --model.NAME=VALUE, --train.NAME=VALUE, --data.NAME=VALUE "
                                   "(see `danqing models` and docs/ARCHITECTURE.md).")
    t.add_argument("family", choices=list(FAMILIES), help="model family")
    t.add_argument("--data", help="a folder of images or a built-in source (digits, mnist)")
    t.add_argument("--content", metavar="DIR|DATASET", help="adain: the content pictures (the same as --data)")
    t.add_argument("--style", metavar="DIR|DATASET", help="adain: the style pictures (--role style=DIR|DATASET)")
    t.add_argument("--role", action="append", default=[], metavar="NAME=DIR|DATASET",
                   help="a data set the family trains on beside --data, by role (see `danqing models`)")
    t.add_argument("--preset", default="small", help="model size preset (see `danqing models`)")
    t.add_argument("--steps", type=int, help="training steps")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--minutes", type=float, help="stop (with a checkpoint) after this much wall time")
    t.add_argument("--out", help="run folder (default runs/FAMILY-PRESET-DATA)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    t.add_argument("--bf16", choices=["auto", "on", "off"], help="bf16 autocast (auto: only where the hardware runs it natively)")
    t.add_argument("--seed", type=int)
    t.add_argument("--flip", action="store_true", help="random horizontal flips")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    t.add_argument("--autoencoder", help="latent models: the trained autoencoder (run or checkpoint folder)")
    t.add_argument("--init", help="start from the weights of this checkpoint (same model settings), "
                                  "with a fresh optimiser: fine-tuning, or continuing an exported model")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("sample", help="draw pictures from a trained model")
    s.add_argument("checkpoint", help="a run folder or a checkpoint folder")
    s.add_argument("-n", type=int, default=64, help="number of images")
    s.add_argument("--seed", type=int, default=0, help="image i uses seed SEED+i")
    add_option_flags(s)
    s.add_argument("--class", dest="cls", help="class name or id (default: cycle through the classes)")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bf16 autocast (auto: where the hardware runs it natively; off: the fp32 reference)")
    s.add_argument("--nrow", type=int, help="images per row of the grid")
    s.add_argument("--mix-grid", metavar="ROWS/COLS", help="style mixing sheet, e.g. 1,2,3/7,8,9: row seed r painted "
                   "with the --mix-layers styles of column seed c (the seeds' own pictures on the edges)")
    s.add_argument("--latent", metavar="FILE", help="paint a projected picture (danqing project) instead of seeds, "
                   "with the options above (--truncation, --mix-seed ...)")
    s.add_argument("--toward", type=int, metavar="SEED", help="with --latent: -n pictures from the projected one "
                   "to the picture of SEED (an interpolation in the model's style space)")
    s.add_argument("-o", "--output", default="samples.png")
    s.set_defaults(fn=cmd_sample)

    pj = sub.add_parser("project", help="find a real picture in a model's latent space (StyleGAN, diffusion)",
                        description="Writes OUT/NAME.latent.safetensors (paint it with danqing sample --latent), "
                                    "OUT/NAME.png (the model's picture) and OUT/NAME-steps.png (the search).")
    pj.add_argument("pictures", nargs="+", metavar="PICTURE", help="one or more pictures (1-16)")
    pj.add_argument("--model", required=True, help="a run or checkpoint folder, or a bundled model name")
    pj.add_argument("-o", "--output", required=True, metavar="OUT", help="the folder to write to")
    pj.add_argument("--steps", type=int, default=300, help="optimisation or inversion steps (default 300)")
    pj.add_argument("--space", default="", help="the latent space: w (default) or w+ for StyleGAN")
    pj.add_argument("--class", dest="cls", help="class models: the class of the pictures")
    pj.add_argument("--prompt", help="text models: a caption of the pictures")
    pj.add_argument("--distance", choices=["vgg", "pixel"], default="vgg",
                    help="what the search minimises: VGG19 perceptual distance plus a pixel term (default), or pixels")
    pj.add_argument("--pixel-weight", type=float, default=1.0, help="the pixel term's weight with --distance vgg")
    pj.add_argument("--fit", choices=["crop", "pad"], help="pictures that are not square: centre-crop or pad")
    pj.add_argument("--seed", type=int, default=0, help="the seed of the search's noise")
    pj.set_defaults(fn=cmd_project)

    tr = sub.add_parser("translate", help="turn pictures into others with a Pix2Pix, CycleGAN or CUT model",
                        description="Writes OUT/NAME.png for every input picture, with its parameters in the PNG.")
    tr.add_argument("pictures", nargs="+", metavar="INPUT", help="picture files or folders of pictures")
    tr.add_argument("--model", required=True, help="a run or checkpoint folder, or a bundled model name")
    tr.add_argument("-o", "--output", required=True, metavar="OUT", help="the folder to write to")
    tr.add_argument("--seed", type=int, default=0, help="the seed of the model's noise (dropout), if it has any")
    add_option_flags(tr, translating=True)
    tr.add_argument("--fit", choices=["crop", "pad"], help="pictures that are not square: centre-crop or pad")
    tr.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    tr.set_defaults(fn=cmd_translate)

    pt = sub.add_parser("paint", help="paint pictures from a text prompt (the bundled model by default)")
    pt.add_argument("prompt", nargs="?", help='what to paint, e.g. "a fox face, 3d style"')
    pt.add_argument("-n", type=int, default=4, help="number of pictures (1-16)")
    pt.add_argument("--seed", type=int, help="picture i uses seed SEED+i (default: random)")
    pt.add_argument("--negative", default="", help="negative prompt: what the picture should not be")
    pt.add_argument("--size", type=int, help="picture side in pixels (a multiple of the model's stride)")
    pt.add_argument("--init", help="image-to-image: start from this picture")
    add_option_flags(pt)
    pt.add_argument("--mask", help="inpainting: white = repaint, black = keep (needs --init)")
    pt.add_argument("--model", help="a bundled model name or a run/checkpoint folder (default: emoji)")
    pt.add_argument("--from", dest="source", help="repaint the picture whose parameters this PNG carries")
    pt.add_argument("--best-of", type=int, default=1, metavar="N",
                    help="paint N candidates per picture and keep the one the prompt-consistency scorer rates best")
    pt.add_argument("--scorer", help="the scorer for --best-of: a run/checkpoint folder (default: the bundled one)")
    pt.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    pt.add_argument("-o", "--output", default="paintings", help="folder for numbered PNGs")
    pt.add_argument("-q", "--quiet", action="store_true")
    pt.set_defaults(fn=cmd_paint)

    e = sub.add_parser("export", help="write a weights-only copy of a checkpoint (EMA, fp16) for shipping")
    e.add_argument("checkpoint", help="a run folder or a checkpoint folder")
    e.add_argument("-o", "--output", required=True, help="the folder to write")
    e.add_argument("--fp32", action="store_true", help="keep fp32 weights")
    e.set_defaults(fn=cmd_export)

    d = sub.add_parser("data", help="inspect, preview or fetch a dataset")
    d.add_argument("action", choices=["info", "preview", "fetch"])
    d.add_argument("source", help="a folder or a built-in source (digits, mnist)")
    d.add_argument("--size", type=int, default=32)
    d.add_argument("--channels", type=int, choices=[1, 3], default=3)
    d.add_argument("-n", type=int, default=64, help="preview: number of images")
    d.add_argument("--augment", metavar="POLICY", help="preview: what a GAN's discriminator sees with "
                   "--model.augment=POLICY, e.g. color,translation,cutout (each transform always applied)")
    d.add_argument("--seed", type=int, default=0, help="preview --augment: the seed of the random transforms")
    d.add_argument("-o", "--output", default="preview.png")
    d.add_argument("--force", action="store_true", help="fetch: download and rebuild even if the data is there")
    d.add_argument("--only", help="fetch emoji: only these styles, e.g. twemoji,noto,openmoji,fluent-flat,fluent-3d; "
                                  "photos/paintings: only these sources, e.g. opencv,scikit-learn")
    d.set_defaults(fn=cmd_data)

    ev = sub.add_parser("eval", help="score generated pictures against reference data (FID, KID, precision/recall...)")
    ev.add_argument("--generated", required=True, metavar="DIR|MODEL",
                    help="a folder of pictures, or a model: a bundled name or a run/checkpoint folder")
    ev.add_argument("--reference", required=True, metavar="DIR|DATASET", help="a folder or a built-in data set")
    ev.add_argument("--metrics", default="fid,kid,pr", help="any of fid,kid,pr,clip,diversity,memorisation,isc")
    ev.add_argument("--prompts", metavar="FILE", help="one prompt per line: what a text model paints, or a folder's")
    ev.add_argument("--train", metavar="DATASET", help="memorisation: the training data (default: the model's)")
    ev.add_argument("-n", type=int, help="pictures a model paints (default 1000), or the first N of a folder")
    ev.add_argument("--scorer", metavar="RUN_FOLDER", help="clip: a prompt-consistency scorer (danqing train scorer)")
    ev.add_argument("--report", metavar="OUT_DIR", help="write report.json, report.html and the plots here")
    ev.add_argument("--bootstrap", type=int, default=10, metavar="R", help="FID bootstrap rounds (0: no interval)")
    ev.add_argument("--features", choices=["inception", "vgg19"], default="inception",
                    help="the feature space of pr, diversity and memorisation (FID and KID always use Inception)")
    ev.set_defaults(fn=cmd_eval)

    m = sub.add_parser("models", help="list model families and presets")
    m.set_defaults(fn=cmd_models)

    st = sub.add_parser("studio", help="serve the web studio: paint in the browser, history, REST API (docs/studio.md)")
    st.add_argument("--host", default="127.0.0.1", help="address to bind (anything but loopback needs --token)")
    st.add_argument("--token", help="every API request must carry it (default: $DANQING_STUDIO_TOKEN; "
                                    "required beyond loopback; open /?token=TOKEN once in the browser)")
    st.add_argument("--port", type=int, default=7860)
    st.add_argument("--data-dir", default="./studio-data", help="jobs, images, uploads and the history database")
    st.add_argument("--runs", default="./runs", help="run and checkpoint folders to offer as models")
    st.add_argument("--queue", type=int, default=32, help="jobs that may wait; more are refused (HTTP 429)")
    st.add_argument("--decoder", metavar="RUN", help="the AdaIN decoder of style jobs (default: the bundled one)")
    st.set_defaults(fn=cmd_studio)

    sy = sub.add_parser("style", help="paint a photo in the style of paintings (Gatys et al. or AdaIN; docs/style.md)")
    sy.add_argument("content", help="a picture, or a folder of pictures (one output each into the -o folder)")
    sy.add_argument("--style", action="append", required=True, metavar="STYLE",
                    help="a style picture; repeat to blend several")
    sy.add_argument("--style-weights", metavar="W1,W2", help="one blend weight per --style, e.g. 0.7,0.3")
    sy.add_argument("--method", choices=["gatys", "adain"], default="gatys",
                    help="gatys: optimise the picture (slow, any style); adain: one pass of a trained decoder")
    sy.add_argument("--alpha", type=float, help="adain: 0 = the content, 1 = full style (default 1)")
    sy.add_argument("--preserve-color", nargs="?", const="luminance", choices=["luminance", "histogram"],
                    help="keep the content's colours: transfer luminance only (default) or recolour the styles")
    sy.add_argument("--size", type=int, default=512, help="longest side of the output at most (bigger is downscaled)")
    sy.add_argument("--steps", type=int, help="gatys: L-BFGS iterations at the coarse scale (default 100)")
    sy.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs", help="gatys: the optimiser")
    sy.add_argument("--style-weight", type=float, help="gatys: beta, the style loss weight (default 100)")
    sy.add_argument("--content-weight", type=float, help="gatys: alpha, the content loss weight (default 1)")
    sy.add_argument("--tv-weight", type=float, help="gatys: the total-variation weight (default 10)")
    sy.add_argument("--decoder", metavar="PATH", help="adain: a trained decoder's run or checkpoint folder "
                                                      "(default: the bundled adain-decoder)")
    sy.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    sy.add_argument("-o", "--output", help="the PNG to write (default styled.png), or a folder for a folder")
    sy.add_argument("-q", "--quiet", action="store_true")
    sy.set_defaults(fn=cmd_style)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    from ..checkpoint import CheckpointError
    from ..data import DataError
    from ..metrics import MetricsError
    from ..fileio import UnwritableError
    from ..options import OptionError
    from ..pipeline import PipelineError
    from ..text import TextEncoderError

    warnings.formatwarning = lambda message, category, *rest, **kw: f"warning: {message}\n"

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "models":
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    try:
        args.fn(args, extra)
    except (UsageError, ConfigError, DataError, CheckpointError, PipelineError, TextEncoderError, MetricsError,
            OptionError, UnwritableError) as e:
        print(f"danqing {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint is kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
