"""How long the demo's main runs should train: epoch budgets against the noisy-validation NLL.

The demo's main runs (``hetexport.studies.demo``: all 54k noisy Fashion-MNIST training images,
batch 256, cosine learning-rate decay over the budget, best epoch by noisy-validation NLL) are
trained at seed 0 for both heads (HET with R = 6, tau = 0.5, the demo's grid choice, and the
plain softmax head) under each schedule of ``SCHEDULES``: the earlier default (5 fixed epochs),
the current one (at most 12, stop after 3 epochs without improvement) and a long budget (at
most 30, same patience). Each row: the validation NLL after every epoch, the epoch kept, the
epochs run, the clean-test top-1 / NLL / ECE and the wall time; and the comparison HET - plain
per schedule.

The runs are bit-for-bit reproducible on one machine (``TrainConfig``), so only the times vary
between re-runs. Two processes of one thread each (one per head).

Reproduce: ``.venv/bin/python bench/demo_epochs.py`` (``make bench-demo-epochs``); result in
``bench/results/demo-epochs-<machine>.json`` with its provenance.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from hetexport.data import DEFAULT_FASHION_MNIST_DIR
from hetexport.studies.demo import DEMO_EPOCHS, DEMO_PATIENCE, DemoConfig, _spec
from hetexport.training import TrainConfig
from hetexport.training.experiment import fit, prepare_fashion_mnist
from provenance import write_result

SCHEDULES: dict[str, tuple[int, int | None]] = {
    "fixed_5": (5, None),
    "demo": (DEMO_EPOCHS, DEMO_PATIENCE),
    "budget_30": (30, DEMO_PATIENCE),
}
"""name: (epochs, patience): the earlier default, the demo's current one, a long budget."""
HEADS = {"het": (6, 0.5), "det": (0, 1.0)}
"""(R, tau) of each head: the demo's grid choice for HET."""
MEASURES = ["export/src/hetexport/training", "export/src/hetexport/studies/demo.py",
            "export/src/hetexport/layers", "export/src/hetexport/model.py",
            "export/src/hetexport/backbones.py", "export/src/hetexport/label_noise.py",
            "export/src/hetexport/data", "bench/demo_epochs.py"]


def train_head(head: str, data_dir: Path, schedules: dict[str, tuple[int, int | None]]
               ) -> dict[str, Any]:
    """Every schedule for one head, seed 0, one thread."""
    config = DemoConfig(model_repo=Path("unused"), data_dir=data_dir, progress=False)
    data = prepare_fashion_mnist(data_dir, noise_rate=config.noise_rate)
    num_factors, temperature = HEADS[head]
    spec = _spec(config, data, head=head, num_factors=num_factors, temperature=temperature)
    rows = {}
    for name, (epochs, patience) in schedules.items():
        started = time.perf_counter()
        fitted = fit(spec, data, config=TrainConfig(
            epochs=epochs, patience=patience, seed=0, batch_size=config.batch_size,
            num_threads=1, progress=False))
        assert fitted.test is not None
        history = fitted.training.history
        rows[name] = {"epochs": epochs, "patience": patience,
                      "validation_nll": [record.validation.nll for record in history],
                      "best_epoch": fitted.training.best_epoch, "epochs_run": len(history),
                      "test": fitted.test.as_dict(), "seconds": time.perf_counter() - started}
        print(f"{head} {name}: best {rows[name]['best_epoch']} of {len(history)}, test "
              f"{fitted.test}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_FASHION_MNIST_DIR)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(HEADS), mp_context=context) as pool:
        futures = {head: pool.submit(train_head, head, args.data_dir, SCHEDULES)
                   for head in HEADS}
        results = {head: future.result() for head, future in futures.items()}
    comparison = {name: {metric: results["het"][name]["test"][metric]
                         - results["det"][name]["test"][metric] for metric in ("top1", "nll")}
                  for name in SCHEDULES}
    for name, diff in comparison.items():
        print(f"{name}: HET - plain top-1 {100 * diff['top1']:+.2f} points, NLL "
              f"{diff['nll']:+.4f}")
    write_result({"schedules": {name: {"epochs": e, "patience": p}
                                for name, (e, p) in SCHEDULES.items()},
                  "seed": 0, "runs": results, "het_minus_det": comparison},
                 "demo-epochs", measures=MEASURES)


if __name__ == "__main__":
    main()
