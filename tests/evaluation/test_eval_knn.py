"""kNN: the shared monitor/offline code against a brute-force computation written here."""

import math

import torch

from essl.training.knn import knn_accuracy, knn_predict


def brute_force_knn(bank, bank_labels, queries, num_classes, k, t):
    """For each query: cosine similarity to every bank vector, the k most similar vote with weight exp(sim/t)."""
    scores = torch.zeros(len(queries), num_classes, dtype=torch.float64)
    for i, q in enumerate(queries.double()):
        sims = []
        for j, b in enumerate(bank.double()):
            sims.append((float(q @ b) / (q.norm().item() * b.norm().item()), j))
        sims.sort(key=lambda s: -s[0])
        for sim, j in sims[: min(k, len(sims))]:
            scores[i, bank_labels[j]] += math.exp(sim / t)
    return scores


def test_knn_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(60, 8, generator=g), torch.randn(25, 8, generator=g)
    labels = torch.randint(0, 4, (60,), generator=g)
    for k, t in ((1, 0.1), (7, 0.1), (20, 0.5), (200, 0.1)):  # k > bank size uses the whole bank
        got = knn_predict(bank, labels, queries, 4, k, t, chunk=6).double()
        want = brute_force_knn(bank, labels, queries, 4, k, t)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        test_labels = torch.randint(0, 4, (25,), generator=g)
        acc = knn_accuracy(bank, labels, queries, test_labels, 4, k, t)
        assert abs(acc - 100.0 * (want.argmax(1) == test_labels).double().mean().item()) < 1e-4


def test_knn_separates_clusters_and_is_scale_invariant():
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(3, 16, generator=g) * 5
    labels = torch.arange(3).repeat_interleave(30)
    bank = centres[labels] + 0.1 * torch.randn(90, 16, generator=g)
    queries = centres[labels[:30:3]] + 0.1 * torch.randn(10, 16, generator=g)
    pred = knn_predict(bank, labels, queries, 3, k=10).argmax(1)
    assert torch.equal(pred, labels[:30:3])
    # cosine similarity: rescaling the features changes nothing
    torch.testing.assert_close(
        knn_predict(bank * 7, labels, queries * 0.3, 3, k=10), knn_predict(bank, labels, queries, 3, k=10)
    )
