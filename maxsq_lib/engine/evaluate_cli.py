"""``maxsq evaluate``: score a run or a checkpoint file (ours or the authors' released ones).

It never deletes anything and refuses to overwrite an existing ``--output`` unless asked.
"""

from __future__ import annotations

from pathlib import Path

from ..labels import class_set_for
from .evaluation import evaluate
from .runs import RunExistsError, write_json_atomic
from ..models import unwrap_model
from .trainer import MissingInputError, build_dataset, resolve_device, run_dir_for
from .weights import model_from_file


def evaluate_command(args) -> int:
    from ..cli import aspp_chosen, resolve_from_args

    method = args.method if args.method not in (None, "source") else None
    cfg = resolve_from_args(args, method)
    if args.split:
        cfg.data.val_split = args.split
    cfg.eval.full_resolution_labels = bool(args.full_resolution_labels)
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
    elif args.method:
        checkpoint = run_dir_for(cfg, "source" if method is None else "adapt") / "final.pt"
    else:
        raise MissingInputError("maxsq evaluate: give --checkpoint FILE or --method NAME "
                                "(a finished run of this profile)")
    output = Path(args.output) if args.output else None
    if output is not None and output.exists() and not args.overwrite:
        raise RunExistsError(f"{output} exists; pass --overwrite to replace it")
    device = resolve_device(cfg.device)
    if not checkpoint.is_file():
        raise MissingInputError(f"checkpoint not found: {checkpoint} (expected a weight file: ours, "
                                f"or the authors' released .pth)")
    model, note = model_from_file(cfg, checkpoint, chosen=aspp_chosen(args))
    cfg.model.aspp_branches = unwrap_model(model).aspp_branches
    model = model.to(device)
    print(note)
    dataset = build_dataset(cfg, "val")
    result = evaluate(model, dataset, class_set_for(cfg.data.num_classes), device=device,
                      flip=args.flip, batch_size=cfg.eval.batch_size, limit=cfg.eval.limit,
                      amp=cfg.amp, progress=not args.no_progress,
                      desc=f"evaluate {checkpoint.name}")
    print(f"{cfg.benchmark} / {cfg.data.target} {cfg.data.val_split}: {checkpoint}")
    print(result.table())
    print(f"mean normalised entropy (label-free score): {result.mean_entropy:.4f}")
    if output is not None:
        write_json_atomic(output, {"checkpoint": str(checkpoint), "benchmark": cfg.benchmark,
                                   "split": cfg.data.val_split, "aspp_branches": cfg.model.aspp_branches,
                                   **result.to_dict()})
        print(f"wrote {output}")
    return 0
