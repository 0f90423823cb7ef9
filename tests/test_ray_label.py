"""`owl-studio label --ray`: the same job on a real local Ray cluster started by the test.

Ray is an optional extra (requirements-ray.txt); the test command installs it.
"""

from __future__ import annotations

import json
import re

import pytest
import ray  # requirements-ray.txt (requirements-dev.txt includes it)
from test_label import FLAGS, build_work, files

from owl_core.batch.job import main


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_model_dir):
    return build_work(tmp_path_factory.mktemp("ray_label"), tiny_model_dir)


@pytest.fixture(scope="module")
def cluster():
    """A local cluster of 2 CPUs: one for the model actor, one for the read tasks."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def run(capsys, work, out, *extra) -> str:
    code = main([str(work["data"]), "--weights", str(work["a"]), "--model", str(work["model"]),
                 "--out", str(out), "--format", "coco", "--confidence", "0.95", *FLAGS,
                 *[str(e) for e in extra]])
    _, err = capsys.readouterr()
    assert code == 0, err
    return err


def test_ray_run_equals_the_single_process_run(capsys, cluster, work, tmp_path):
    err = run(capsys, work, tmp_path / "ray", "--ray", "--ray-actors", "1")
    assert re.search(r"\(10 embedded, 0 from the store\)", err), err
    run(capsys, work, tmp_path / "local")
    ray_files = files(tmp_path / "ray")
    assert ray_files == files(tmp_path / "local")
    summary = json.loads(ray_files["summary.json"])
    assert [f["file"] for f in summary["failures"]] == ["broken.png"]  # read task reported it
    assert summary["boxes"] > 0


def test_ray_run_resumes_from_the_store_like_the_local_one(capsys, cluster, work, tmp_path):
    run(capsys, work, tmp_path / "out")  # local run fills the store
    err = run(capsys, work, tmp_path / "again", "--ray", "--store",
              tmp_path / "out" / "embeddings")
    assert re.search(r"\(0 embedded, 10 from the store\)", err), err
    assert files(tmp_path / "again") == files(tmp_path / "out")
