"""Writes state dicts laid out as PyTorch's nn.Sequential would save them (safetensors.torch
.save_file: names '<index>.weight', Linear [out, in], Conv2d [out, in, kh, kw], F32), with the
logits a plain NumPy forward pass computes for the first 16 fixture test images. The safetensors
writer and the forward pass here are independent of QShape's Swift code.
Run from this folder: python3 make_pytorch_fixture.py"""
import gzip, json, struct
import numpy as np

rng = np.random.default_rng(1234)

def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, a in tensors.items():
        if a.dtype == np.int64:
            dtype = "I64"
        else:
            a = a.astype("<f4"); dtype = "F32"
        b = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b); blobs.append(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h)
        for b in blobs: f.write(b)

def uniform(shape, fan_in):
    bound = 1 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)

def conv(x, w, b, pad):
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = h + 2 * pad - k + 1, wd + 2 * pad - k + 1
    y = np.zeros((n, o, oh, ow), dtype=np.float64)
    for ky in range(k):
        for kx in range(k):
            patch = xp[:, :, ky:ky + oh, kx:kx + ow].astype(np.float64)
            y += np.einsum("nchw,oc->nohw", patch, w[:, :, ky, kx].astype(np.float64))
    return y + b.astype(np.float64)[None, :, None, None]

def maxpool2(x):
    n, c, h, w = x.shape
    return x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))

with gzip.open("fashion-mnist-mini/t10k-images-idx3-ubyte.gz") as f:
    images = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)[:16]
x = images.astype(np.float64) / 255.0

# MLP: Flatten, Linear(784, 256), ReLU, Linear(256, 128), ReLU, Linear(128, 10)
mlp = {"1.weight": uniform((256, 784), 784), "1.bias": uniform((256,), 784),
       "3.weight": uniform((128, 256), 256), "3.bias": uniform((128,), 256),
       "5.weight": uniform((10, 128), 128), "5.bias": uniform((10,), 128)}
h = x.reshape(16, -1)
h = np.maximum(h @ mlp["1.weight"].T.astype(np.float64) + mlp["1.bias"], 0)
h = np.maximum(h @ mlp["3.weight"].T.astype(np.float64) + mlp["3.bias"], 0)
h = h @ mlp["5.weight"].T.astype(np.float64) + mlp["5.bias"]
write_safetensors("pytorch-mlp.safetensors", mlp)
np.save("pytorch-mlp-logits.npy", h.astype(np.float32))

# CNN: Conv(1,16,3,p1), ReLU, MaxPool2, Conv(16,32,3,p1), ReLU, MaxPool2, Flatten,
#      Linear(1568,128), ReLU, Linear(128,10)
cnn = {"0.weight": uniform((16, 1, 3, 3), 9), "0.bias": uniform((16,), 9),
       "3.weight": uniform((32, 16, 3, 3), 144), "3.bias": uniform((32,), 144),
       "7.weight": uniform((128, 1568), 1568), "7.bias": uniform((128,), 1568),
       "9.weight": uniform((10, 128), 128), "9.bias": uniform((10,), 128)}
h = maxpool2(np.maximum(conv(x, cnn["0.weight"], cnn["0.bias"], 1), 0))
h = maxpool2(np.maximum(conv(h, cnn["3.weight"], cnn["3.bias"], 1), 0))
h = h.reshape(16, -1)    # C, H, W order, as nn.Flatten
h = np.maximum(h @ cnn["7.weight"].T.astype(np.float64) + cnn["7.bias"], 0)
h = h @ cnn["9.weight"].T.astype(np.float64) + cnn["9.bias"]
write_safetensors("pytorch-cnn.safetensors", cnn)
np.save("pytorch-cnn-logits.npy", h.astype(np.float32))
