"""Stage `classical`: the non-learned references on the same test pairs as the study runs.

- ``blurred``: the blurred input itself (the floor every method must beat).
- ``wiener_oracle``: Wiener deconvolution with the *true* kernel(s) of each pair's record: an oracle upper bound
  for the uniform families (a blind method never knows the kernel), and a mask-blended oracle for nonuniform.
- ``richardson_lucy``: Richardson-Lucy (scikit-image) with the same true kernel(s), 30 iterations.

``evaluate.classical_methods`` picks which (``blurred`` and ``wiener_oracle`` always: the gains and the picture
grids need them); the quick set leaves out Richardson-Lucy, about 0.25 s per 256² pair on a 2-core CPU.

Writes ``--report`` (per method, the same per-family layout as a study run's eval report) and ``--images``
(``<method>/<family>.png`` for the picture crops, ``sharp/<family>.png`` and ``blurred/real_<name>.png``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from _common import parser, stage_main

from bdirnet.classical import oracle_restore
from bdirnet.config import CLASSICAL_METHODS, load_params
from bdirnet.evaluation import (
    evaluate_restorer,
    format_table,
    picture_pairs,
    read_test_pairs,
    real_blur_photos,
    report_groups,
    seconds_per_image,
)
from bdirnet.images import load_image, save_png, to_uint8
from bdirnet.runtime import stage_location

METHODS: dict[str, Callable[[torch.Tensor, dict[str, Any]], torch.Tensor]] = {
    "blurred": lambda blurred, _params: blurred,
    "wiener_oracle": partial(oracle_restore, method="wiener"),
    "richardson_lucy": partial(oracle_restore, method="richardson_lucy"),
}
assert tuple(METHODS) == CLASSICAL_METHODS, "evaluate.classical_methods names these (bdirnet.config)"


@stage_main
def main() -> None:
    args = parser(__doc__)
    args.add_argument("--pairs", type=Path, required=True, help="local pairs folder (default storage)")
    args.add_argument("--real-blur", type=Path, required=True, help="folder of real blurred photos")
    args.add_argument("--report", type=Path, required=True, help="reports/classical.json")
    args.add_argument("--images", type=Path, required=True, help="reports/classical/")
    ns = args.parse_args()
    degrade = load_params("degrade", ns.params)
    evaluate = load_params("evaluate", ns.params)
    pairs = list(read_test_pairs(f"{stage_location(ns.pairs, 'pairs')}/test"))
    pictures = picture_pairs(pairs)
    torch.set_grad_enabled(False)
    methods: dict[str, Any] = {}
    for name in evaluate.classical_methods:
        restore = METHODS[name]
        scores = evaluate_restorer(pairs, restore, degrade.held_out_families)
        families = {family: s.summary(per_image=True) for family, s in scores.items()}
        for family, pair in pictures.items():
            save_png(to_uint8(restore(pair.blurred, pair.params))[0], ns.images / name / f"{family}.png")
        timed = next(iter(pictures.values()))
        seconds = seconds_per_image(lambda image, p=timed.params, r=restore: r(image, p), timed.blurred, repeats=3)
        methods[name] = {
            "parameters": 0,
            "seconds_per_image": round(seconds, 5),
            "timed_image_hw": list(timed.blurred.shape[-2:]),
            "pictures": {family: pair.pair_id for family, pair in pictures.items()},
            "families": families,
            **report_groups(families),
        }
        print(format_table(families, f"{name} on {len(pairs)} test pairs"))
    for family, pair in pictures.items():
        save_png(to_uint8(pair.sharp)[0], ns.images / "sharp" / f"{family}.png")
    for photo in real_blur_photos(ns.real_blur):
        save_png(to_uint8(load_image(photo))[0], ns.images / "blurred" / f"real_{photo.stem}.png")
    ns.report.parent.mkdir(parents=True, exist_ok=True)
    ns.report.write_text(json.dumps({"methods": methods}, indent=2) + "\n")


if __name__ == "__main__":
    main()
