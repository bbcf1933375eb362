"""Trains an example network with PyTorch exactly as Examples/fashion-mlp.yaml or fashion-cnn.yaml
describe (same layers, PyTorch's default initialisation, Adam lr 1e-3, batch 128 with the last
partial batch kept, inputs / 255, reshuffled every epoch), saves its state dict with
safetensors.torch.save_file, and writes a JSON file with its test accuracy and, for every bit width
asked, the test accuracy of the seed quantiser applied to the weights only (biases and activations
float):  qf = (2^(b-1)-1) / max|W|,  q = round(W * qf),  W' = q / qf.
Both roundings are reported: half to even (torch.round, np.round) and half away from zero
(QShape's default).

Needs torch, safetensors and the Debian package dataset-fashion-mnist. Not run by the tests: its
output is committed as pytorch-trained-{mlp,cnn}.{safetensors,json}, and the tests check that
QShape gives the same float accuracy and `qshape quantize --weights-only` the same accuracies for
the same weights. `--init` starts from another file's weights (a QShape run's initial.safetensors).

    python3 pytorch_reference.py --net mlp --seed 0 --out pytorch-trained-mlp
    python3 pytorch_reference.py --net cnn --seed 0 --bits 8 4 --out pytorch-trained-cnn

`--bench` instead measures training throughput as `qshape bench` does: Adam steps on one fixed
batch of 128 random images, best of four rounds, samples/s (Docs/Performance.md). With `--kure`
the loss adds KURE through autograd as `qshape bench`'s shaping part does: λ = 0.1 on every weight
tensor, (K − 1.8)² averaged over the layers, K = m4 / m2² with the biased variance.
"""
import argparse, gzip, json, time
import numpy as np
import torch
from torch import nn
from safetensors.torch import load_file, save_file

DATA = "/usr/share/datasets/fashion-mnist"


def idx(name):
    with gzip.open(f"{DATA}/{name}") as f:
        raw = f.read()
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def network(kind):
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                             nn.Linear(128, 10))
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(1568, 128), nn.ReLU(), nn.Linear(128, 10))


@torch.no_grad()
def accuracy(model, x, y):
    model.eval()
    correct = sum(int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum()) for i in range(0, len(x), 1000))
    return 100.0 * correct / len(x)


@torch.no_grad()
def weights_only(model, bits, rounding):
    q = network(args.net)
    q.load_state_dict(model.state_dict())
    for m in q.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            w = m.weight.data
            qf = torch.tensor(float(2 ** (bits - 1) - 1), dtype=torch.float32) / w.abs().max()
            u = w * qf
            r = torch.round(u) if rounding == "half_even" else torch.sign(u) * torch.floor(u.abs() + 0.5)
            m.weight.data = r / qf
    return q


parser = argparse.ArgumentParser()
parser.add_argument("--net", choices=["mlp", "cnn"], default="mlp")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--epochs", type=int)
parser.add_argument("--bits", type=int, nargs="*", default=[16, 8, 6, 5, 4, 3, 2])
parser.add_argument("--out", help="file stem for .safetensors and .json")
parser.add_argument("--init", help="start from these weights (e.g. the initial.safetensors of a QShape run)")
parser.add_argument("--bench", action="store_true", help="measure training samples/s and stop")
parser.add_argument("--kure", action="store_true", help="with --bench: add the KURE penalty to the loss")
args = parser.parse_args()
epochs = args.epochs or (10 if args.net == "mlp" else 5)

if args.bench:
    torch.manual_seed(args.seed)
    model, steps = network(args.net), (300 if args.net == "mlp" else 60)
    opt, loss_fn = torch.optim.Adam(model.parameters(), lr=1e-3), nn.CrossEntropyLoss()
    x, y = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]

    def kure():
        terms = []
        for w in weights:
            d = w - w.mean()
            m2 = (d * d).mean()
            terms.append(((d ** 4).mean() / (m2 * m2) - 1.8) ** 2)
        return 0.1 * torch.stack(terms).mean()

    best = 0.0
    for _ in range(4):
        start = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            (loss + kure() if args.kure else loss).backward()
            opt.step()
        best = max(best, steps * 128 / (time.perf_counter() - start))
    label = args.net + (" with KURE" if args.kure else "")
    print(f"{label}: {best:.0f} samples/s on {torch.get_num_threads()} threads (torch {torch.__version__})")
    raise SystemExit

torch.manual_seed(args.seed)
xtr = torch.from_numpy(idx("train-images-idx3-ubyte.gz").astype(np.float32) / 255).unsqueeze(1)
ytr = torch.from_numpy(idx("train-labels-idx1-ubyte.gz").astype(np.int64))
xte = torch.from_numpy(idx("t10k-images-idx3-ubyte.gz").astype(np.float32) / 255).unsqueeze(1)
yte = torch.from_numpy(idx("t10k-labels-idx1-ubyte.gz").astype(np.int64))

model = network(args.net)
if args.init:
    model.load_state_dict(load_file(args.init))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
start = time.time()
for epoch in range(epochs):
    model.train()
    order = torch.randperm(len(xtr))
    for i in range(0, len(xtr), 128):
        b = order[i:i + 128]
        opt.zero_grad()
        loss_fn(model(xtr[b]), ytr[b]).backward()
        opt.step()
    print(f"epoch {epoch + 1}: test accuracy {accuracy(model, xte, yte):.2f}%", flush=True)
result = {"net": args.net, "seed": args.seed, "epochs": epochs, "torch": torch.__version__,
          "train_seconds": round(time.time() - start, 1), "test_accuracy": accuracy(model, xte, yte),
          "weights_only": {r: {str(b): accuracy(weights_only(model, b, r), xte, yte) for b in args.bits}
                           for r in ["half_even", "half_away"]}}
print(json.dumps(result))
if args.out:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out + ".safetensors")
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
