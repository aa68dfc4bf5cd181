"""The output policy the ``emsr`` commands use (:mod:`napari_emsr.outputs`), called as a panel or script would:
no command-line flags, real exports, real model files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from emsr_helpers import write_tif

from napari_emsr import outputs
from napari_emsr.errors import InputError, OutputExistsError
from napari_emsr.io import open_volume
from napari_emsr.reconstruct import export, export_fingerprint


@pytest.fixture
def tif(tmp_path):
    data = np.random.default_rng(3).integers(0, 255, (16, 256, 512), dtype=np.uint8)
    return write_tif(tmp_path / "s.tif", data)


def _interrupted_export(tif, out, after: int):
    seen = []

    def stop(done, total):
        seen.append((done, total))
        if done >= after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export(open_volume(tif), "cubic", out, planes="xz", chunks=(40, 512), progress=stop)  # 7 blocks of 1.2 MB
    return seen


def test_an_unfinished_export_resumes_a_finished_one_is_compared_anything_else_is_refused(tif, tmp_path):
    out = tmp_path / "o.ome.zarr"
    with pytest.raises(InputError, match="is the input"):
        outputs.check_output(tif, overwrite=True, not_={"input": tif})
    with pytest.raises(InputError, match="does not exist"):
        outputs.check_output(tmp_path / "typo" / "o.ome.zarr", overwrite=False)
    seen = _interrupted_export(tif, out, after=3)
    # the marker tells how far it is, in the writer's own counts
    state = outputs.export_progress(out)
    assert state.done == state.blocks_done == 3 and state.total == seen[-1][1] and state.blocks == 7
    assert outputs.check_output(out, overwrite=False) == out  # unfinished: resumes
    vol = open_volume(tif)
    fingerprint = lambda: export_fingerprint(vol, "cubic", "xz", None)  # noqa: E731
    assert not outputs.finished_export(out, fingerprint, overwrite=False)  # not finished yet
    export(vol, "cubic", out, planes="xz", chunks=(40, 512))
    assert outputs.export_progress(out) is None
    with pytest.raises(OutputExistsError, match="--overwrite"):
        outputs.check_output(out, overwrite=False)
    assert outputs.check_output(out, overwrite=False, finished=True) == out
    assert outputs.finished_export(out, fingerprint, overwrite=False)
    assert not outputs.finished_export(out, fingerprint, overwrite=True)
    with pytest.raises(OutputExistsError, match="linear"):
        outputs.finished_export(out, lambda: export_fingerprint(vol, "linear", "xz", None), overwrite=False)


def test_a_model_is_reused_only_by_the_job_that_made_it(tif, tmp_path):
    from napari_emsr.model import EMSRModel
    from napari_emsr.train import TrainConfig, Trainer

    trainer = Trainer(open_volume(tif), TrainConfig(steps=1, net="rescnn", size="tiny", patch=24, batch=2,
                                                    device="cpu", preview_every=0))
    for _ in trainer.run():
        pass
    made = outputs.made_by("reconstruct", {"source": str(tif)}, tmp_path / "o.ome.zarr", {"steps": 1, "seed": 0})
    model = trainer.model
    model.config["made_by"] = made
    path = model.save(tmp_path / "m.emsr.pt")
    assert outputs.check_model_path(path, overwrite=False, not_={}, role="model file", reusable=True)
    with pytest.raises(OutputExistsError, match="model file"):
        outputs.check_model_path(path, overwrite=False, not_={}, role="model file")
    assert not outputs.check_model_path(path, overwrite=True, not_={}, role="model file", reusable=True)
    assert isinstance(outputs.own_model(path, made), EMSRModel)
    assert outputs.own_model(path, {**made, "train": {"steps": 1, "seed": 1}}) is None
    junk = tmp_path / "junk.emsr.pt"
    junk.write_bytes(b"not a model")
    assert outputs.own_model(junk, made) is None


def test_a_claimed_output_is_refused_to_a_second_writer_until_released(tmp_path):
    out = tmp_path / "o.ome.zarr"
    probe = ("import sys\n"
             "from napari_emsr.errors import OutputBusyError\n"
             "from napari_emsr.outputs import OutputClaims\n"
             "try:\n"
             "    OutputClaims().claim(sys.argv[1], 'output')\n"
             "except OutputBusyError as e:\n"
             "    print(e); sys.exit(3)\n")
    with outputs.OutputClaims() as claims:
        assert claims.claim(out, "output") == out
        busy = subprocess.run([sys.executable, "-c", probe, str(out)], capture_output=True, text=True, timeout=60)
        assert busy.returncode == 3 and str(out) in busy.stdout, busy.stdout + busy.stderr
    free = subprocess.run([sys.executable, "-c", probe, str(out)], capture_output=True, text=True, timeout=60)
    assert free.returncode == 0, free.stdout + free.stderr
