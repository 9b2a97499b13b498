"""One DDP training step on 2 CPU processes (gloo), launched by ``torch.distributed.run`` from test_cli.py.

Each worker builds the model from the YAML given on the command line with nothing but Ultralytics imports (the
plugin must arrive through the autoload ``.pth``), runs the stock YOLO loss on its own random batch, and the ranks
compare their gradients after DDP's all-reduce: they must be identical, and non-zero.
"""

import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def main(cfg: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    assert "ibra_yolo.plugin" in sys.modules, "the plugin was not autoloaded in the DDP worker"
    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=3, verbose=False)
    model.args = get_cfg()  # loss gains (box, cls, dfl)
    ddp = DistributedDataParallel(model)

    g = torch.Generator().manual_seed(100 + rank)  # each rank sees different data
    batch = {
        "img": torch.rand(2, 3, 64, 64, generator=g),
        "batch_idx": torch.tensor([0.0, 1.0]),
        "cls": torch.tensor([[0.0], [2.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.3], [0.3, 0.6, 0.2, 0.2]]),
    }
    loss, _ = ddp(batch)
    loss.sum().backward()

    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    gathered = [torch.empty_like(grads) for _ in range(world)]
    dist.all_gather(gathered, grads)
    if rank == 0:
        diff = max((x - gathered[0]).abs().max().item() for x in gathered)
        assert diff == 0.0, f"gradients differ across ranks by {diff}"
        assert grads.abs().sum() > 0
        print(f"DDP OK: world={world} grads={grads.numel()} max_rank_diff={diff}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
