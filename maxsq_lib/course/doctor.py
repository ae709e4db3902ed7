"""``maxsq doctor``: is this machine ready for the course? Packages, runtime, then the course's data
and checkpoints as the dry run sees them.

The packages are the ones the project declares (``pyproject.toml``, read back from the installed
distribution's metadata), each checked against its version range; nothing is imported except
torch. Notebook ``00_setup`` calls it in one line.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
from dataclasses import dataclass

from packaging.requirements import Requirement

MARKS = {True: "✔", False: "✘", None: "–"}
"""✔ fine, ✘ must be fixed, – optional and absent."""

COURSE_EXTRAS = ("data", "engine", "course")
"""The extras the course needs; ``dev`` (the tests) is optional."""


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report.

    Args:
        group: ``package``, ``runtime``, ``data`` or ``checkpoint``.
        item: what was checked.
        ok: True, False (must be fixed) or None (optional and absent).
        detail: the version, value or path found, and what to do when it is not fine.
    """

    group: str
    item: str
    ok: bool | None
    detail: str


def declared_requirements(distribution: str = "maxsq") -> list[tuple[Requirement, str]]:
    """The project's own dependencies with the extra each belongs to (``""``: the core)."""
    out = []
    for text in importlib.metadata.requires(distribution) or []:
        req = Requirement(text)
        if req.name == distribution:  # an extra that includes another extra
            continue
        extra = next((e for e in ("data", "engine", "course", "dev")
                      if req.marker and req.marker.evaluate({"extra": e})), "")
        out.append((req, extra))
    return out


def package_checks(distribution: str = "maxsq") -> list[Check]:
    """Each declared package: installed, and inside its declared version range."""
    checks = []
    for req, extra in declared_requirements(distribution):
        needed = extra in ("",) + COURSE_EXTRAS
        where = f"[{extra}]" if extra else "core"
        try:
            version = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            fix = "run `make venv`" if needed else "optional (the tests): `pip install -e '.[dev]'`"
            checks.append(Check("package", req.name, False if needed else None, f"not installed ({where}); {fix}"))
            continue
        fits = req.specifier.contains(version, prereleases=True)
        detail = f"{version} ({where}{', wants ' + str(req.specifier) if req.specifier else ''})"
        checks.append(Check("package", req.name, fits, detail if fits else detail + "; run `make venv`"))
    return checks


def runtime_checks(device: str = "auto") -> list[Check]:
    """Python, the OpenMP wait policy, threads and the device."""
    import torch

    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    passive = policy.upper() == "PASSIVE"
    cuda = (f"{torch.cuda.device_count()} × {torch.cuda.get_device_name(0)}"
            if torch.cuda.is_available() else "none")
    checks = [
        Check("runtime", "python", sys.version_info >= (3, 10), platform.python_version()),
        Check("runtime", "OMP_WAIT_POLICY", passive, policy if passive else
              f"{policy}: set OMP_WAIT_POLICY=PASSIVE before Python starts (the Makefile and the "
              f"notebooks' first cell do); spinning OpenMP threads made training steps several "
              f"times slower on a busy 2-core machine"),
        Check("runtime", "CPU threads", True, str(torch.get_num_threads())),
        Check("runtime", "CUDA", True if cuda != "none" else None, cuda),
    ]
    if device == "cuda" and cuda == "none":
        checks.append(Check("runtime", "device", False, "device cuda asked for, but CUDA is not available"))
    return checks


def input_checks(profile: str, runs: str | None = None, data_root: str | None = None) -> list[Check]:
    """The data and checkpoints ``maxsq course`` needs, as its dry run reports them (benchmarks the
    course does not train are left out)."""
    from .dryrun import plan_dry_run

    args = argparse.Namespace(profile=profile, benchmark=None, runs=runs or "runs", data_root=data_root,
                              seeds=1, study=False, device=None, overrides=[], jobs=1)
    out, seen = [], set()
    for bench in plan_dry_run(args, "course").benchmarks:
        if not bench.in_plan:
            continue
        for group, items in (("data", bench.data.values()), ("checkpoint", bench.checkpoints.values())):
            for item in items:
                if item.path in seen:  # the cities share the Cityscapes lists: one line each
                    continue
                seen.add(item.path)
                ok = {"ok": True, "warn": True, "planned": None}.get(item.status, False if item.required else None)
                detail = item.path + (f" — {item.detail}" if item.detail else "")
                detail += f" — {item.hint}" if ok is False and item.hint else ""
                out.append(Check(group, item.what, ok, detail))
    return out


def report(checks: list[Check]) -> str:
    """The checks as aligned lines and a last line that counts them."""
    width = max((len(c.item) for c in checks), default=0)
    lines = [f"{MARKS[c.ok]} {c.group:<10} {c.item:<{width}}  {c.detail}" for c in checks]
    failed = sum(c.ok is False for c in checks)
    lines.append(f"{sum(c.ok is True for c in checks)} of {len(checks)} checks passed, {failed} to fix"
                 + (" (– = optional, or made by `maxsq course`)" if any(c.ok is None for c in checks) else ""))
    return "\n".join(lines)


def doctor(profile: str = "cpu", *, runs: str | None = None, data_root: str | None = None,
           device: str = "auto", inputs: bool = True) -> list[Check]:
    """Every check of ``maxsq doctor`` (packages, runtime, and with ``inputs`` the course's data
    and checkpoints).

    Returns:
        the checks, in report order.
    """
    checks = package_checks() + runtime_checks(device)
    return checks + (input_checks(profile, runs, data_root) if inputs else [])
