"""``emsr apply``: a saved model (or interpolation) applied to a stack, the result written chunk by chunk."""

from __future__ import annotations

from ... import outputs
from ...errors import InputError
from ..common import check_volume_output, claim, emit, open_input
from ..writing import already_written, apply_lateral, check_uncertainty, nothing_to_do, write


def run(args) -> int:
    from ...model import EMSRModel

    out = outputs.check_output(args.output, args.overwrite, not_={"input": args.input, "model": args.model},
                               finished=not args.uncertainty)
    check_volume_output(args)
    claim(args, out, "output")
    check_uncertainty(args, out, args.model)
    model = args.model if args.model in ("cubic", "linear") else EMSRModel.load(args.model)
    if args.enhance or (not isinstance(model, str) and model.config.get("method") == "paired"):
        if args.uncertainty:
            raise InputError("--uncertainty compares the xz and yz restorations of an isotropic model; a paired "
                             "model restores xy planes: leave --uncertainty out")
        if isinstance(model, str):
            raise InputError("--enhance needs a model of method paired (emsr train --method paired)")
        for flag, given in (("--factor", args.factor), ("--fuse", args.fuse)):
            if given is not None:
                raise InputError(f"{flag} is for isotropic models; {args.model} is a paired model, which makes every "
                                 f"xy plane {model.factor:g} times finer (its own factor) or, with --enhance, "
                                 f"restores it at the same size: leave {flag} out")
        return apply_lateral(args, model, out)
    vol = open_input(args)
    if already_written(args, out, vol, model):
        return nothing_to_do(args, out)
    from ...cluster import open_client

    with open_client(args.scheduler):
        info = write(args, vol, model, out)
    emit(args, info, f"wrote {info['output']} in {info['seconds']:.1f} s")
    return 0
