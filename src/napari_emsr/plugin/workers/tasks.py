"""Short background tasks of the panel: device list, network sizes, anisotropy, model files, lazy reconstruction.

Each is a plain function run in a thread worker; none touches the viewer.
"""

from __future__ import annotations

from typing import Any


def list_devices_task() -> list[tuple[str, str]]:
    """The devices that exist (imports torch, hence a worker)."""
    from napari_emsr.device import list_devices

    return list_devices()


def net_sizes_task() -> dict[str, tuple[str, ...]]:
    """Network name -> its size names, from the registry (:func:`napari_emsr.nets.net_sizes` imports torch)."""
    from napari_emsr.nets import net_names, net_sizes

    return {name: tuple(net_sizes(name)) for name in net_names()}


def anisotropy_task(volume: Any, factor: float | None = None) -> dict:
    """The anisotropy measure of ``volume`` (:func:`napari_emsr.metrics.anisotropy`), its intensity range under
    ``"intensities"`` (:func:`napari_emsr.model.robust_range`) and, given the factor, the section profile fitted to
    it under ``"profile"`` (:meth:`napari_emsr.profile_fit.ProfileFit.as_dict`, with a
    short ``"label"``: what ``auto`` trains with)."""
    from napari_emsr.errors import InputError
    from napari_emsr.metrics import anisotropy
    from napari_emsr.model import robust_range
    from napari_emsr.profile_fit import fit_profile

    result = dict(anisotropy(volume, spacing=volume.spacing))
    try:  # what a model applied to it checks it against (EMSRModel.for_range)
        result["intensities"] = robust_range(volume.data, max_extent=512).as_list()
    except InputError:  # NaN or infinite values: applying a model says where they are
        pass
    if factor is not None and factor > 1.0:
        fit = fit_profile(volume.data, factor)
        result["profile"] = fit.as_dict()  # its "label" is what the panel's profile box shows for auto
    return result


def load_model_task(path: str) -> Any:
    """Read a model file (never unpickles code)."""
    from napari_emsr.model import EMSRModel

    return EMSRModel.load(path)


def save_model_task(model: Any, path: str) -> str:
    """Write ``model`` to ``path``; returns the path written."""
    return str(model.save(path))


def reconstruct_task(volume: Any, model: Any, planes: list[str], device: str,
                     deband: bool = True) -> list[tuple[str, Any, Any, Any]]:
    """Build (without computing) the lazy reconstructions of ``volume``.

    Debanding's filters are fitted here (on the restored probe), so that the first plane napari shows does not
    wait for them. A fused reconstruction with a trained model comes with its uncertainty (where the xz and yz
    restorations disagree, :func:`napari_emsr.reconstruct.reconstruct_pair`): both are parts of one stacked array,
    so a block computed for one fills the other.

    Parameters
    ----------
    volume : napari_emsr.io.Volume
        The anisotropic input.
    model : napari_emsr.model.EMSRModel or str
        A model, or an interpolation method name ("cubic", "linear").
    planes : list of str
        Among "xz", "yz", "fuse".
    device : str
        Where the chunks run.
    deband : bool
        A trained model's layers with the section-phase filters (:mod:`napari_emsr.deband`).

    Returns
    -------
    list of tuple
        ``(planes, dask array, output spacing, joint)`` per reconstruction (``"uncertainty"`` after ``"fuse"``
        with a model); ``joint`` is ``(stacked array, part)`` or None.
    """
    from napari_emsr.reconstruct import PAIR, debander_of, output_spacing, reconstruct

    if not isinstance(model, str):  # NOTE: here too (not only once the input's range was measured): in a worker
        model, _ = model.for_stack(volume.data)
    out = []
    for p in planes:
        spacing = output_spacing(volume)
        if p == "fuse" and not isinstance(model, str):
            stack = reconstruct(volume, model, planes=PAIR, device=device, deband=deband)
            debander_of(stack)  # NOTE: the filters are fitted here, in the worker, not by the first plane shown
            out.append(("fuse", stack[0], spacing, (stack, 0)))
            out.append(("uncertainty", stack[1], spacing, (stack, 1)))
        else:
            arr = reconstruct(volume, model, planes=p, device=device, deband=deband)
            debander_of(arr)
            out.append((p, arr, spacing, None))
    return out


