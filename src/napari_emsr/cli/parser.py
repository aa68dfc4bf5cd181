"""The ``emsr`` command line's options (argparse): what each command takes, with its help text.

Methods, networks and method options come from their registries, so a new one shows up here by itself. The commands
themselves live in :mod:`napari_emsr.cli.commands`, one module each, named as the command.
"""

from __future__ import annotations

import argparse

from .. import __version__

#: The commands, in the order of ``emsr --help``; each is the module of that name in ``cli.commands``.
COMMANDS = ("info", "train", "apply", "reconstruct", "demo")

EPILOG = """\
examples:
  emsr demo                                   # the whole job on bundled sample data, with scores
  emsr info stack.tif                         # shape, voxel size, factor, anisotropy
  emsr reconstruct stack.tif -o iso.ome.zarr  # train on the stack itself, then write the isotropic volume
  emsr train stack.tif -o stack.emsr.pt --minutes 10
  emsr apply big.ome.zarr --model stack.emsr.pt -o big_iso.ome.zarr
  emsr reconstruct stack.tif -o iso.tif --method cubic   # interpolation only, no training
  emsr train --method paired --lr lr.tif --hr hr.tif -o pair.emsr.pt   # paired LR/HR super-resolution
  emsr apply big_lr.ome.zarr --model pair.emsr.pt -o big_hr.ome.zarr  # every xy plane s times finer

The factor F (z spacing / lateral spacing) comes from the file's voxel size; a file without one needs --factor.
Arrays are (z, y, x) with z the anisotropic axis unless --axis says otherwise.
"""


def _add_common(p, *, model_input=False):
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default: the best that exists)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the results on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _add_input(p, optional: bool = False):
    more = {"nargs": "?", "default": None} if optional else {}
    p.add_argument("input", help="TIFF stack (.tif/.tiff), an OME-Zarr / zarr folder, or a zarr URL (file://, s3://, "
                   "gs://, https://: install s3fs / gcsfs / aiohttp), axes (z, y, x)"
                   + ("; with --method paired: the HR image or stack (or --hr)" if optional else ""), **more)
    p.add_argument("--channel", type=int, default=None, help="channel to use in multi-channel data")
    p.add_argument("--series", type=int, default=None, metavar="N",
                   help="image series N of a TIFF holding several (e.g. an OME-TIFF with a thumbnail; default: the "
                   "largest 3D series, said when there is a choice)")


def _method_help() -> str:
    from ..methods import DEFAULT_METHOD, METHODS

    return "; ".join(f"{name}{' (default)' if name == DEFAULT_METHOD else ''}: {m.description}"
                     for name, m in METHODS.items())


