"""faiss and torch each bring an OpenMP runtime; mixing them hangs or crashes some peer toolkits.

Each case runs in a fresh interpreter (import order matters) with a timeout, so a hang fails the test
instead of freezing the suite.
"""
import subprocess
import sys

import pytest

SCRIPT = """
import numpy as np
{imports}
import torchvision
torch.manual_seed(0)
torch.set_num_threads(2)
faiss.omp_set_num_threads(2)
model = torchvision.models.resnet18(weights=None, num_classes=8)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(8, 3, 32, 32), torch.arange(8)
for _ in range(2):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
with torch.no_grad():
    feats = model(torch.randn(64, 3, 32, 32)).numpy().astype("float32")
index = faiss.IndexFlatL2(feats.shape[1])
index.add(feats)
scores, ids = index.search(feats, 5)
assert (ids[:, 0] == np.arange(64)).all(), ids[:, 0]
from reid_robust.evaluation import evaluate_reid
pids = np.repeat(np.arange(1, 17), 4)
m = evaluate_reid(feats, feats, pids, pids, np.zeros(64, int), np.ones(64, int))
assert 0.0 <= m["mAP"] <= 1.0
print("ok", float(loss))
"""


@pytest.mark.parametrize("imports", ["import faiss\nimport torch", "import torch\nimport faiss"],
                         ids=["faiss-first", "torch-first"])
def test_training_step_then_faiss_search_in_one_process(imports):
    res = subprocess.run([sys.executable, "-c", SCRIPT.format(imports=imports)], capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("ok")
