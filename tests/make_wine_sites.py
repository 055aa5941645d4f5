"""Write ``wine_sites.csv``: scikit-learn's wine data as two labs measured it.

The 178 wines (13 chemical measurements, three cultivars) are standardised (z-scores) and dealt
alternately, within each cultivar, to ``lab_a`` and ``lab_b``. Lab B's instruments are
calibrated differently: every measurement reads 1 standard deviation high and spreads half
as wide around that. One table, two domains in its ``site`` column: the run file
``table_domain_adaptation.yaml`` adapts a classifier trained on lab A's labelled wines to lab B.

Run: ``python tests/make_wine_sites.py`` (tests/test_table_example.py checks that the
shipped table is what this makes).
"""

from pathlib import Path

import numpy as np
from sklearn.datasets import load_wine

#: Where the table is shipped: the package's examples (``examples/`` links there).
OUT = Path(__file__).resolve().parents[1] / "src/tlroutes/examples/data/wine_sites.csv"


def make_table():
    """The table as a pandas DataFrame."""
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
    return features.round(4).assign(cultivar=cultivar, site=site)


if __name__ == "__main__":
    make_table().to_csv(OUT, index=False)
