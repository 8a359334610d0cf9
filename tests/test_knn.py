import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from hf_ssl.evaluation.knn import knn_accuracy, knn_predict


def test_knn_vote_hand_computed():
    # Train points on the unit circle; the test point at angle 0 has neighbours at 0 (class 0), 0.5 rad (class 1),
    # 1.0 rad (class 1). With k=3, T=0.5: class 0 gets exp(1/0.5); class 1 gets exp(cos 0.5/0.5) + exp(cos 1/0.5).
    angles = torch.tensor([0.0, 0.5, 1.0, 3.0])
    train = torch.stack([angles.cos(), angles.sin()], dim=1) * torch.tensor([[2.0], [1.0], [3.0], [1.0]])
    labels = torch.tensor([0, 1, 1, 0])
    scores = knn_predict(train, labels, torch.tensor([[5.0, 0.0]]), num_classes=2, k=3, temperature=0.5)
    expected = [math.exp(1 / 0.5), math.exp(math.cos(0.5) / 0.5) + math.exp(math.cos(1.0) / 0.5)]
    assert scores[0].tolist() == pytest.approx(expected, rel=1e-6)
    # class 1 wins the weighted vote (2 * ~5.8 + ... > 7.39)
    assert knn_accuracy(train, labels, torch.tensor([[5.0, 0.0]]), torch.tensor([1]), k=3, temperature=0.5)["top1"] == 100.0


def test_knn_matches_sklearn_weighted_cosine_knn():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=generator)
    train_labels = torch.randint(0, 4, (300,), generator=generator)
    test_labels = torch.randint(0, 4, (100,), generator=generator)
    train = centres[train_labels] + 1.5 * torch.randn(300, 16, generator=generator)
    test = centres[test_labels] + 1.5 * torch.randn(100, 16, generator=generator)
    temperature = 0.07

    ours = knn_accuracy(train, train_labels, test, test_labels, k=20, temperature=temperature)["top1"]
    reference = KNeighborsClassifier(
        n_neighbors=20, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1 - d) / temperature)
    ).fit(train.numpy(), train_labels.numpy())
    expected = 100.0 * (reference.predict(test.numpy()) == test_labels.numpy()).mean()
    assert ours == pytest.approx(expected, abs=1e-6)
    assert 40.0 < ours  # separable enough that the test is not vacuous


def test_knn_top5_and_bad_arguments():
    train = torch.eye(6)
    labels = torch.arange(6)
    result = knn_accuracy(train, labels, train, labels, k=1)
    assert result == {"top1": 100.0, "top5": 100.0}
    with pytest.raises(ValueError, match="k must be"):
        knn_predict(train, labels, train, 6, k=0)
    with pytest.raises(ValueError, match="temperature"):
        knn_predict(train, labels, train, 6, temperature=0.0)
    with pytest.raises(ValueError, match="training labels"):
        knn_predict(train, labels[:3], train, 6)


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").exists(),
    reason="needs Debian's dataset-fashion-mnist",
)
def test_raw_pixel_knn_equals_sklearn_neighbours_with_weighted_votes():
    """Per-pixel standardisation with the training statistics, then scikit-learn's cosine nearest neighbours and
    exp(sim / T)-weighted votes computed in numpy give the same top-1."""
    import numpy as np
    from sklearn.neighbors import NearestNeighbors

    from hf_ssl.data.datasets import fashion_mnist_arrays
    from hf_ssl.evaluation.knn import raw_pixel_knn

    (train_x, train_y), (test_x, test_y) = fashion_mnist_arrays("train"), fashion_mnist_arrays("test")
    train_x, train_y = train_x[:2000].reshape(2000, -1).astype(np.float64), train_y[:2000]
    test_x, test_y = test_x[:300].reshape(300, -1).astype(np.float64), test_y[:300]
    mean, std = train_x.mean(0), np.maximum(train_x.std(0, ddof=1), 1e-6)
    distances, indices = NearestNeighbors(n_neighbors=20, metric="cosine").fit((train_x - mean) / std).kneighbors(
        (test_x - mean) / std
    )
    votes = np.zeros((300, 10))
    np.add.at(votes, (np.arange(300)[:, None], train_y[indices]), np.exp((1 - distances) / 0.07))
    expected = 100 * (votes.argmax(1) == test_y).mean()
    assert raw_pixel_knn(2000, 300)["top1"] == pytest.approx(expected, abs=1e-4)
