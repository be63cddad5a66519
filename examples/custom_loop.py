# This file is shown verbatim in the README; its aligned comments are kept as written.
# fmt: off
"""Add the E-SSL objective to your own SimCLR training loop (plain PyTorch; runs on MNIST-5k in a minute).

    python examples/custom_loop.py --steps 20
"""

import argparse

import torch

from essl.augmentation import Normalize, build_view, get_recipe
from essl.data import load_mnist5k
from essl.groups import make_group
from essl.models import SmallCNN, prediction_head, projector
from essl.objectives import info_nce, prediction_loss

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--batch", type=int, default=128)
args = parser.parse_args()
steps, batch = args.steps, args.batch


data = load_mnist5k("train")                              # uint8 (4000, 1, 28, 28)
backbone = SmallCNN(in_channels=1)                         # your encoder f
proj = projector("small", backbone.feature_dim)            # your SSL projector g
rotation = make_group("rotation")                          # the group G to predict (4 elements)
head = prediction_head("small", backbone.feature_dim, rotation.order)   # the E-SSL head h
view = build_view(get_recipe("mnist"), channels=1)         # per-sample random views, batched
small_view = build_view(get_recipe("mnist_small"), channels=1)
normalize = Normalize(data.mean, data.std)
params = [*backbone.parameters(), *proj.parameters(), *head.parameters()]
optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)

for step in range(steps):
    x = data.images[torch.randint(len(data), (batch,))]
    x1, x2 = normalize(view(x)), normalize(view(x))
    ssl_loss = info_nce(proj(backbone(x1)), proj(backbone(x2)), temperature=0.5)   # your invariant SSL loss
    xg, g = rotation.orbit(small_view(x))                  # every image in all 4 rotations, labels g = 0..3
    pred_loss, pred_acc = prediction_loss(head(backbone(normalize(xg))), g)        # CE(h(f(g·x)), g)
    loss = ssl_loss + 0.4 * pred_loss                      # L = L_ssl + λ·L_pred
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % 5 == 0 or step == steps - 1:
        print(f"step {step:3d}  ssl {ssl_loss.item():.3f}  rotation CE {pred_loss.item():.3f}  "
              f"rotation acc {pred_acc.item():.2f}")