def _add_train(p, demo=False):
    """Training options; the methods, networks and method options are read from their registries."""
    from ..methods import DEFAULT_METHOD, METHODS, all_options
    from ..nets import DESCRIPTIONS, net_names

    g = p.add_argument_group("training")
    if not demo:
        g.add_argument("--factor", type=float, default=None,
                       help="anisotropy factor F = z spacing / lateral spacing (default: from the voxel size)")
        g.add_argument("--axis", type=int, default=0, help="the anisotropic axis (default 0 = z)")
        g.add_argument("--method", default=DEFAULT_METHOD, choices=list(METHODS), help=_method_help())
    else:
        p.set_defaults(factor=None, axis=0, method=DEFAULT_METHOD)
    nets = "; ".join(f"{n}: {DESCRIPTIONS.get(n, '').rstrip('.')}" for n in net_names())
    g.add_argument("--net", default=None, choices=net_names(), help=f"network (default: the method's). {nets}")
    g.add_argument("--size", default=None, help="network size: tiny, small or base (default: the method's)")
    g.add_argument("--steps", type=int, default=None,
                   help="training steps (default: the method's); with --resume, that many more")
    g.add_argument("--minutes", type=float, default=None,
                   help="training time budget in minutes (alone: trains for the minutes; with --steps: stops at the "
                   "first of the two)")
    g.add_argument("--patch", type=int, default=None, help="training patch size in pixels (default: the method's)")
    g.add_argument("--batch", type=int, default=None, help="patches per step (default: the method's)")
    g.add_argument("--lr", type=_number_or_path, default=None, metavar="RATE|LR",
                   help="peak learning rate (Adam, cosine decay; default: the method's); with --method paired a "
                   "path is the LR image of the HR's region")
    g.add_argument("--learning-rate", type=float, default=None, help="the peak learning rate (as --lr RATE)")
    if not demo:
        g.add_argument("--hr", default=None, help="--method paired: the HR image or stack (instead of INPUT)")
    for opt in all_options().values():
        owners = ", ".join(m.name for m in METHODS.values() if m.option(opt.name) is not None)
        g.add_argument(f"--{opt.name.replace('_', '-')}", dest=opt.name, default=None, type=opt.type,
                       choices=list(opt.choices) if opt.choices else None,
                       help=f"{opt.help} (method {owners}; default: {opt.default})")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0): the same seed, data and options "
                   "give the same model on a CPU")
    g.add_argument("--val-every", type=int, default=None, help="validate on held-out planes every N steps")
    g.add_argument("--heldout", action="store_true",
                   help="after training, estimate its gain over cubic on this stack without ground truth: every "
                   "other section is held out, a short training with the same settings restores them from the rest "
                   "(at twice the spacing) and is scored on the real held-out sections; with the model's own gain on "
                   "lateral planes degraded like z, that gives the estimate (a calibrated blend of the two). "
                   "Printed in the summary (JSON: quality.heldout_sections). Costs --heldout-steps more steps")
    g.add_argument("--heldout-steps", type=int, default=None, metavar="N",
                   help="steps of the --heldout judge (default: the model's steps, at most 400)")
    g.add_argument("--checkpoint", default=None, help="checkpoint file (default: the output model)")
    g.add_argument("--resume", default=None, help="continue training from this model/checkpoint")


def _number_or_path(text: str):
    """A learning rate, or (not a number) the path of an LR image."""
    try:
        return float(text)
    except ValueError:
        return text


COMPILE_HELP = ("run the network through torch.compile: a slower start (compiling), then possibly faster, mostly on a "
                "GPU (benchmarks/bench_throughput.py --compile measures it)")
DEBAND_HELP = ("a trained model: filter each output plane laterally by its place between sections so that the "
               "planes between sections are as detailed as the sections (no bands with the section period; "
               "default on); --no-deband gives the network's output as it is")
CONSISTENT_HELP = ("a trained model of thick sections (slab, Gaussian, a fitted profile at least half a section "
                   "thick): move the restored volume, column by column along z, by the least change that makes each "
                   "section equal to the profile's average of it (point-like profiles are left as they are)")
UNCERTAINTY_HELP = (
    "also write, to PATH (.tif/.tiff or .zarr/.ome.zarr), where the xz and yz restorations disagree: |xz - yz| in "
    "the input's intensities on the output's grid (0 = they agree; trust bright places less). A fused write (the "
    "default) computes it from the same restorations (measured: about 20 %% more time for a 250^3 stack on a "
    "2-core CPU); with --fuse xz or yz, or --scheduler, both directions are restored again (about the cost of "
    "a fused write). Needs a trained model"
)

