"""Writes the Fashion-MNIST subset used by the tests: the first N_TRAIN training and N_TEST test
images of /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist), as gzip IDX
files with the original names. Run from this folder: python3 make_fashion_subset.py"""
import gzip, os

SRC = "/usr/share/datasets/fashion-mnist"
N_TRAIN, N_TEST = 3000, 1000

def subset(name, count, header):
    with gzip.open(os.path.join(SRC, name)) as f:
        data = f.read()
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(data[3])]
    per = 1
    for d in dims[1:]:
        per *= d
    out = data[:4] + count.to_bytes(4, "big") + data[8:header] + data[header: header + count * per]
    with gzip.GzipFile(os.path.join("fashion-mnist-mini", name), "wb", mtime=0) as g:
        g.write(out)

subset("train-images-idx3-ubyte.gz", N_TRAIN, 16)
subset("train-labels-idx1-ubyte.gz", N_TRAIN, 8)
subset("t10k-images-idx3-ubyte.gz", N_TEST, 16)
subset("t10k-labels-idx1-ubyte.gz", N_TEST, 8)
