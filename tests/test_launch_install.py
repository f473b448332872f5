"""launch.py's install logic, offline: the committed lock files match requirements*.txt (a requirement added
without `python launch.py --refresh-lock` fails here), the lock's dependency walk leaves torch's own
dependencies to the torch install, the install plan, and a failing apt stops --run-tests."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import launch

ROOT = Path(launch.__file__).resolve().parent
ENTRY = re.compile(r"^([a-z0-9-]+)==(\S+) \\\n    --hash=sha256:[0-9a-f]{64}$", re.M)


def _entries(name: str) -> dict[str, str]:
    text = (ROOT / name).read_text(encoding="utf-8")
    body = [block for block in re.split(r"\n(?=[a-z0-9])", text.split("\n", 6)[-1].strip()) if block]
    found = {m.group(1): m.group(2) for m in ENTRY.finditer(text)}
    assert len(found) == len(body), f"{name}: every entry is name==version with its sha256 hash"
    return found


@pytest.mark.parametrize("lock, sources", [
    (launch.LOCK, ["requirements.txt"]),
    (launch.DEV_LOCK, ["requirements.txt", "requirements-dev.txt"]),
    (launch.NODEPS_LOCK, [launch.NODEPS]),
])
def test_the_locks_pin_every_requirement_with_hashes(lock, sources):
    pinned = _entries(lock)
    wanted = set().union(*(launch._requirement_names(ROOT / s) for s in sources))
    missing = wanted - set(pinned)
    assert not missing, (f"{sorted(missing)} in {sources} but not in {lock}: run "
                         "`python launch.py --refresh-lock --keep-versions` and commit the locks")
    assert not {"torch", "torchvision", "xformers"} & set(pinned)      # torch comes from TORCH_PACKAGES
    assert launch.lock_usable(ROOT / lock) == (launch.lock_platform() == "Linux x86_64 python3.11")
    if lock == launch.LOCK:   # the runtime lock is the dev lock's subset at the same versions
        dev = _entries(launch.DEV_LOCK)
        assert {n: dev.get(n) for n in pinned} == pinned


def test_numpy_stays_2_beside_k_diffusion():
    assert int(_entries(launch.DEV_LOCK)["numpy"].split(".")[0]) >= 2
    assert int(_entries(launch.DEV_LOCK)["setuptools"].split(".")[0]) < 80      # clip's pkg_resources


def _item(name, version, *requires):
    return {"metadata": {"name": name, "version": version, "requires_dist": list(requires)},
            "download_info": {"archive_info": {"hashes": {"sha256": "ab" * 32}}}}


def test_lock_walk_leaves_torchs_own_dependencies_to_the_torch_install():
    report = [_item("Diffusers", "1", "torch>=2", "huggingface_hub (>=0.3)", "Pillow", "pytest; extra == 'test'"),
              _item("torch", "2", "sympy", "nvidia-cudnn-cu13 ; platform_system == 'Linux'", "filelock"),
              _item("sympy", "1"), _item("nvidia-cudnn-cu13", "9"), _item("filelock", "3"),
              _item("huggingface-hub", "0.9", "filelock"), _item("pillow", "11"), _item("pytest", "8"),
              _item("webuiapi", "1", "requests"), _item("requests", "2")]
    names = [i["metadata"]["name"] for i in launch.locked_subset(report, {"diffusers"})]
    assert names == ["Diffusers", "filelock", "huggingface-hub", "pillow", "pytest"]
    both = launch.locked_subset(report, {"diffusers", "webuiapi"})
    assert {"webuiapi", "requests"} <= {i["metadata"]["name"] for i in both}
    text = launch._lock_text(launch.locked_subset(report, {"pillow"}), "x", ["torch==2"])
    assert "pillow==11 \\\n    --hash=sha256:" + "ab" * 32 in text
    assert f"# platform: {launch.lock_platform()}" in text


def test_requirement_names_read_pip_syntax(tmp_path):
    req = tmp_path / "r.txt"
    req.write_text("-r other.txt\n# comment\nnumpy>=2  # why\nopen_clip_torch>=2.26\nfoo[bar]==1 ; python_version>'3'\n"
                   "Baz.Qux~=1.0\n\n")
    assert launch._requirement_names(req) == {"numpy", "open-clip-torch", "foo", "baz-qux"}


def test_install_plan_uses_the_locks_where_they_fit(monkeypatch, tmp_path):
    monkeypatch.setattr(launch, "lock_usable", lambda path: True)
    plan = launch.install_plan(dev=True, use_lock=True)
    assert plan[0][:2] == ["--require-hashes", "-r"] and plan[0][2].endswith(launch.DEV_LOCK)
    assert plan[1][:3] == ["--require-hashes", "--no-deps", "-r"] and plan[1][3].endswith(launch.NODEPS_LOCK)
    assert launch.install_plan(dev=False, use_lock=True) == [["--require-hashes", "-r", str(ROOT / launch.LOCK)]]
    assert launch.install_plan(dev=False, use_lock=False) == [["-r", str(ROOT / "requirements.txt")]]
    monkeypatch.setattr(launch, "lock_usable", lambda path: False)      # another platform: the open ranges
    assert launch.install_plan(dev=True, use_lock=True)[1] == ["--no-deps", "-r", str(ROOT / launch.NODEPS)]
    other = tmp_path / "x.lock"
    other.write_text("# header\n# platform: Plan9 mips python2.7\n")
    monkeypatch.undo()
    assert not launch.lock_usable(other) and not launch.lock_usable(tmp_path / "absent.lock")


def test_a_failing_apt_stops_the_test_run(monkeypatch):
    monkeypatch.setattr(launch.shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None)
    monkeypatch.setattr(launch.os, "geteuid", lambda: 0)
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, **kw: calls.append(cmd) or (100 if "install" in cmd else 0))
    with pytest.raises(SystemExit, match=r"apt-get install .* failed \(exit 100\)"):
        launch.ensure_test_browser()
    assert [c[1] for c in calls] == ["update", "install"]