NGFF_HELP = (
    "OME-Zarr version of a .zarr/.ome.zarr output (and of a zarr --uncertainty map): 0.4 (default; zarr format 2, "
    "one file per chunk) or 0.5 (zarr format 3 with sharding: the chunks of every level packed into shards of up "
    "to 128 MB, so a terabyte is thousands of files, not millions). 0.4 stays the default until the common readers "
    "of napari and Fiji take 0.5. An unfinished export resumes only with the version it was begun with"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emsr",
        description="Isotropic reconstruction of anisotropic 3D EM stacks: train on the stack itself "
        "(self-supervised), then restore every xz/yz plane.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"napari-emsr {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("info", help="shape, voxel size, factor and a reference-free anisotropy measure")
    _add_input(s)
    s.add_argument("--factor", type=float, default=None,
                   help="anisotropy factor F = z spacing / lateral spacing (default: from the voxel size)")
    s.add_argument("--axis", type=int, default=0, help="the anisotropic axis (default 0 = z)")
    s.add_argument("--fast", action="store_true", help="skip the anisotropy measure and the section-profile estimate")
    s.add_argument("--degradation", metavar="OUT.tif", default=None,
                   help="write real axial planes next to lateral planes degraded by each section profile (and by "
                   "--model's learned degradation) to OUT.tif, OUT.png and OUT.json, and compare their spectra")
    s.add_argument("--model", default=None, help="with --degradation: a model file whose degradation is shown too")
    s.add_argument("--overwrite", action="store_true", help="with --degradation: replace existing files")
    _add_common(s)

    s = sub.add_parser("train", help="train a model on a stack (self-supervised), or on an LR and HR pair "
                       "(--method paired), and save it")
    _add_input(s, optional=True)
    s.add_argument("-o", "--output", required=True, help="model file to write (e.g. stack.emsr.pt)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    _add_train(s)
    _add_common(s)

    s = sub.add_parser("apply", help="apply a saved model to a stack and write the isotropic volume")
    _add_input(s)
    s.add_argument("--model", required=True, help="model file from `emsr train` (or cubic/linear: interpolation only)")
    s.add_argument("-o", "--output", required=True, help="output .tif/.tiff or .zarr/.ome.zarr")
    s.add_argument("--fuse", default=None, help="restore xz planes, yz planes, or both averaged (xz,yz; default); "
                   "isotropic models only")
    s.add_argument("--factor", type=float, default=None, help="override the factor from the voxel size")
    s.add_argument("--enhance", action="store_true",
                   help="a paired model at the same resolution (denoise and sharpen HR data) instead of making the "
                   "xy planes s times finer (a paired model's default)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (an unfinished zarr export resumes without it)")
    s.add_argument("--scheduler", default=None, metavar="SPEC",
                   help="compute on a dask.distributed cluster: local, local:N (N worker processes here; default "
                   "one per GPU, else 1), a scheduler address (tcp://host:port), or a dask-jobqueue YAML file "
                   "({jobqueue: slurm, cores: 8, memory: 32GB, jobs: 4, ...}; needs pip install dask-jobqueue). "
                   "Workers read the input and write a zarr output: both must be on a file system they see")
    s.add_argument("--uncertainty", default=None, metavar="PATH", help=UNCERTAINTY_HELP)
    s.add_argument("--ngff", default=None, choices=("0.4", "0.5"), help=NGFF_HELP)
    s.add_argument("--deband", action=argparse.BooleanOptionalAction, default=True, help=DEBAND_HELP)
    s.add_argument("--consistent", action="store_true", help=CONSISTENT_HELP)
    s.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    _add_common(s)

    s = sub.add_parser("reconstruct", help="train on the stack, then apply: the one-command path")
    _add_input(s)
    s.add_argument("-o", "--output", required=True, help="output .tif/.tiff or .zarr/.ome.zarr")
    s.add_argument("--save-model", default=None, help="where to keep the trained model (default: next to the output)")
    s.add_argument("--fuse", default=None, help="xz, yz or xz,yz (both, averaged; default)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace an existing output and model file (an unfinished zarr export resumes without it)")
    s.add_argument("--scheduler", default=None, metavar="SPEC",
                   help="train here, then write on a dask.distributed cluster (see `emsr apply --help`)")
    s.add_argument("--uncertainty", default=None, metavar="PATH", help=UNCERTAINTY_HELP)
    s.add_argument("--ngff", default=None, choices=("0.4", "0.5"), help=NGFF_HELP)
    s.add_argument("--deband", action=argparse.BooleanOptionalAction, default=True, help=DEBAND_HELP)
    s.add_argument("--consistent", action="store_true", help=CONSISTENT_HELP)
    s.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    _add_train(s)
    _add_common(s)

    s = sub.add_parser(
        "demo", help="the whole job on bundled sample data (Janelia medulla FIB-SEM), scored against ground truth"
    )
    s.add_argument("--demo-factor", type=int, default=4, help="anisotropy factor to simulate (default 4)")
    s.add_argument("--demo-profile", default="point", choices=["point", "slab", "gaussian"],
                   help="how the sample stack is made (the training estimates it unless --profile is given)")
    s.add_argument("-o", "--output", default=None, help="also save the trained model here")
    _add_train(s, demo=True)
    _add_common(s)
    s.set_defaults(fuse="xz,yz")
    return p
