"""ArrayDataset and DataLoader against PyTorch's TensorDataset and DataLoader on the same arrays (issue 27, item 1):
any dtype and shape, a tuple per batch, batch sizes and drop_last, shuffling, collate, default collate of a dataset
of one's own, and what is refused (ragged arrays, torch tensors) in one line."""
import numpy as np
import pytest

from minidae import backend
from minidae.data import ArrayDataset, DataLoader
from minidae.data.loader import default_collate

torch = pytest.importorskip("torch", reason="PyTorch's TensorDataset/DataLoader are the reference: pip install -e .[test]")
from torch.utils.data import DataLoader as TorchLoader, TensorDataset  # noqa: E402


def arrays(n=11):
    """Arrays of every kind one's own data has: normalised float features (outside [0, 1]), integer targets,
    colour images as uint8, a boolean mask, float64 tabular rows."""
    rng = np.random.default_rng(0)
    features = ((rng.normal(size=(n, 5)) - 3) / 0.5).astype(np.float32)  # mean/std-normalised: far outside [0, 1]
    return (features, rng.integers(0, 7, size=n), rng.integers(0, 256, size=(n, 3, 4, 4), dtype=np.uint8),
            rng.random(n) > 0.5, rng.normal(size=(n, 2, 3)))


def as_numpy(batch):
    return [b.numpy() if isinstance(b, torch.Tensor) else backend.to_numpy(b) for b in batch]


def assert_same_batches(ours, theirs):
    assert len(ours) == len(theirs)
    for mine, torchs in zip(ours, theirs):
        assert isinstance(mine, tuple) and len(mine) == len(torchs)
        for a, b in zip(as_numpy(mine), as_numpy(torchs)):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)


def test_items_are_tensordatasets():
    data = arrays()
    ours, theirs = ArrayDataset(*data), TensorDataset(*(torch.from_numpy(a) for a in data))
    assert len(ours) == len(theirs) == 11
    for index in (0, 4, -1, slice(2, 6), [1, 3, 3]):
        if isinstance(index, list):
            index_t = torch.tensor(index)
        else:
            index_t = index
        mine, torchs = ours[index], theirs[index_t]
        assert isinstance(mine, tuple) and len(mine) == len(torchs) == 5
        for a, b in zip(mine, torchs):
            assert a.dtype == b.numpy().dtype and a.shape == tuple(b.shape)
            np.testing.assert_array_equal(a, b.numpy())


@pytest.mark.parametrize("batch_size", [1, 3, 4, 11, 12])
@pytest.mark.parametrize("drop_last", [False, True])
def test_unshuffled_batches_are_pytorchs(xp, batch_size, drop_last):
    data = arrays()
    ours = DataLoader(ArrayDataset(*data), batch_size=batch_size, drop_last=drop_last)
    theirs = TorchLoader(TensorDataset(*(torch.from_numpy(a) for a in data)), batch_size=batch_size,
                         drop_last=drop_last)
    assert len(ours) == len(theirs)
    assert_same_batches(list(ours), list(theirs))
    for batch in ours:
        assert all(isinstance(a, xp.ndarray) for a in batch), "the batches are on the active backend"


def test_shuffled_epochs_cover_every_example_once_as_pytorchs_and_replay_by_seed():
    """The order comes from minidae's generator, not torch's (the two draw different permutations from their
    seeds), so the order itself is not compared: each epoch is a permutation with torch's batch sizes, a new
    one each epoch, and the same seed gives the same one."""
    data = (np.arange(11), np.arange(11) * 10)
    ours = DataLoader(ArrayDataset(*data), batch_size=4, shuffle=True, seed=3)
    theirs = TorchLoader(TensorDataset(*(torch.from_numpy(a) for a in data)), batch_size=4, shuffle=True,
                         generator=torch.Generator().manual_seed(3))
    orders = []
    for _ in range(3):
        mine, torchs = list(ours), list(theirs)
        assert [len(b[0]) for b in mine] == [len(b[0]) for b in torchs] == [4, 4, 3]
        order = np.concatenate([backend.to_numpy(x) for x, _ in mine])
        assert sorted(order) == sorted(np.concatenate([x.numpy() for x, _ in torchs])) == list(range(11))
        assert all(np.array_equal(backend.to_numpy(y), backend.to_numpy(x) * 10) for x, y in mine)
        orders.append(order.tolist())
    assert len({tuple(o) for o in orders}) == 3, "each epoch is shuffled anew"
    again = DataLoader(ArrayDataset(*data), batch_size=4, shuffle=True, seed=3)
    assert [np.concatenate([backend.to_numpy(x) for x, _ in again.epoch(e)]).tolist() for e in range(3)] == orders


