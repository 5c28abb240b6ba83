"""Running probes on a model: model/device/kernel ownership (engine), the fast prefix-reusing runner, the plain HF
loop, scoring and resumable results. Only `engine` and the runners import torch, and only inside functions."""
