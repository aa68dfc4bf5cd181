"""``emsr reconstruct``: train on the stack, then write the isotropic volume; the same command again after an
interrupted write finishes it with the model it saved."""

from __future__ import annotations

from pathlib import Path

from ... import outputs
from ...errors import InputError
from ..common import check_volume_output, claim, emit, learning_rate, method_options, open_input, planes, say
from ..training import heldout, run_training
from ..writing import already_written, apply_options, check_ngff, check_uncertainty, model_exists, nothing_to_do, write
from .apply import say_estimate

#: The options a model trained by ``emsr reconstruct`` is the result of (besides the method's own options).
TRAIN_KEYS = ("method", "net", "size", "steps", "minutes", "patch", "batch", "lr", "seed", "factor", "axis",
              "val_every", "resume")


def made_by(args, vol, method, out: Path) -> dict:
    """What this command's model is the result of (:func:`napari_emsr.outputs.made_by`): the input, the output
    and every training option."""
    from ...outputs import export_fingerprint

    train = {k: getattr(args, k, None) for k in TRAIN_KEYS}
    train["options"] = method_options(args, method)
    source = export_fingerprint(vol, method.name, planes(args), args.factor)["input"]
    return outputs.made_by("reconstruct", source, out, train)


#: reconstruct's flags that only a training method uses (besides the methods' own options).
TRAINING_FLAGS = ("net", "size", "steps", "minutes", "patch", "batch", "lr", "learning_rate", "val_every", "heldout",
                  "heldout_steps", "checkpoint", "resume", "save_model", "consistent", "compile")


def _no_training_flags(args, method: str) -> None:
    """An interpolation method trains nothing: a training flag given with it is refused (it was ignored, and
    --save-model saved nothing)."""
    from ...methods import all_options

    given = [f"--{name.replace('_', '-')}" for name in (*TRAINING_FLAGS, *all_options())
             if getattr(args, name, None) is not None and getattr(args, name) is not False]
    if given:
        raise InputError(f"--method {method} interpolates and trains nothing, so {', '.join(given)} would do "
                         f"nothing: leave {'it' if len(given) == 1 else 'them'} out, or pick a method that trains "
                         "(the default, isotropic)")


def run(args) -> int:
    from ...cluster import check_spec, open_client
    from ...methods import application_of, get_method

    meth = get_method(args.method)
    out = outputs.check_output(args.output, args.overwrite, not_={"input": args.input},
                               finished=not meth.trains and not args.uncertainty)
    check_volume_output(args)
    check_spec(args.scheduler)
    if meth.inputs is not None:  # it learns from a pair of images, not from the stack it is applied to
        raise InputError(f"the {meth.name} method trains from an LR and an HR image, then applies to another volume: "
                         f"run `emsr train --method {meth.name} --lr LR --hr HR -o MODEL`, then `emsr apply INPUT "
                         "--model MODEL -o OUTPUT`")
    if learning_rate(args) or getattr(args, "hr", None):
        raise InputError("--lr LR (an image) and --hr HR are the inputs of `emsr train --method paired`; a learning "
                         "rate is a number (--lr 1e-3)")
    if not meth.trains:
        _no_training_flags(args, meth.name)
    claim(args, out, "output")
    model_path = None
    reuse = False
    if meth.trains:
        model_path = Path(args.save_model) if args.save_model else out.with_name(out.name.split(".")[0] + ".emsr.pt")
        reuse = outputs.check_model_path(model_path, overwrite=args.overwrite, role="model file",
                                         not_={"input": args.input, "output": out}, resumed=args.resume,
                                         reusable=True, exists=model_exists(args))
        claim(args, model_path, "model file", folder=False)
        if args.checkpoint:
            outputs.check_model_path(Path(args.checkpoint), overwrite=args.overwrite, role="checkpoint",
                                     not_={"input": args.input, "output": out}, resumed=args.resume,
                                     exists=model_exists(args, "checkpoint"))
            claim(args, args.checkpoint, "checkpoint", folder=False)
    check_uncertainty(args, out, model_path)
    check_ngff(args, out)
    vol = open_input(args)
    payload: dict = {"method": meth.name}
    if meth.trains:
        args._made_by = made_by(args, vol, meth, out)
        model = None
        if reuse:
            model = outputs.own_model(model_path, args._made_by)
            if model is None:
                raise model_exists(args)(model_path)
            say(args, f"using {model_path}, the model this command trained in an earlier run (same input and "
                "options): no training; pass --overwrite to train again")
        else:
            model, trainer, interrupted, _ = run_training(args, vol, model_path)
            if interrupted:
                return 130
        payload.update({"model": str(model_path), "steps": model.step, "profile": model.config.get("profile"),
                        "profile_fit": model.config.get("profile_fit"),
                        "profile_judged": model.config.get("profile_judged"), "retrained": not reuse})
    options = apply_options(args, application_of(meth.name), axis=None if meth.trains else args.axis)
    if not meth.trains:
        model = meth.name
        if already_written(args, out, vol, model, options):
            return nothing_to_do(args, out)
    if not application_of(meth.name).lateral and not args.scheduler:
        say_estimate(args, out, vol, model, options)
    with open_client(args.scheduler):  # training ran here; the write goes to the cluster when one is named
        info, _ = write(args, vol, model, out, options)
    payload.update(info)
    human = f"wrote {info['output']} in {info['seconds']:.1f} s"
    if meth.trains:
        human += heldout(args, vol, model, payload)
    emit(args, payload, human)
    return 0
