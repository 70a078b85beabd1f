"""Is it the training at M clusters or the merge? Alternative merges of overclustered runs.

    python benchmarks/diagnose_merge.py RUNS_DIR OUT.json

``RUNS_DIR`` is a ``bench_robustness_av.py`` working directory whose runs were trained with
``--set heads.overcluster=F``. For every finished run (``<world>/seed<s>/run``) the primary
head's fine labels (the ``label`` command's prediction at M = F x K clusters, both streams) are
scored and merged into K groups in several ways; each row is the NMI (%) of the merged labels:

- ``fine (M clusters)``: the fine labels themselves, and ``fine homogeneity`` (100 = no fine
  cluster mixes classes: a perfect merge exists);
- ``oracle merge``: each fine cluster to its majority class (no merge of these fine clusters
  labels more samples right; it reads the ground truth, so it is a bound, not a method);
- ``features (library)``: the library's merge (:func:`otcluster.merge_clusters` on both
  streams' L2-normalised pooled features, concatenated);
- ``video features`` / ``audio features``: the same on one stream's features;
- ``co-association``: fine clusters grouped by how the run's other labellings (every head's
  prediction, every stream's heads alone) split them: the affinity of clusters ``i`` and ``j``
  is the chance that a sample of ``i`` and a sample of ``j`` fall in the same cluster of another
  labelling, averaged over the labellings; grouped by average-linkage agglomeration.

It answers whether the fine clusters hold the classes (oracle high) and which merge finds them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import homogeneity_score, normalized_mutual_info_score

from otcluster import merge_clusters
from otcluster_video.commands import _inference

sys.path.insert(0, str(Path(__file__).parent))
from bench_robustness_av import WORLDS, _truth  # noqa: E402
from screen_merge import finished_runs  # noqa: E402


def _contingency(a: np.ndarray, b: np.ndarray, m: int) -> np.ndarray:
    c = np.zeros((m, int(b.max()) + 1))
    np.add.at(c, (a, b), 1.0)
    return c


def coassociation_groups(fine: np.ndarray, others: list[np.ndarray], m: int, k: int) -> np.ndarray:
    """Groups of ``fine``'s ``m`` clusters from how ``others`` split them (see the module doc)."""
    used = np.flatnonzero(np.bincount(fine, minlength=m))
    groups = np.zeros(m, dtype=np.int64)
    if used.size <= k:  # nothing to merge
        groups[used] = np.arange(used.size)
        return groups
    affinity = np.zeros((m, m))
    for other in others:
        c = _contingency(fine, other, m)
        r = c / np.maximum(c.sum(1, keepdims=True), 1.0)
        affinity += r @ r.T
    affinity /= len(others)
    a = affinity[np.ix_(used, used)]
    agg = AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average")
    groups[used] = agg.fit_predict(1.0 - a)
    return groups


def diagnose(run: Path, k: int) -> dict[str, float]:
    loaded = _inference.load_run(run, "cpu")
    y = _truth(run / "manifest.csv", run.parent / "data" / "ground_truth.csv")
    feats = _inference.extract(loaded, _inference.eval_dataset(loaded.videos, loaded.config))
    if feats.failed:
        raise SystemExit(f"{run}: {len(feats.failed)} videos failed to decode")
    library = loaded.groups
    if library is None:
        raise SystemExit(f"{run} was not trained with heads.overcluster > 1: nothing to merge")
    loaded.groups = None
    lp = _inference.heads_log_probs(loaded, feats.z)  # fine, (H, N, M) per stream
    m = next(iter(lp.values())).shape[-1]
    fine_all = _inference.predict(lp, _inference.stream_weights(loaded, lp))[0].numpy()
    h = loaded.primary
    fine = fine_all[h]

    def nmi(groups: np.ndarray) -> float:
        return 100 * normalized_mutual_info_score(y, groups[fine])

    rows = {"fine (M clusters)": 100 * normalized_mutual_info_score(y, fine),
            "fine homogeneity": 100 * homogeneity_score(y, fine)}
    majority = np.zeros(m, dtype=np.int64)
    for c in np.unique(fine):
        majority[c] = np.bincount(y[fine == c]).argmax()
    rows["oracle merge"] = nmi(majority)
    rows["features (library)"] = nmi(library[h].numpy())
    z = {s: torch.nn.functional.normalize(v, dim=1) for s, v in feats.z.items()}
    kk = min(k, len(np.unique(fine)))
    for s in z:
        rows[f"{s} features"] = nmi(merge_clusters(z[s], fine, kk, n_clusters=m).groups.numpy())
    others = [fine_all[j] for j in range(len(fine_all)) if j != h]
    others += [v[j].argmax(-1).numpy() for v in lp.values() for j in range(v.shape[0])]
    rows["co-association"] = nmi(coassociation_groups(fine, others, m, kk))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path)
    p.add_argument("out", type=Path)
    a = p.parse_args()
    torch.set_num_threads(1)
    out = json.loads(a.out.read_text()) if a.out.is_file() else {}
    for world, seed, run in finished_runs(a.runs):
        key = f"{world}|{seed}"
        if key not in out:
            out[key] = diagnose(run, WORLDS[world].n_classes)
            a.out.write_text(json.dumps(out, indent=1))
        print(key, {r: round(v, 1) for r, v in out[key].items()}, flush=True)


if __name__ == "__main__":
    main()
