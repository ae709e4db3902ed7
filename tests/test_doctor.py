"""`maxsq doctor`: the declared packages checked against their ranges, the runtime, the course's inputs."""

from __future__ import annotations

import importlib.metadata

from maxsq_lib.course import doctor


def test_every_declared_package_is_checked_against_its_range(monkeypatch):
    declared = ["torch>=2.13", "numpy>=1.24", 'pillow>=10; extra == "data"', 'maxsq[data]; extra == "engine"',
                'pandas>=2; extra == "course"', 'playwright>=1.40; extra == "dev"']
    installed = {"torch": "2.14.1", "numpy": "1.20.0", "pandas": "3.1.1"}

    def version(name):
        if name not in installed:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(importlib.metadata, "requires", lambda dist: declared)
    monkeypatch.setattr(importlib.metadata, "version", version)
    checks = {c.item: c for c in doctor.package_checks()}
    assert list(checks) == ["torch", "numpy", "pillow", "pandas", "playwright"]  # maxsq[data] is no package
    assert checks["torch"].ok is True and checks["torch"].detail == "2.14.1 (core, wants >=2.13)"
    assert checks["numpy"].ok is False and "wants >=1.24" in checks["numpy"].detail and "make venv" in checks["numpy"].detail
    assert checks["pillow"].ok is False and checks["pillow"].detail.startswith("not installed ([data])")
    assert checks["pandas"].ok is True
    assert checks["playwright"].ok is None  # the tests' extra is optional for a learner


def test_the_wait_policy_is_checked_and_the_report_counts(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    checks = doctor.runtime_checks()
    policy = next(c for c in checks if c.item == "OMP_WAIT_POLICY")
    assert policy.ok is False and policy.detail.startswith("ACTIVE: set OMP_WAIT_POLICY=PASSIVE")
    text = doctor.report(checks)
    assert text.splitlines()[-1].startswith(f"{sum(c.ok is True for c in checks)} of {len(checks)} checks passed, 1 to fix")
    assert "✘ runtime    OMP_WAIT_POLICY" in text


def test_missing_minicity_is_reported_with_the_command_that_makes_it(tmp_path):
    checks = doctor.input_checks("smoke", runs=str(tmp_path / "runs"), data_root=str(tmp_path / "none"))
    data = [c for c in checks if c.group == "data"]
    assert data and len({c.detail.split(" — ")[0] for c in data}) == len(data)  # one line per file
    # `maxsq course` generates MiniCity itself: a missing MiniCity is made, not an error
    assert all(c.ok is None and "made by `maxsq course`" in c.detail for c in data), data
