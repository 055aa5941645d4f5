"""LazyInputs answers like the input tensor it stands for, and augments by (seed, position)."""

import torch

from tlroutes.lazy_inputs import LazyInputs
from tlroutes.problem import Split


class _Rows:
    def __init__(self, x):
        self.x, self.reads = x, 0

    def __len__(self):
        return len(self.x)

    def read(self, i):
        self.reads += 1
        return self.x[i]


def test_indexing_matches_the_tensor_it_stands_for():
    x = torch.randn(10, 3)
    lazy = LazyInputs(_Rows(x), sample_shape=(3,))
    assert lazy.shape == x.shape and len(lazy) == 10 and lazy.is_floating_point()
    index = torch.tensor([7, 0, 3])
    assert torch.equal(lazy[index], x[index])
    assert torch.equal(lazy[2:5], x[2:5])
    assert torch.equal(lazy[-1], x[-1])
    view = lazy.subset(torch.tensor([9, 8, 1]))
    assert torch.equal(view[torch.tensor([2, 0])], x[torch.tensor([1, 9])])
    assert torch.equal(view.materialize(), x[torch.tensor([9, 8, 1])])


def test_split_subset_stays_lazy_and_reads_only_what_is_asked():
    rows = _Rows(torch.randn(100, 2))
    split = Split(LazyInputs(rows, sample_shape=(2,)), torch.arange(100) % 3)
    sub = split.subset(torch.arange(10))
    assert sub.is_lazy and len(sub) == 10 and rows.reads == 0
    sub.x[0:4]
    assert rows.reads == 4


def test_augmentation_is_a_function_of_seed_and_position():
    x = torch.zeros(6, 4)
    lazy = LazyInputs(_Rows(x), sample_shape=(4,), train_transform=lambda s: s + torch.rand(4))
    a = lazy.load([0, 1, 2], augment_seed=5)
    torch.rand(3)  # the global stream moves on; the batch must not depend on it
    b = lazy.load([0, 1, 2], augment_seed=5)
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])  # each position its own draw
    assert not torch.equal(a, lazy.load([0, 1, 2], augment_seed=6))
    assert torch.equal(lazy[0:3], x[0:3])  # evaluation reads without augmentation
