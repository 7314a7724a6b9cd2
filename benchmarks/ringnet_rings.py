"""RingNet smoke training: held-out AND training rings (issue 13), to tell an underfit from a
failure to generalise, with the predicted shape codes against the synthetic truth.

Trains the tiny configuration (``RingNetConfig.tiny()`` with 512 training rings, 16 held-out,
lr 1e-3, then ``--set KEY=VALUE``) with Adam on rings rendered once, batch ``--bs`` rings, and
every ``--every`` steps prints, in eval mode, for the first 16 training rings and the held-out
rings: ``ring``, ``landmarks``, :func:`facegeom.pipelines.ringnet.ring_separation`'s
``same_sq`` / ``other_sq`` / ``separated``, ``norm`` (mean squared norm of the predicted shape
codes), ``err`` (mean squared distance to the true codes) and ``true_other`` (``other_sq`` of
the true codes). Figures in docs/benchmarks.md.

    OMP_NUM_THREADS=1 python benchmarks/ringnet_rings.py --steps 1000 --set shape_components=3 \
        --set shape_std=8.0 --set dropout=0.0
"""
import argparse, dataclasses, time, json, sys
import torch
torch.set_num_threads(1)
from facegeom.pipelines import ringnet as RN
p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=1000)
p.add_argument("--bs", type=int, default=4)
p.add_argument("--every", type=int, default=250)
p.add_argument("--set", action="append", default=[])
a = p.parse_args()
over = {}
for item in a.set:
    k, _, v = item.partition("=")
    if v == "None" or v.lower() in ("true", "false"):
        over[k] = None if v == "None" else v.lower() == "true"
    elif v.lstrip("-").isdigit():
        over[k] = int(v)
    else:
        try:
            over[k] = float(v)
        except ValueError:
            over[k] = v
cfg = dataclasses.replace(RN.RingNetConfig.tiny(), **{"num_rings": 512, "val_rings": 16, "lr": 1e-3, **over})
print(cfg, flush=True)
m = RN.RingNetMethod()
t0 = time.perf_counter()
tr = m.dataset(cfg, "synthetic", "train", 0); va = m.dataset(cfg, "synthetic", "val", 0)
def truth(ds, i):
    k = cfg.ring_size - 1
    idx = [i * k + j for j in range(k)] + [((i + 1) % (ds.num + 1)) * k]
    return torch.stack([ds.faces.sample_params(j)["shape"].float() for j in idx])
trc = [tr[i] for i in range(len(tr))]; vac = [va[i] for i in range(len(va))]
trT = torch.stack([truth(tr, i) for i in range(16)]); vaT = torch.stack([truth(va, i) for i in range(len(va))])
print("render", round(time.perf_counter() - t0, 1), "s", flush=True)
col = torch.utils.data.default_collate
torch.manual_seed(0)
model = m.build_model(cfg); opt = m.optimizers(model, cfg)["adam"]
def ev(items, T):
    model.eval()
    with torch.no_grad():
        b = col(items); terms = m.validation_step(model, b)
        n_b, R = b["image"].shape[:2]
        shape = model(b["image"].flatten(0, 1))["shape"].view(n_b, R, -1)
    model.train()
    true = RN.ring_separation(T)
    return {k: round(float(v), 4) for k, v in terms.items() if k in ("landmarks", "ring", "same_sq", "other_sq", "separated")} | {
        "norm": round(float((shape ** 2).sum(-1).mean()), 3), "err": round(float(((shape - T) ** 2).sum(-1).mean()), 3),
        "true_other": round(float(true["other_sq"]), 2)}
g = torch.Generator().manual_seed(0)
step = 0
def report():
    print(step, "train", ev(trc[:16], trT), flush=True)
    print(step, "val  ", ev(vac, vaT), "%.0fs" % (time.perf_counter() - t0), flush=True)
report()
while step < a.steps:
    for idx in torch.randperm(len(trc), generator=g).split(a.bs):
        if len(idx) < a.bs: continue
        b = col([trc[i] for i in idx])
        terms = m.training_step(model, b, None)
        opt.zero_grad(); terms["total"].backward(); opt.step()
        step += 1
        if step % a.every == 0: report()
        if step >= a.steps: break