def compare_task(volume: Any, jobs: list[tuple[Any, str, str]], device: str) -> list[tuple[str, str, Any, Any]]:
    """Build (without computing) the lazy volumes a comparison needs.

    Parameters
    ----------
    volume : napari_emsr.io.Volume
        The anisotropic input.
    jobs : list of tuple
        ``(model or method name, planes, label)`` each.
    device : str
        Where the chunks run.

    Returns
    -------
    list of tuple
        ``(label, planes, dask array, output spacing)`` per job.
    """
    from napari_emsr.reconstruct import output_spacing, reconstruct

    return [
        (label, planes, reconstruct(volume, model, planes=planes, device=device), output_spacing(volume))
        for model, planes, label in jobs
    ]


#: Below this banding ratio (least / most detailed position between sections) a result is said to band.
BANDING_WARNING = 0.85


def quality_task(volume: Any, restored: Any, axis: int, planes: slice, factor: float) -> dict:
    """Reference-free measures of the input, its cubic interpolation and a restored crop.

    Parameters
    ----------
    volume : napari_emsr.io.Volume
        The anisotropic input (its voxel size is used for its anisotropy).
    restored : dask.array.Array
        The lazy reconstruction (isotropic grid).
    axis : int
        The axis it is chunked along (1: y for xz planes, 2: x for yz planes).
    planes : slice
        The crop along that axis to compute (a few planes: this restores them).
    factor : float
        F.

    Returns
    -------
    dict
        ``anisotropy`` and ``banding`` ratios for ``"input"`` (anisotropy only), ``"cubic"`` and
        ``"restored"`` (:func:`napari_emsr.metrics.anisotropy`, :func:`napari_emsr.metrics.section_banding`),
        and the crop (``axis``, ``start``, ``stop``); ``deband``: ``{"banding": the network's output's ratio on
        the probe, "active": whether it was filtered}`` when the reconstruction debands (else absent).
    """
    import numpy as np

    from napari_emsr.metrics import anisotropy, section_banding
    from napari_emsr.reconstruct import debander_of, reconstruct

    crop = [slice(None)] * 3
    crop[axis] = planes
    crop = tuple(crop)
    cubic = np.asarray(reconstruct(volume, "cubic", planes="xz" if axis == 1 else "yz")[crop])
    result = np.asarray(restored[crop].compute(scheduler="synchronous"))
    out: dict = {"axis": axis, "start": planes.start, "stop": planes.stop}
    out["input"] = {"anisotropy": anisotropy(volume, spacing=volume.spacing)["ratio"]}
    for name, data in (("cubic", cubic), ("restored", result)):
        out[name] = {
            "anisotropy": anisotropy(data, spacing=(1.0, 1.0, 1.0))["ratio"],
            "banding": section_banding(data, factor)["ratio"],
        }
    deb = debander_of(restored)  # fitted by the crop just computed
    if deb is not None:
        out["deband"] = {"banding": deb.banding, "active": deb.active}
    return out


# ------------------------------------------------------------------------------------- paired LR / HR
#: Planes of a stack the registration looks at (evenly spread; one offset for all, as training finds it).
REGISTRATION_PLANES = 8


def register_task(lr: Any, hr: Any, factor: float) -> Any:
    """Where the HR field lies in the LR field (:func:`napari_emsr.methods.paired.registration.register`).

    Parameters
    ----------
    lr, hr : napari_emsr.io.Volume
        The LR and HR images or stacks (z, y, x), checked by :func:`napari_emsr.methods.paired.check_pair`.
    factor : float
        s, HR pixels per LR pixel.

    Returns
    -------
    napari_emsr.methods.paired.registration.Registration

    Raises
    ------
    napari_emsr.errors.InputError
        A bad pair, or a registration that fails (with its residual).
    """
    import numpy as np

    from napari_emsr.methods.paired import check_pair
    from napari_emsr.methods.paired.registration import register

    check_pair(lr, hr)
    n = int(lr.data.shape[0])
    planes = sorted({int(i) for i in np.linspace(0, n - 1, min(REGISTRATION_PLANES, n)).round()})

    def read(data: Any) -> Any:
        part = data[planes]
        return np.asarray(part.compute() if hasattr(part, "compute") else part)

    return register(read(lr.data), read(hr.data), float(factor))


def lateral_task(volume: Any, model: Any, enhance: bool, device: str) -> Any:
    """Build (without computing) a paired model's lateral result of ``volume``
    (:func:`napari_emsr.methods.paired.apply.lateral`: the xy planes ``s`` times finer, or enhanced at the same
    resolution), chunked plane by plane."""
    from napari_emsr.methods.paired.apply import lateral

    model, _ = model.for_stack(volume.data)  # another bit depth or scaling: in the stack's own range, as exported
    return lateral(volume, model, enhance=enhance, device=device)