def test_collate_gets_the_list_of_items_as_pytorchs_collate_fn():
    data = arrays(7)
    seen = {"ours": [], "theirs": []}

    def collate(who):
        def put_together(items):  # one's own structure: a dict of the features and the mean target
            seen[who].append(items)
            return {"x": np.stack([np.asarray(item[0]) for item in items]),
                    "mean_target": float(np.mean([int(item[1]) for item in items]))}
        return put_together
    ours = list(DataLoader(ArrayDataset(*data), batch_size=3, collate=collate("ours")))
    theirs = list(TorchLoader(TensorDataset(*(torch.from_numpy(a) for a in data)), batch_size=3,
                              collate_fn=collate("theirs")))
    assert [len(items) for items in seen["ours"]] == [len(items) for items in seen["theirs"]] == [3, 3, 1]
    for mine, torchs in zip(sum(seen["ours"], []), sum(seen["theirs"], [])):
        assert isinstance(mine, tuple) and len(mine) == len(torchs) == 5
        for a, b in zip(mine, torchs):
            np.testing.assert_array_equal(np.asarray(a), b.numpy())
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a["x"], b["x"])
        assert a["mean_target"] == b["mean_target"]
    assert len(list(DataLoader(ArrayDataset(*data), batch_size=3, collate_fn=collate("ours")))) == 3, \
        "PyTorch's name for it is taken too"


class Records:
    """A dataset of one's own (map-style, as PyTorch's): each item a dict of an array, an int, a float, a
    string and a tuple."""

    def __init__(self, n=5):
        self.rng = np.random.default_rng(1)
        self.x = self.rng.normal(size=(n, 3)).astype(np.float32)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "label": i % 2, "weight": 0.5 * i, "name": f"item{i}", "pair": (self.x[i, :2], i)}


def test_default_collate_of_a_dataset_of_ones_own_is_pytorchs():
    from torch.utils.data import default_collate as torch_collate
    dataset = Records()
    ours = list(DataLoader(dataset, batch_size=2))
    theirs = [torch_collate([{k: torch.from_numpy(v) if isinstance(v, np.ndarray) else
                              (torch.from_numpy(v[0]), v[1]) if k == "pair" else v for k, v in dataset[i].items()}
                             for i in range(s, min(s + 2, len(dataset)))]) for s in range(0, len(dataset), 2)]
    assert len(ours) == len(theirs) == 3
    for mine, torchs in zip(ours, theirs):
        assert set(mine) == set(torchs)
        for key in ("x", "label", "weight"):
            a, b = backend.to_numpy(mine[key]), torchs[key].numpy()
            assert a.dtype == b.dtype and a.shape == b.shape, key  # ints as int64, floats as float64
            np.testing.assert_array_equal(a, b)
        assert mine["name"] == torchs["name"]
        for a, b in zip(mine["pair"], torchs["pair"]):  # torch gives a list for a tuple; minidae keeps the tuple
            np.testing.assert_array_equal(backend.to_numpy(a), b.numpy())
        assert isinstance(mine["pair"], tuple)
    assert default_collate([None, None]) == [None, None]


def test_what_cannot_be_batched_is_refused_in_one_line():
    cases = [
        (lambda: ArrayDataset(np.zeros(3), np.zeros(4)), ValueError, r"first axes differ \(3, 4\)"),
        (lambda: ArrayDataset([[1, 2], [3]]), ValueError, r"array 0 is ragged"),
        (lambda: ArrayDataset(np.array([np.zeros(2), np.zeros(3)], dtype=object)), ValueError, r"Python objects"),
        (lambda: ArrayDataset(np.zeros(2), torch.zeros(2)), ValueError, r"array 1 is a torch.Tensor.*tensor.numpy\(\)"),
        (lambda: ArrayDataset(np.float32(1)), ValueError, r"a scalar"),
        (lambda: ArrayDataset(), ValueError, r"at least one array"),
        (lambda: DataLoader(torch.zeros(3, 2)), ValueError, r"torch.Tensor.*numpy\(\)"),
        (lambda: DataLoader(ArrayDataset(np.zeros(3)), batch_size=0), ValueError, r"batch_size must be a positive"),
        (lambda: DataLoader(3), TypeError, r"needs __len__ and __getitem__"),
        (lambda: list(DataLoader([np.zeros(2), np.zeros(3)], batch_size=2)), ValueError,
         r"different shapes .*collate="),
        (lambda: list(DataLoader([object(), object()], batch_size=2)), TypeError, r"cannot batch object items"),
        (lambda: list(DataLoader([torch.zeros(2)], batch_size=1)), TypeError, r"tensor.numpy\(\)"),
    ]
    for make, kind, message in cases:
        with pytest.raises(kind, match=message) as caught:
            make()
        assert "\n" not in str(caught.value), str(caught.value)
    with pytest.raises(AssertionError, match="Size mismatch"):  # PyTorch refuses the first case too
        TensorDataset(torch.zeros(3), torch.zeros(4))


def test_values_pass_through_unscaled(xp):
    """Normalisation is the user's business: standardised features, 0..255 integers and float64 rows come out as
    they went in (no [0, 1] rule outside the image tools)."""
    data = arrays()
    for batch in DataLoader(ArrayDataset(*data), batch_size=11):
        for a, b in zip(as_numpy(batch), data):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    assert float(data[0].min()) < -5 and int(data[2].max()) > 200
