"""Write ``wine_sites.csv``: scikit-learn's wine data as two labs measured it.

The 178 wines (13 chemical measurements, three cultivars) are standardised (z-scores) and dealt
alternately, within each cultivar, to ``lab_a`` and ``lab_b``. Lab B's instruments are
calibrated differently: every measurement reads 1 standard deviation high and spreads half
as wide around that. One table, two domains in its ``site`` column: the run file
``table_domain_adaptation.yaml`` adapts a classifier trained on lab A's labelled wines to lab B.

Run from the repository root: ``python examples/data/make_wine_sites.py``.
"""

from pathlib import Path

import numpy as np
from sklearn.datasets import load_wine


def main() -> None:
    data = load_wine(as_frame=True)
    features = data.data
    features = (features - features.mean()) / features.std()
    cultivar = np.asarray(data.target_names)[data.target.to_numpy()]
    site = np.empty(len(features), dtype=object)
    for name in np.unique(cultivar):
        rows = np.flatnonzero(cultivar == name)
        site[rows] = np.where(np.arange(rows.size) % 2 == 0, "lab_a", "lab_b")
    lab_b = site == "lab_b"
    features.loc[lab_b] = features.loc[lab_b] * 0.5 + 1.0
    table = features.round(4).assign(cultivar=cultivar, site=site)
    table.to_csv(Path(__file__).with_name("wine_sites.csv"), index=False)


if __name__ == "__main__":
    main()
