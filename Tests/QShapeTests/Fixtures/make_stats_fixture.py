"""Writes weight tensors and their statistics as SciPy computes them (population moments:
scipy.stats.skew and kurtosis(fisher=False), bias=True), and the seed quantiser's integers as NumPy
computes them (qf = float32(qmax) / max|W|, then w * qf in float32, then the rounding), for the tests.
Run from this folder: python3 make_stats_fixture.py"""
import json, struct
import numpy as np
from scipy import stats

rng = np.random.default_rng(7)
tensors = {
    "normal": (0.05 * rng.standard_normal((16, 50))).astype(np.float32),
    "uniform": rng.uniform(-0.1, 0.1, (8, 33)).astype(np.float32),
    "laplace": rng.laplace(0, 0.03, (10, 40)).astype(np.float32),
    "skewed": (0.02 * rng.lognormal(0, 1, (12, 25)) - 0.03).astype(np.float32),
    "outlier": (0.05 * rng.standard_normal((6, 64))).astype(np.float32),
    "ties": np.array([[3, 0.5, 1.5, -2.5], [2.5, -0.5, -1.5, 0]], dtype=np.float32),
}
tensors["outlier"][2, 7] = 0.9

def describe(a):
    a = a.astype(np.float64).ravel()
    return {"mean": a.mean(), "std": a.std(), "skewness": float(stats.skew(a)),
            "kurtosis": float(stats.kurtosis(a, fisher=False)), "max_abs_over_std": float(np.abs(a).max() / a.std())}

expected, out = {}, dict(tensors)
for name, w in tensors.items():
    expected[name] = {"tensor": describe(w), "channels": [describe(row) for row in w]}
    for bits in (2, 3, 4, 8, 16):
        qf = np.float32(2 ** (bits - 1) - 1) / np.abs(w).max()
        t = (w * qf).astype(np.float32)
        out[f"{name}.q{bits}.nearest_even"] = np.round(t).astype(np.int32)
        out[f"{name}.q{bits}.truncate"] = np.trunc(t).astype(np.int32)
        t64 = t.astype(np.float64)
        out[f"{name}.q{bits}.nearest"] = (np.sign(t64) * np.floor(np.abs(t64) + 0.5)).astype(np.int32)

header, offset, blobs = {}, 0, []
for name, a in out.items():
    dtype = "F32" if a.dtype == np.float32 else "I32"
    b = a.astype("<f4" if dtype == "F32" else "<i4").tobytes()
    header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
    offset += len(b); blobs.append(b)
h = json.dumps(header).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open("weight-fixtures.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h)
    for b in blobs: f.write(b)
with open("weight-fixtures-stats.json", "w") as f:
    json.dump(expected, f, indent=1)
