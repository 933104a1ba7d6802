"""Train a 3-layer MLP on the embedded mnist-5k digits with the tinydl library API.

    python examples/mlp_mnist.py            # ~1 minute on a 2-core CPU (interpreter), seconds on a GPU
"""

import tinydl as td
from tinydl import functional as F
from tinydl import nn, optim
from tinydl.data import DataLoader, mnist_5k

td.manual_seed(0)
train_set, test_set = mnist_5k()
train_loader = DataLoader(train_set, batch_size=128, shuffle=True, seed=0)
test_loader = DataLoader(test_set, batch_size=500)

# Linear + ReLU pairs run as one fused kernel each (nn.Sequential fuses them)
model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
opt = optim.Adam(model.parameters(), lr=1e-3)

for epoch in range(3):
    train_loader.set_epoch(epoch)
    for x, y in train_loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    correct = 0
    with td.no_grad():
        for x, y in test_loader:
            correct += int((model(x).data.argmax(1) == y.data).sum())
    print(f"epoch {epoch + 1}: last batch loss {loss.item():.4f}, test accuracy {correct / len(test_set):.2%}")

td.save(model.state_dict(), "mlp_mnist.safetensors")
