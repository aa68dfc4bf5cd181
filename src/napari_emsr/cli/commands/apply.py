"""``emsr apply``: a saved model (or interpolation) applied to a stack, the result written chunk by chunk."""

from __future__ import annotations

import logging

from ... import outputs
from ...errors import InputError
from ..common import check_volume_output, claim, emit, open_input, say
from ..writing import already_written, apply_options, check_ngff, check_uncertainty, nothing_to_do, write


def run(args) -> int:
    from ...methods import application_of
    from ...reconstruct import as_model

    out = outputs.check_output(args.output, args.overwrite, not_={"input": args.input, "model": args.model},
                               finished=not args.uncertainty)
    check_volume_output(args)
    claim(args, out, "output")
    check_uncertainty(args, out, args.model)
    check_ngff(args, out)
    # NOTE: how the model is applied is its method's (the registry's Application), never a method name here
    model = as_model(args.model)
    app = application_of(model)
    if args.uncertainty and app.uncertainty is None:
        raise InputError(f"--uncertainty compares the xz and yz restorations of an isotropic model; this model's "
                         f"result is {app.kind}: leave --uncertainty out")
    options = apply_options(args, app, method=None if isinstance(model, str) else model.config.get("method"))
    if args.scheduler and not app.cluster:
        raise InputError(f"--scheduler is not supported for models of method {model.config.get('method')} yet: "
                         "run without it")
    app.check(model)
    vol = app.open(args.input) if app.open is not None else open_input(args)
    if not isinstance(model, str):
        model, note = model.for_stack(vol.data)  # another bit depth or scaling: in the stack's own range
        if note:
            logging.getLogger(__name__).warning(note)
    if already_written(args, out, vol, model, options):
        return nothing_to_do(args, out)
    from ...cluster import open_client

    if not app.lateral and not args.scheduler:
        say_estimate(args, out, vol, model, options)
    with open_client(args.scheduler):
        info, what = write(args, vol, model, out, options)
    emit(args, info, f"wrote {info['output']}{f' ({what})' if what else ''} in {info['seconds']:.1f} s")
    return 0


def say_estimate(args, out, vol, model, options: dict) -> None:
    """One line before a long write on this machine: how long it should take, from one timed chunk of its pipeline
    (:func:`napari_emsr.estimates.estimate_line`); nothing for a quick one, a resumed one, or with ``-q``. The
    deband filters it fitted go into ``options`` for the export."""
    from pathlib import Path

    if getattr(args, "quiet", False) or Path(out).exists():
        return
    from ...estimates import estimate_export, said

    found = estimate_export(vol, model, device=args.device, **options)
    if found.debander is not None:  # the export takes the filters the estimate fitted (a probe restored once)
        options["debander"] = found.debander
    line = said(found)
    if line:
        say(args, line)
