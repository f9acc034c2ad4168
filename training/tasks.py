"""The binary tasks the gateway ships, as named constants."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """A binary task: which labels are the positive class and which the negative."""

    name: str
    positive: frozenset[str]
    negative: frozenset[str]

    def target(self, label: str) -> int | None:
        """1 for positive, 0 for negative, ``None`` when the label is not part of the task."""
        if label in self.positive:
            return 1
        if label in self.negative:
            return 0
        return None


# Selectable backbones (built in :mod:`training.architectures`; named here so that the
# command line can list them without importing TensorFlow).
ARCHITECTURES = ("compact", "mobilenetv3small", "mobilenetv3large", "efficientnetb0",
                 "resnet50", "vgg16", "inceptionv3", "densenet121")

TB_VS_NORMAL = Task("tb-vs-normal", frozenset({"tb"}), frozenset({"normal"}))
PNEUMONIA_VS_TB = Task("pneumonia-vs-tb", frozenset({"pneumonia"}), frozenset({"tb"}))
TASKS = {t.name: t for t in (TB_VS_NORMAL, PNEUMONIA_VS_TB)}


def task_with_negatives(name: str, negatives: str | None) -> Task:
    """Look a task up by name; ``negatives`` ("normal,pneumonia") widens its negative class."""
    if name not in TASKS:
        raise ValueError(f"task: unknown task {name!r}; expected one of {sorted(TASKS)}")
    task = TASKS[name]
    if negatives:
        labels = frozenset(x.strip() for x in negatives.split(",") if x.strip())
        if labels & task.positive:
            raise ValueError(f"negatives: {sorted(labels & task.positive)} is the positive class")
        task = Task(task.name, task.positive, labels)
    return task
