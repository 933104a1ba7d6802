"""Train LeNet-5 on the embedded mnist-5k digits with the tinydl library API.

    python examples/lenet5_mnist.py         # a few minutes on a 2-core CPU (interpreter), seconds on a GPU
"""

import tinydl as td
from tinydl import functional as F
from tinydl import models, optim
from tinydl.data import DataLoader, mnist_5k

td.manual_seed(0)
train_set, test_set = mnist_5k()
train_loader = DataLoader(train_set, batch_size=64, shuffle=True, seed=0)
test_loader = DataLoader(test_set, batch_size=250)

model = models.lenet5()  # conv+relu and linear+relu pairs are fused kernels
opt = optim.Adam(model.parameters(), lr=5e-3)
sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3)

for epoch in range(3):
    train_loader.set_epoch(epoch)
    for step, (x, y) in enumerate(train_loader):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0:
            print(f"epoch {epoch + 1} step {step:3d}: loss {loss.item():.4f}")
    sched.step()

    model.eval()
    correct = 0
    with td.no_grad():
        for x, y in test_loader:
            correct += int((model(x).data.argmax(1) == y.data).sum())
    model.train()
    print(f"epoch {epoch + 1}: test accuracy {correct / len(test_set):.2%}")

td.save(model.state_dict(), "lenet5_mnist.safetensors")
