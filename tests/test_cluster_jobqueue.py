"""``--scheduler CONFIG.yaml``: a dask-jobqueue cluster (SLURM, PBS, LSF ...) described in a YAML file.

The description is read and checked before anything starts (``emsr reconstruct`` refuses it before training),
a description that cannot work ends in our error (exit 2, the file named, nothing written), and so does a
missing dask-jobqueue or a machine without the batch system's submit command. Where dask-jobqueue is
installed, the job script it would submit is built from the description (nothing is submitted).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("distributed")

from napari_emsr import cli
from napari_emsr.cluster import check_spec, jobqueue_cluster, read_jobqueue
from napari_emsr.errors import InputError
from napari_emsr.io import as_volume, write_volume

pytestmark = pytest.mark.timeout(300)

SLURM = """\
# a SLURM cluster: 4 jobs of 8 cores
jobqueue: SLURM
jobs: 4
cores: 8
memory: 32GB
walltime: "02:00:00"
queue: gpu
account: lab
"""


@pytest.fixture
def stack(tmp_path):
    p = tmp_path / "in.ome.zarr"
    a = np.random.default_rng(0).integers(0, 255, (6, 16, 16), dtype=np.uint8)
    write_volume(p, as_volume(a, spacing=(40.0, 10.0, 10.0)), pyramid=False)
    return p


def _yaml(tmp_path, text: str, name: str = "cluster.yaml"):
    p = tmp_path / name
    p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    return p


def _refused(argv, capsys, *words) -> str:
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err, err
    for w in words:
        assert w in err, err
    return err


def test_a_description_is_parsed(tmp_path):
    kind, jobs, options = read_jobqueue(_yaml(tmp_path, SLURM))
    assert (kind, jobs) == ("slurm", 4)
    assert options == {"cores": 8, "memory": "32GB", "walltime": "02:00:00", "queue": "gpu", "account": "lab"}
    assert read_jobqueue(_yaml(tmp_path, "jobqueue: pbs\ncores: 2\nmemory: 4GB\n"))[:2] == ("pbs", 1)  # jobs: 1


MALFORMED = {
    "not YAML": ("jobqueue: slurm\ncores: [8\n", "cannot read"),
    "empty": ("", "'jobqueue' key"),
    "a list": ("- jobqueue: slurm\n- cores: 8\n", "'jobqueue' key"),
    "a word": ("slurm\n", "'jobqueue' key"),
    "no jobqueue": ("cores: 8\nmemory: 32GB\n", "'jobqueue' key"),
    "unknown batch system": ("jobqueue: kubernetes\ncores: 8\n", "is not one of"),
    "jobs zero": ("jobqueue: slurm\njobs: 0\n", "jobs must be a whole number"),
    "jobs a word": ("jobqueue: slurm\njobs: two\n", "jobs must be a whole number"),
    "jobs yes": ("jobqueue: slurm\njobs: yes\n", "jobs must be a whole number"),
    "jobs 2.5": ("jobqueue: slurm\njobs: 2.5\n", "jobs must be a whole number"),
    "an option named by a number": ("jobqueue: slurm\n8: cores\n", "option names must be words"),
    "python object tag": ("jobqueue: !!python/object/apply:os.system ['true']\n", "cannot read"),
    "not UTF-8": (b"jobqueue: slurm\ncores: \xff\xfe\n", "cannot read"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_description_is_refused_before_anything_starts(tmp_path, stack, capsys, name):
    text, words = MALFORMED[name]
    conf = _yaml(tmp_path, text)
    with pytest.raises(InputError, match=words):
        check_spec(conf)
    out = tmp_path / "out.ome.zarr"
    _refused(["apply", stack, "--model", "cubic", "-o", out, "--scheduler", conf, "-q"], capsys, str(conf), words)
    assert not out.exists()


def test_reconstruct_refuses_a_bad_description_before_training(tmp_path, stack, capsys):
    conf = _yaml(tmp_path, "cores: 8\n")
    out = tmp_path / "out.ome.zarr"
    _refused(["reconstruct", stack, "-o", out, "--scheduler", conf, "--steps", "2", "--size", "tiny", "-q"], capsys,
             "'jobqueue' key")
    assert not out.exists() and not list(tmp_path.glob("*.emsr.pt"))


def test_without_dask_jobqueue_the_error_says_what_to_install(tmp_path, stack, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # `import dask_jobqueue` raises ImportError
    conf = _yaml(tmp_path, SLURM)
    with pytest.raises(InputError, match="pip install dask-jobqueue"):
        check_spec(conf)
    out = tmp_path / "out.ome.zarr"
    _refused(["apply", stack, "--model", "cubic", "-o", out, "--scheduler", conf, "-q"], capsys,
             "slurm cluster", "pip install dask-jobqueue")
    assert not out.exists()
    _refused(["reconstruct", stack, "-o", out, "--scheduler", conf, "--steps", "2", "--size", "tiny", "-q"], capsys,
             "pip install dask-jobqueue")
    assert not list(tmp_path.glob("*.emsr.pt"))  # refused before training


# ------------------------------------------------------------------------------- with dask-jobqueue installed
def test_the_job_script_follows_the_description(tmp_path):
    pytest.importorskip("dask_jobqueue")
    cluster = jobqueue_cluster(_yaml(tmp_path, SLURM), submit=False)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p gpu", "#SBATCH -A lab", "#SBATCH --cpus-per-task=8", "#SBATCH -t 02:00:00"):
        assert line in script, script
    cluster = jobqueue_cluster(_yaml(tmp_path, "jobqueue: pbs\ncores: 2\nmemory: 4GB\nqueue: short\n"), submit=False)
    try:
        assert "#PBS -q short" in cluster.job_script()
    finally:
        cluster.close()


@pytest.mark.parametrize("options, words", [
    ("cores: 8\nmemory: 32GB\nbogus: 1\n", "bogus"),
    ("cores: 8\nmemory: lots\n", "lots"),
    ("cores: eight\nmemory: 32GB\n", "refused"),
    ("cores: 8\nmemory: 32GB\nprocesses: 0\n", "SLURMCluster"),
])
def test_options_that_dask_jobqueue_refuses_end_in_our_error(tmp_path, stack, capsys, options, words):
    pytest.importorskip("dask_jobqueue")
    conf = _yaml(tmp_path, "jobqueue: slurm\n" + options)
    out = tmp_path / "out.ome.zarr"
    _refused(["apply", stack, "--model", "cubic", "-o", out, "--scheduler", conf, "-q"], capsys, str(conf), words)
    assert not out.exists()


def test_no_submit_command_here_is_said_instead_of_waiting_forever(tmp_path, stack, capsys, monkeypatch):
    pytest.importorskip("dask_jobqueue")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no sbatch on this machine (nor anything else)
    conf = _yaml(tmp_path, SLURM)
    out = tmp_path / "out.ome.zarr"
    _refused(["apply", stack, "--model", "cubic", "-o", out, "--scheduler", conf, "-q"], capsys,
             "sbatch", "login node")
    assert not out.exists()
