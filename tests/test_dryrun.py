"""Dry runs (``--dry-run`` of train-source, adapt and course): what is present, what is missing,
with exact paths; exit codes; nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_data import make_cityscapes, make_gta5, make_nthu

from maxsq_lib.cli import build_parser, main, resolve_from_args
from maxsq_lib.course.commands import dry_run_report, shown_command
from maxsq_lib.course.dryrun import (
    check_dataset_split,
    config_summary,
    inspect_checkpoint_file,
)

ROOT = Path(__file__).resolve().parents[1]
INIT = "pretrained_model/DeepLab_resnet_pretrained_init-f81d91e8.pth"
PAPER_BENCHMARKS = ["gta5_cityscapes", "synthia_cityscapes", "cityscapes_nthu_rome",
                    "cityscapes_nthu_rio", "cityscapes_nthu_tokyo", "cityscapes_nthu_taipei"]


def tree(folder: Path) -> list[tuple[str, int, int]]:
    """Every path under ``folder`` with its size and modification time."""
    out = []
    for path in sorted(folder.rglob("*")):
        st = path.stat()
        out.append((str(path.relative_to(folder)), st.st_size if path.is_file() else -1, st.st_mtime_ns))
    return out


def parse(*argv: str):
    args = build_parser().parse_args(list(argv))
    args.typed = list(argv)  # the command line as typed, for plan()
    return args


def plan(args, command: str, base):
    """The dry-run report of the command line ``args`` was parsed from, as ``maxsq`` makes it."""
    assert args.command == command
    return dry_run_report(args, args.typed, resolve_from_args, base=base)


def by_benchmark(report) -> dict:
    return {b.benchmark: b for b in report.benchmarks}


def statuses(items) -> dict[str, str]:
    return {item.path: item.status for item in items}


@pytest.fixture
def paper_layout(tmp_path):
    """GTA5 (train 3, val 1), Cityscapes (train 3, val 1) and a torch-saved init file, nothing else."""
    data = tmp_path / "datasets"
    make_gta5(data, ids=(1, 2, 3, 4), lists={"train": [1, 2, 3], "val": [4]})
    make_cityscapes(data)
    init = tmp_path / INIT
    init.parent.mkdir(parents=True)
    torch.save({"Scale.conv1.weight": torch.zeros(2, 3, 1, 1)}, init)
    return tmp_path, data, tmp_path / "runs"


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory):
    from maxsq_prep.minicity import generate_minicity

    root = tmp_path_factory.mktemp("minicity") / "smoke"
    generate_minicity(root, profile="smoke", progress=False)
    return root


# ---------------------------------------------------------------------------------------------
# the command line


def test_course_dry_run_on_an_empty_folder_lists_every_missing_path(tmp_path):
    data, runs = tmp_path / "data", tmp_path / "runs"
    data.mkdir()
    before = tree(tmp_path)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONIOENCODING="utf-8")
    proc = subprocess.run([sys.executable, "-m", "maxsq_lib", "course", "--profile", "paper",
                           "--dry-run", "--data-root", str(data), "--runs", str(runs)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    for bench in PAPER_BENCHMARKS:
        assert f"== {bench}:" in out
    for path in ("GTA5/list/train.txt", "GTA5/list/val.txt", "Cityscapes/list/train.txt",
                 "Cityscapes/list/val.txt", "SYNTHIA/list/train.txt",
                 *(f"NTHU_Datasets/{c}/list/{s}.txt" for c in ("Rome", "Rio", "Tokyo", "Taipei")
                   for s in ("train", "test"))):
        assert f"{data}/{path}" in out, path
    # the course runs in the project root: its relative paths are checked there
    brought = (ROOT / INIT).is_file()  # a developer's own copy of the init file
    assert brought or f"✘ init checkpoint: {INIT}" in out
    assert f"Result: {13 - brought} required item(s) missing (exit code 1)" in out
    # the Multi row starts from the source model that also trained the aux head: planned, not missing
    assert "○ source checkpoint: " in out and "source_multi/seed0/final.pt" in out
    # the missing list at the end names the required paths, not SYNTHIA (the course skips it)
    summary = out.split("Result:")[1]
    assert f"{data}/GTA5/list/train.txt" in summary and "SYNTHIA" not in summary
    assert f"unpack it into {data}/GTA5/" in out and "download.visinf.tu-darmstadt.de" in out
    assert f"maxsq prepare lists gta5 --data-root {data} --split-file split.mat" in out
    assert tree(tmp_path) == before and not runs.exists()


def test_train_source_on_smoke_minicity_is_complete(smoke_data, tmp_path, capsys):
    runs = tmp_path / "runs"
    before = tree(smoke_data)
    rc = main(["train-source", "--profile", "smoke", "--dry-run", "--data-root", str(smoke_data),
               "--runs", str(runs)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"✔ GTA5 train list: {smoke_data}/GTA5/list/train.txt" in out
    assert "16 entries; the first 3 entries' files exist" in out  # smoke: 16 GTA5 train images
    assert f"✔ Cityscapes val list: {smoke_data}/Cityscapes/list/val.txt" in out
    assert "○ source_multi seed0 (to train)" in out
    assert (f"maxsq train-source --profile smoke --benchmark minicity --data-root {smoke_data} "
            f"--runs {runs}") in out  # as typed, with the benchmark it resolved to
    assert "torchrun --nproc_per_node=N -m maxsq_lib train-source --profile smoke" in out
    assert "everything the command needs is present (exit code 0)" in out
    assert tree(smoke_data) == before and not runs.exists()


def test_adapt_on_smoke_needs_the_source_model_until_it_exists(smoke_data, tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["adapt", "--method", "maxsquare", "--profile", "smoke", "--dry-run",
            "--data-root", str(smoke_data), "--runs", str(runs)]
    assert main(argv) == 1
    out = capsys.readouterr().out
    final = runs / "smoke" / "minicity" / "source_multi" / "seed0" / "final.pt"
    assert f"✘ source checkpoint: {final}" in out
    assert "train it first: maxsq train-source --profile smoke --benchmark minicity" in out
    final.parent.mkdir(parents=True)
    torch.save({"model": {}}, final)  # a file the run's reader refuses: the dry run refuses it too
    assert main(argv) == 1
    assert "entries that are not named tensors: ['model']" in capsys.readouterr().out
    torch.save({"conv1.weight": torch.ones(1)}, final)
    assert main(argv) == 0
    assert f"✔ source checkpoint: {final}" in capsys.readouterr().out


def test_course_on_smoke_counts_on_generating_minicity(tmp_path, capsys):
    data, runs = tmp_path / "mc", tmp_path / "runs"
    rc = main(["course", "--profile", "smoke", "--dry-run", "--data-root", str(data),
               "--runs", str(runs)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"○ MiniCity data: {data}" in out
    assert f"○ GTA5 train list: {data}/GTA5/list/train.txt" in out
    assert not data.exists() and not runs.exists()


# ---------------------------------------------------------------------------------------------
# the plan on a fabricated paper layout


def test_fabricated_gta5_layout_is_complete_for_source_training(paper_layout):
    base, data, runs = paper_layout
    before = tree(base)
    report = plan(parse("course", "--profile", "paper", "--data-root", str(data),
                                "--runs", str(runs)), "course", base=base)
    benches = by_benchmark(report)
    assert list(benches) == PAPER_BENCHMARKS
    gta = benches["gta5_cityscapes"]
    found = statuses(gta.data.values())
    # present; "warn" because the fabricated lists are not the authors' 12,403 / 6,382 / 2,975 / 500
    assert found == {f"{data}/GTA5/list/train.txt": "warn", f"{data}/GTA5/list/val.txt": "warn",
                     f"{data}/Cityscapes/list/train.txt": "warn",
                     f"{data}/Cityscapes/list/val.txt": "warn"}
    train = gta.data[("gta5", str(data), "train", None)]
    assert train.detail.startswith("3 entries; the first 3 entries' files exist")
    assert "the authors' list has 12,403" in train.detail
    assert train.used_by == ["source training"]
    ckpts = {Path(i.path).relative_to(base).as_posix(): i for i in gta.checkpoints.values()}
    assert ckpts[INIT].status == "ok" and ckpts[INIT].detail.startswith("the DeepLab init file ('Scale.' keys")
    source = ckpts["runs/paper/gta5_cityscapes/source/seed0/final.pt"]
    assert source.status == "planned" and "source seed0" in source.detail
    assert "maxsquare seed0" in source.used_by and "maxsquare_iw_multi seed0" not in source.used_by
    # the Multi row starts from the multi-level source model, which the course trains first
    multi = ckpts["runs/paper/gta5_cityscapes/source_multi/seed0/final.pt"]
    assert multi.status == "planned" and multi.used_by == ["maxsquare_iw_multi seed0"]
    assert "source_multi seed0" in multi.detail
    assert {r.state.status for r in gta.runs} == {"planned"}
    # the other benchmarks still lack their data
    synthia = statuses(benches["synthia_cityscapes"].data.values())
    assert synthia[f"{data}/SYNTHIA/list/train.txt"] == "missing"
    rome = statuses(benches["cityscapes_nthu_rome"].data.values())
    assert rome[f"{data}/NTHU_Datasets/Rome/list/test.txt"] == "missing"
    assert rome[f"{data}/Cityscapes/list/train.txt"] == "warn"
    missing = {i.path for i in report.missing}
    assert str(multi.path) not in missing and f"{data}/SYNTHIA/list/train.txt" not in missing
    assert not report.ok
    assert tree(base) == before


def test_fabricated_layout_passes_train_source_and_adapt_needs_the_source_checkpoint(paper_layout):
    base, data, runs = paper_layout
    common = ["--profile", "paper", "--data-root", str(data), "--runs", str(runs)]
    source = plan(parse("train-source", *common), "train-source", base=base)
    assert source.ok, source.format()
    assert [b.benchmark for b in source.benchmarks] == ["gta5_cityscapes"]
    adapt = plan(parse("adapt", "--method", "maxsquare", *common), "adapt", base=base)
    final = runs / "paper" / "gta5_cityscapes" / "source" / "seed0" / "final.pt"
    assert [(i.what, i.path) for i in adapt.missing] == [("source checkpoint", str(final))]
    text = adapt.format()
    assert f"maxsq train-source --profile paper --benchmark gta5_cityscapes --runs {runs}" in text
    assert text.rstrip().endswith(f"✘ {final}  (source checkpoint)")
    final.parent.mkdir(parents=True)
    torch.save({"conv1.weight": torch.ones(1)}, final)
    assert plan(parse("adapt", "--method", "maxsquare", *common), "adapt", base=base).ok
    # an explicit --source-checkpoint is checked instead of the source run
    explicit = plan(parse("adapt", "--method", "maxsquare", *common, "--source-checkpoint",
                                  str(base / "GTA5_source.pth")), "adapt", base=base)
    assert [i.path for i in explicit.missing] == [str(base / "GTA5_source.pth")]


def test_run_folders_the_command_would_refuse_are_reported(paper_layout):
    base, data, runs = paper_layout
    common = ["--profile", "paper", "--data-root", str(data), "--runs", str(runs)]
    run_dir = runs / "paper" / "gta5_cityscapes" / "source" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "last.pt").write_bytes(b"")
    report = plan(parse("train-source", *common), "train-source", base=base)
    assert [i.path for i in report.missing] == [str(run_dir)]
    assert "--resume" in report.missing[0].hint
    assert plan(parse("train-source", *common, "--resume"), "train-source", base=base).ok
    course = plan(parse("course", *common), "course", base=base)
    state = by_benchmark(course)["gta5_cityscapes"].runs[0].state
    assert state.status == "missing" and "would stop here" in state.detail
    assert "--resume" in state.hint
    (run_dir / "FINISHED").write_text("finished\n")
    refused = plan(parse("train-source", *common), "train-source", base=base)
    assert "already holds a finished run" in refused.missing[0].detail
    assert plan(parse("train-source", *common, "--overwrite"), "train-source", base=base).ok


def test_verbose_prints_the_full_resolved_config(paper_layout, monkeypatch):
    base, data, runs = paper_layout
    monkeypatch.setenv("MAXSQ_ROOT", str(base))  # the report resolves the command under its root
    args = parse("adapt", "--method", "maxsquare_iw_multi", "--profile", "paper", "--data-root",
                 str(data), "--runs", str(runs), "--lambda-target", "0.05", "--seed", "2")
    cfg = resolve_from_args(args, "maxsquare_iw_multi")
    report = plan(args, "adapt", base=base)
    text = report.format(verbose=True)
    dumped = yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip().splitlines()
    assert "\n".join("        " + line for line in dumped) in text
    assert "\n".join(dumped[:3]) not in report.format(verbose=False)
    assert str(runs / "paper/gta5_cityscapes/maxsquare_iw_multi/seed2/config.yaml") in text
    summary = config_summary(cfg, "adapt")
    assert "λ_T 0.05, λ_seg 0.1, threshold 0.95, IW α 0.2" in summary
    assert "target 1280×640, val 1280×640" in summary and "batch 1+1" in summary
    assert "SGD lr 2.5e-04 (heads ×10), momentum 0.9, wd 0.0005" in summary


# ---------------------------------------------------------------------------------------------
# the pieces


@pytest.mark.parametrize("argv", [
    ["adapt", "--method", "maxsquare_iw", "--profile", "paper", "--benchmark",
     "cityscapes_nthu_tokyo", "--lambda-target", "0.03", "--iw-ratio", "0.3", "--seed", "4",
     "--bn-mode", "frozen", "--tag", "x", "--set", "adapt.iterations=10", "--runs", "elsewhere"],
    ["train-source", "--profile", "smoke", "--multi", "false", "--iterations", "3",
     "--init-checkpoint", "none", "--data-root", "d"],
])
def test_printed_command_resolves_to_the_same_config(argv):
    args = parse(*argv)
    stage = "source" if argv[0] == "train-source" else "adapt"
    method = args.method if stage == "adapt" else None
    cfg = resolve_from_args(args, method)
    again = parse(*shown_command(argv + ["--dry-run"], cfg.benchmark))
    assert resolve_from_args(again, method).to_dict() == cfg.to_dict()


def test_checkpoint_files_are_recognised_by_the_runs_own_reader(tmp_path):
    modern, legacy, junk, empty = (tmp_path / n for n in ("a.pt", "b.pth", "c.pth", "d.pth"))
    torch.save({"module.w": torch.ones(3)}, modern)
    torch.save({"Scale.w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    junk.write_text("not a checkpoint")
    empty.write_bytes(b"")
    size = modern.stat().st_size / 1e6
    assert inspect_checkpoint_file(modern) == (True, f"a bare DataParallel state_dict ('module.' keys), {size:.1f} MB")
    size = legacy.stat().st_size / 1e6
    assert inspect_checkpoint_file(legacy) == (
        True, f"the DeepLab init file ('Scale.' keys; its layer5 classifier skipped), {size:.1f} MB")
    usable, detail = inspect_checkpoint_file(junk)
    assert not usable and detail.startswith("not a readable checkpoint") and str(junk) not in detail
    assert not inspect_checkpoint_file(empty)[0]
    assert inspect_checkpoint_file(tmp_path / "absent.pth") == (False, "not found")
    assert inspect_checkpoint_file(tmp_path) == (False, "not a file")


def test_dataset_split_checks_name_the_problem(tmp_path):
    make_gta5(tmp_path, ids=(1, 2), lists={"train": [1, 2, 5], "all": [1, 2]})
    absent = check_dataset_split("gta5", tmp_path, "val")
    assert absent.status == "missing" and absent.path == str(tmp_path / "GTA5/list/val.txt")
    assert absent.detail == "list file not found (lists there: all, train)"
    # listed files are looked for only among the first entries: id 5 is the third
    assert check_dataset_split("gta5", tmp_path, "train", spot=2).status == "warn"  # paper counts
    three = check_dataset_split("gta5", tmp_path, "train", spot=3)
    assert three.status == "missing" and str(tmp_path / "GTA5/images/00005.png") in three.detail
    assert "maxsq data check gta5" in three.hint
    (tmp_path / "GTA5/list/bad.txt").write_text("1\nfoo\n")
    bad = check_dataset_split("gta5", tmp_path, "bad")
    assert bad.status == "missing" and "bad.txt:2 ('foo')" in bad.detail
    ok = check_dataset_split("gta5", tmp_path, "all", profile="cpu", spot=2)
    assert (ok.status, ok.detail) == ("ok", "2 entries; the first 2 entries' files exist")
    make_nthu(tmp_path, "Rio")
    val = check_dataset_split("nthu", tmp_path, "val", city="Rio", num_classes=13)
    assert val.path == str(tmp_path / "NTHU_Datasets/Rio/list/test.txt") and val.status == "warn"
    no_city = check_dataset_split("nthu", tmp_path, "train", city="Rome", num_classes=13)
    assert no_city.detail == f"NTHU folder not found: {tmp_path / 'NTHU_Datasets/Rome'}"
    assert no_city.hint.startswith("get the NTHU cross-city dataset")
    assert f"then the lists: maxsq prepare lists nthu --city Rome --data-root {tmp_path}" in no_city.hint
    root_gone = check_dataset_split("cityscapes", tmp_path / "nowhere", "train", profile="smoke")
    assert root_gone.detail == f"data root not found: {tmp_path / 'nowhere'}"
    assert root_gone.hint.startswith("generate MiniCity: maxsq prepare minicity --profile smoke")


def test_relative_paths_are_checked_and_shown_under_the_command_folder(paper_layout):
    base, data, _runs = paper_layout
    args = parse("adapt", "--method", "maxsquare", "--profile", "paper", "--data-root", "datasets")
    report = plan(args, "adapt", base=base)  # as if run from `base`, not from here
    final = base / "runs/paper/gta5_cityscapes/source/seed0/final.pt"
    assert [i.path for i in report.missing] == [str(final)]
    data_items = report.benchmarks[0].data.values()
    assert {i.path for i in data_items} == {f"{data}/GTA5/list/train.txt",
                                            f"{data}/Cityscapes/list/train.txt",
                                            f"{data}/Cityscapes/list/val.txt"}
    assert report.benchmarks[0].notebook == (
        f"papermill notebooks/04_adaptation.ipynb "
        f"{base}/runs/paper/notebooks/04_adaptation-maxsquare.ipynb -p profile paper "
        f"-p method maxsquare -p runs_root {base}/runs -p data_root {data}")
