"""Parameter groups for the trainers: a subset of the weights with a learning rate of its own."""

from collections.abc import Callable, Iterable

import torch


def split_param_groups(
    optimizer: torch.optim.Optimizer, selected: Iterable[torch.nn.Parameter], learning_rate: Callable[[float], float]
) -> torch.optim.Optimizer:
    """Split every parameter group of a new `optimizer` (before any step: there is no state to move) into the other
    parameters and the `selected` ones, in that order, with the same settings, and give the selected part the
    learning rate `learning_rate(group's rate)`. The learning-rate schedule, built afterwards, scales every group
    alike. Used for the distillation head's own rate (`SilcTrainer`) and the towers' scaled rate (CAT-Seg's 0.01,
    `SilcSegmentationTrainer`)."""
    chosen = {id(parameter) for parameter in selected}
    groups = []
    for group in optimizer.param_groups:
        settings = {key: value for key, value in group.items() if key != "params"}
        for in_selection in (False, True):
            params = [p for p in group["params"] if (id(p) in chosen) == in_selection]
            if params:
                lr = learning_rate(settings["lr"]) if in_selection else settings["lr"]
                groups.append({**settings, "lr": lr, "params": params})
    optimizer.param_groups = []
    for group in groups:
        optimizer.add_param_group(group)
    return optimizer
