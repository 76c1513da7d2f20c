"""06 - Few-shot learning on classes never seen in training: ProtoNet with L2G, meta-trained on
Fashion-MNIST (8 base classes, rotated x4), tested 5-way 1-shot on the 2 held-out Fashion-MNIST
classes (rotated) and on MNIST digits (cross-domain), then adapted to a 5-class support set.

Needs the MNIST and Fashion-MNIST IDX files (docs/guide/data.md). AUTOML_BILEVEL_EXAMPLE_QUICK=1: a
tiny run (a few seconds of meta-training).

Expected run time: about 15 minutes on one free CPU core, most of it the 2,000 meta-iterations
(ProtoNet + L2G at these settings runs about 0.35 s per meta-iteration: 130 in 45 s in
benchmarks/results/fewshot.md), then one to two minutes for the 1,200 test episodes. On a busy machine
it takes several times longer. The progress bar (stderr) shows the meta-iterations done, the best
value and the time left for your machine after the first few steps.
"""

import os
import sys

import numpy as np
import torch

from automl_bilevel import MetaLearnerClassifier
from automl_bilevel.frontends.data import DatasetNotFoundError, load_idx_dataset
from automl_bilevel.methods.meta import class_split, rotate_classes

if __name__ == "__main__":
    quick = os.environ.get("AUTOML_BILEVEL_EXAMPLE_QUICK") == "1"
    torch.set_num_threads(1)  # as in the benchmark the times above come from; several threads spin on a busy machine
    try:
        X, y = load_idx_dataset("fashion-mnist", "train")
        Xm, ym = load_idx_dataset("mnist", "test")
    except DatasetNotFoundError as exc:
        sys.exit(str(exc))
    keep = np.arange(len(y)) < (6000 if quick else 60000)
    X, y = X[keep], y[keep]
    seen, held_out = class_split(y, (8, 2), seed=0)  # split the base classes first ...
    meta = MetaLearnerClassifier(
        "protonet",
        l2g=True,
        n_way=5,
        k_shot=1,
        q_queries=5 if quick else 15,
        rotations=True,
        val_fraction=0.25,
        meta_iters=20 if quick else 2000,
        val_every=10 if quick else 100,
        val_episodes=10 if quick else 50,
        random_state=0,
        verbose=1,
    ).fit(X[np.isin(y, seen)], y[np.isin(y, seen)])
    Xh, yh = rotate_classes(X[np.isin(y, held_out)][:, None] / 255.0, y[np.isin(y, held_out)])  # ... then rotate
    n = 50 if quick else 600
    for name, (Xe, ye) in {"held-out Fashion-MNIST classes": (Xh, yh), "MNIST (cross-domain)": (Xm, ym)}.items():
        print(f"testing on {name}: {n} episodes ...", file=sys.stderr, flush=True)
        r = meta.evaluate(Xe, ye, n_episodes=n, random_state=0)
        print(f"{name}: 5-way 1-shot accuracy {r['accuracy']:.3f} ± {r['ci95']:.3f} over {n} episodes")
    support = np.concatenate([np.flatnonzero(ym == c)[:1] for c in range(5)])
    clf = meta.adapt(Xm[support], ym[support])
    mask = ym < 5
    print(
        f"adapted to digits 0-4 from one example each: accuracy {np.mean(clf.predict(Xm[mask]) == ym[mask]):.3f}; "
        f"best meta-validation accuracy {meta.best_val_accuracy_:.3f}"
    )
