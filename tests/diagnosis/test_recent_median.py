"""The rules' vectorised "median of the last measured steps" against numpy's median, column by column."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gradvet.diagnosis._measures import recent_median

_values = st.one_of(
    st.floats(-1e6, 1e6, width=32), st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1.0])
)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 12)), elements=_values))
def test_recent_median_is_the_median_of_each_columns_finite_values(rows: np.ndarray) -> None:
    got = recent_median(rows)
    for j in range(rows.shape[1]):
        col = rows[:, j].astype(np.float64)
        col = col[np.isfinite(col)]
        if len(col):
            assert got[j] == float(np.median(col))
        else:
            assert np.isnan(got[j])
