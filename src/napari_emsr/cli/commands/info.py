"""``emsr info``: shape, voxel size, factor, a reference-free anisotropy figure and the section profile."""

from __future__ import annotations

from ... import outputs
from ...errors import EMSRError, InputError
from ..common import claim, emit, factor_of, open_input


def info_spacing(vol, factor: float | None, axis: int):
    """The voxel size the anisotropy figure is measured with: the file's, with the axial spacing set to ``factor``
    times the lateral one when ``--factor`` was given (a file without a voxel size: lateral 1)."""
    if factor is None:
        return vol.spacing
    from ...geometry import lateral_axes

    spacing = list(vol.spacing) if vol.spacing else [1.0, 1.0, 1.0]
    spacing[axis] = float(factor) * float(spacing[lateral_axes(axis)[-1]])
    return tuple(spacing)


def run(args) -> int:
    from ...io import finite_check
    from ...metrics import anisotropy

    vol = open_input(args)
    finite_check(vol.data)  # NaN would read as "no texture" below
    f = factor_of(args, vol)
    given = args.factor is not None
    an = None
    if not args.fast:
        an = anisotropy(vol.data, axis=args.axis, spacing=info_spacing(vol, args.factor, args.axis))
    prof = None
    if not args.fast and f and f > 1.0:
        from ...profile_fit import fit_profile

        try:
            prof = fit_profile(vol.data, f).as_dict()
        except InputError as err:
            prof = {"profile": None, "reliable": False, "note": f"not estimated: {err}"}
    payload = {
        "path": str(args.input),
        "shape": list(vol.shape),
        "dtype": str(vol.dtype),
        "spacing": list(vol.spacing) if vol.spacing else None,
        "unit": vol.unit,
        "factor": f,
        "factor_from": ("--factor" if given else "voxel size") if f else None,
        "anisotropy": an,
        "profile": prof,
    }
    if vol.spacing:
        size = f"  voxel size (z, y, x): {vol.spacing} {vol.unit}"
    else:
        size = "  voxel size: not in the file" + (" (the factor is --factor's)" if given else " (pass --factor)")
    lines = [
        f"{args.input}",
        f"  shape (z, y, x): {tuple(vol.shape)}  dtype: {vol.dtype}",
        size,
        (f"  factor F = z / lateral spacing: {f:g}" + (" (--factor)" if given else "")) if f else "  factor: unknown",
    ]
    from ...geometry import coarse_axis

    coarse = coarse_axis(vol.spacing)
    payload["coarse_axis"] = coarse
    if coarse is not None and coarse != (args.axis or 0) and not given:
        lines.append(f"  the coarse axis is axis {coarse} (its voxel size is the largest; the axes above are in the "
                     f"file's order): pass --axis {coarse} (info, train, reconstruct)")
    if an:
        lines.append(f"  anisotropy (reference-free, 1 = isotropic): {an.get('ratio', float('nan')):.2f}"
                     + (f" (with F = {f:g})" if given else ""))
    if prof:
        lines.append(f"  section profile (what --profile auto trains with): {prof['note']}")
    if args.degradation:
        lines += degradation_report(args, vol, f, payload)
    elif getattr(args, "model", None):
        lines += model_report(args.model, payload)
    emit(args, payload, "\n".join(lines))
    return 0


def degradation_report(args, vol, factor: float | None, payload: dict) -> list[str]:
    """``info --degradation OUT.tif``: real axial planes next to simulated ones (each profile, the fitted one and
    the model's learned degradation), written as TIFF, PNG and JSON; returns the lines for people."""
    from ...sections import compare_sections, write_report

    not_ = {"input": args.input, "model": args.model}
    out = outputs.check_output(args.degradation, args.overwrite, not_=not_)
    for suffix in (".png", ".json"):
        outputs.check_output(out.with_suffix(suffix), args.overwrite, not_=not_)
    for suffix in (out.suffix, ".png", ".json"):
        claim(args, out.with_suffix(suffix), "report", folder=False)
    if not factor or factor <= 1.0:
        raise InputError("the factor F is unknown or 1: pass --factor to inspect the axial degradation")
    model = None
    if args.model:
        from ...model import EMSRModel

        model = EMSRModel.load(args.model)
        model.check_compatible(factor, args.axis)
    res = compare_sections(vol.data, factor, axis=args.axis, model=model)
    paths = write_report(res, out)
    payload["degradation"] = {"stats": res["stats"], "closest": res["closest"], "fit": res["fit"], **paths}
    lines = ["  sections, simulated vs real axial planes (spectral distance along z, lower is closer; noise):"]
    for name, st in res["stats"].items():
        dist = "" if st["distance"] is None else f"distance {st['distance']:.3f}  "
        lines.append(f"    {name:<16} {dist}noise {st['noise']:.4f}")
    lines.append(f"  closest: {res['closest']}; planes written to {paths['tiff']} and {paths['png']}")
    return lines


def model_report(path, payload: dict) -> list[str]:
    """``info --model M``: the model's network, the grid its body runs on and its work per output voxel (FLOPs
    counted by torch, a multiply-add being 2), per plane and fused (xz and yz: twice)."""
    from ...model import EMSRModel
    from ...nets import build_net, grid_of
    from ...nets.flops import flops_per_pixel

    model = EMSRModel.load(path)
    cfg = model.config
    name = str(cfg.get("net"))
    try:
        grid = grid_of(name)
        per_pixel = flops_per_pixel(build_net(name, **cfg.get("net_kwargs", {})), model.factor)
    except EMSRError as err:  # a method's own network this count cannot build alone
        payload["model"] = {"path": str(path), "net": name, "flops_per_pixel": None, "note": str(err)}
        return [f"  model {path}: network {name} (work per voxel not counted: {err})"]
    payload["model"] = {"path": str(path), "method": cfg.get("method"), "net": name, "size": cfg.get("size"),
                        "grid": grid, "factor": model.factor, "flops_per_pixel": round(per_pixel),
                        "flops_per_voxel_fused": round(2 * per_pixel)}
    size = f"/{cfg['size']}" if cfg.get("size") else ""
    return [f"  model {path}: {cfg.get('method')}, network {name}{size} on the {grid} grid, F = {model.factor:g}",
            f"  work per output voxel: {per_pixel / 1e3:.1f} kFLOP per plane, {2 * per_pixel / 1e3:.1f} kFLOP fused "
            "(xz and yz)"]
