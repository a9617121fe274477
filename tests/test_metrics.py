"""metrics.py: retrieval, classification, counting, few-shot and linear-probe metrics on hand-made
embeddings whose right answers can be worked out by hand, and the table that shows them."""
import pytest
import torch
import torch.nn.functional as F

import metrics


def unit(rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


# ----------------------------------------------------------------------------- retrieval

def test_retrieval_hand_checkable_case():
    # Four images along the axes; two captions each. Image 1's captions look like image 2
    # (pointing along e2), so image 1 finds no caption near it and image 2 has two impostors.
    images = torch.eye(4)
    texts = unit([[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0],
                  [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1]])
    owner = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    m = metrics.retrieval_metrics(images, texts, owner)
    # image->text: images 0 and 3 rank a caption of theirs first; image 2's first right caption comes
    # after two impostors (3rd place); image 1 scores 0 with all eight captions, and ties count against
    # it, so its right captions come after the six wrong ones (7th place).
    assert (m["i2t_r1"], m["i2t_r5"], m["i2t_r10"]) == (50, 75, 100)
    # text->image: captions 2 and 3 find images 0, 2 and 3 tied with or above image 1 (4th place);
    # the other six captions find their image first.
    assert (m["t2i_r1"], m["t2i_r5"], m["t2i_r10"]) == (75, 100, 100)
    assert m["mean_recall"] == pytest.approx(500 / 6)
    # chance: 2 right captions of 8 -> R@1 2/8, R@5 1 - C(6,5)/C(8,5) = 1 - 6/56; 1 right image of 4 -> 1/4.
    chance = (25 + 100 * (1 - 6 / 56) + 100 + 25 + 100 + 100) / 6
    assert m["chance_mean_recall"] == pytest.approx(chance)


def test_retrieval_perfect_model_scores_100():
    g = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(50, 32, generator=g), dim=-1)
    owner = torch.arange(50).repeat_interleave(3)  # three captions an image, each a noisy copy of it
    texts = F.normalize(images[owner] + 0.05 * torch.randn(150, 32, generator=g), dim=-1)
    m = metrics.retrieval_metrics(images, texts, owner)
    assert all(m[k] == 100 for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mean_recall"))


def test_retrieval_shuffled_model_is_near_chance():
    g = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(200, 32, generator=g), dim=-1)
    owner = torch.arange(200).repeat_interleave(5)
    texts = F.normalize(images[owner] + 0.05 * torch.randn(1000, 32, generator=g), dim=-1)
    shuffled = owner[torch.randperm(1000, generator=g)]  # captions handed to the wrong images
    m = metrics.retrieval_metrics(images, texts, shuffled)
    assert m["chance_mean_recall"] == pytest.approx((0.5 + 2.49 + 4.96 + 0.5 + 2.5 + 5) / 6, abs=0.02)
    # 200 and 1000 queries: the six recalls each have a standard error of at most 1.5 points.
    assert abs(m["mean_recall"] - m["chance_mean_recall"]) < 1.5


def test_identical_captions_are_right_for_every_image_they_describe():
    images = torch.eye(2)
    texts = unit([[1, 0], [0, 1]])
    both = torch.tensor([[True, True], [False, True]])  # caption 1 is word-for-word true of both images
    m = metrics.retrieval_metrics(images, texts, both)
    assert m["i2t_r1"] == 100 and m["t2i_r1"] == 100


# ----------------------------------------------------------------------------- classification and counting

def test_classification_metrics_known_case():
    predictions = torch.tensor([0, 0, 1, 2, 2, 2])
    labels = torch.tensor([0, 1, 1, 2, 2, 0])
    m = metrics.classification_metrics(predictions, labels, num_classes=4)
    assert m["top1"] == pytest.approx(400 / 6) and m["chance"] == 25
    assert m["majority"] == pytest.approx(100 / 3)  # always guessing class 0, 1 or 2: two of six right
    assert m["per_class"] == [50, 50, 100, None]  # class 3 has no test image
    assert m["confusion"] == [[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0]]  # rows: true class


def test_counting_metrics_known_case():
    m = metrics.counting_metrics(torch.tensor([1, 3, 5, 10]), torch.tensor([1, 2, 7, 10]))
    assert (m["accuracy"], m["within1"], m["mae"], m["chance"]) == (50, 75, 0.75, 10)  # errors 0, 1, 2, 0
    # A uniform guess from 1-10: within one of 1 and 10 two times in ten, of 2 and 7 three times.
    assert m["chance_within1"] == pytest.approx(100 * (2 + 3 + 3 + 2) / 40)
    # Its mean error: 4.5 from 1 or 10, (1 + 36) / 10 = 3.7 from 2, (21 + 6) / 10 = 2.7 from 7.
    assert m["chance_mae"] == pytest.approx((4.5 + 3.7 + 2.7 + 4.5) / 4)


def test_counting_baselines_known_case():
    true = torch.tensor([1, 1, 1, 2, 5])
    m = metrics.counting_metrics(torch.tensor([1, 1, 3, 2, 9]), true)  # errors 0, 0, 2, 0, 4
    assert (m["images"], m["accuracy"], m["within1"], m["mae"]) == (5, 60, 60, pytest.approx(1.2))
    # Always answering 1, the most common count: right 3 times in 5, within one 4 times, errors 0+0+0+1+4.
    assert m["constant_count"] == {"accuracy": 1, "within1": 1, "mae": 1}
    assert (m["constant"], m["constant_within1"], m["constant_mae"]) == (60, 80, pytest.approx(1.0))
    # A uniform guess from 1-10: right 1 time in 10; within one of 1 two times in 10, of 2 and 5 three times;
    # mean error 4.5 from 1, (1 + 0 + 1 + ... + 8) / 10 = 3.7 from 2, (4+3+2+1+0+1+2+3+4+5) / 10 = 2.5 from 5.
    assert m["chance"] == pytest.approx(10)
    assert m["chance_within1"] == pytest.approx(100 * (2 + 2 + 2 + 3 + 3) / 50)
    assert m["chance_mae"] == pytest.approx((3 * 4.5 + 3.7 + 2.5) / 5)


def test_best_constant_count_differs_by_metric():
    # Counts 1, 1, 4, 5, 6: the most common is 1 (40% right), but always 5 is within one of 4, 5 and 6
    # (60%), and always 4, the median, errs by 3+3+0+1+2 = 9 in all: MAE 1.8, against 2.4 for always 1.
    m = metrics.counting_metrics(torch.tensor([1, 1, 1, 1, 1]), torch.tensor([1, 1, 4, 5, 6]))
    assert m["constant_count"] == {"accuracy": 1, "within1": 5, "mae": 4}
    assert (m["constant"], m["constant_within1"], m["constant_mae"]) == (40, 60, pytest.approx(1.8))
    assert m["mae"] == pytest.approx(2.4)  # a model always answering 1 does worse than the constant bar


def blobs(n_per_class, num_classes=3, dim=8, seed=0):
    """Well-separated Gaussian blobs, one per class, L2-normalised like CLIP features."""
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.eye(num_classes, dim)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    return F.normalize(centres[labels] + 0.3 * torch.randn(len(labels), dim, generator=g), dim=-1), labels


def test_a_perfect_model_scores_100():
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    assert metrics.classification_metrics(labels, labels, 3)["per_class"] == [100, 100, 100]
    counts = torch.arange(1, 11)
    m = metrics.counting_metrics(counts, counts)
    assert (m["accuracy"], m["within1"], m["mae"]) == (100, 100, 0)


def test_logistic_regression_separates_a_separable_set():
    x, y = blobs(20)
    weight, bias = metrics.fit_logistic_regression(x, y, num_classes=3, weight_decay=1e-4)
    assert ((x @ weight.t() + bias).argmax(1) == y).all()
    x_test, y_test = blobs(20, seed=1)
    assert metrics.logistic_accuracy(x, y, x_test, y_test, weight_decay=1e-4) == 100


def test_probes_read_nearly_parallel_features_as_well_as_spread_ones():
    """An untrained tower's features all point nearly one way. The probes centre and scale features
    first, so a weight decay treats them as the same set spread out: a scale and a shift change nothing."""
    x, y = blobs(20)
    x_test, y_test = blobs(20, seed=1)
    squeezed = lambda f: 1 + 0.01 * f  # noqa: E731  every two of them at cosine above 0.9999
    for wd in (metrics.FEW_SHOT_WEIGHT_DECAY, *metrics.WEIGHT_DECAYS):
        assert metrics.logistic_accuracy(squeezed(x), y, squeezed(x_test), y_test, wd) == 100


def test_logistic_regression_is_deterministic():
    x, y = blobs(10)
    assert torch.equal(metrics.fit_logistic_regression(x, y, 3, 1e-3)[0],
                       metrics.fit_logistic_regression(x, y, 3, 1e-3)[0])


def test_few_shot_on_separable_features_and_skips_k_larger_than_a_class():
    x, y = blobs(10)
    x_test, y_test = blobs(10, seed=1)
    out = metrics.few_shot(x, y, x_test, y_test, ks=(1, 4, 16))
    assert out["1"]["mean"] == 100 and out["4"] == {"mean": 100, "std": 0}
    assert out["16"] is None  # each class has 10 training images


def test_few_shot_on_random_features_is_near_chance():
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(200, 16, generator=g), dim=-1)
    x_test = F.normalize(torch.randn(400, 16, generator=g), dim=-1)
    y, y_test = torch.arange(4).repeat(50), torch.arange(4).repeat(100)
    out = metrics.few_shot(x, y, x_test, y_test, ks=(4,))
    assert abs(out["4"]["mean"] - 25) < 6  # 5 draws of 400 test images: standard error about 1 point


def test_held_out_takes_every_fifth_image_of_each_class():
    labels = torch.tensor([0] * 6 + [1] * 5)
    assert metrics.held_out(labels).nonzero()[:, 0].tolist() == [4, 10]


def test_linear_probe_picks_a_weight_decay_on_validation():
    x, y = blobs(20)
    x_test, y_test = blobs(20, seed=1)
    out = metrics.linear_probe(x, y, x_test, y_test)
    assert out["top1"] == 100 and out["weight_decay"] in metrics.WEIGHT_DECAYS
    assert set(out["validation"]) == {str(wd) for wd in metrics.WEIGHT_DECAYS}


# ----------------------------------------------------------------------------- the table eval.py prints

def test_counting_per_true_count_and_tables():
    m = metrics.counting_metrics(torch.tensor([1, 1, 3, 2, 9]), torch.tensor([1, 1, 1, 2, 5]))
    assert set(m["per_count"]) == {"1", "2", "5"}  # only the counts that occur
    one, five = m["per_count"]["1"], m["per_count"]["5"]
    # True count 1: three images, predicted 1, 1 and 3; a uniform guess is within one 2 times in 10, off by 4.5.
    assert one["images"] == 3 and one["accuracy"] == one["within1"] == pytest.approx(200 / 3)
    assert one["mae"] == pytest.approx(2 / 3) and one["constant_mae"] == 0  # always 1 is right for all three
    assert (one["chance_within1"], one["chance_mae"]) == (pytest.approx(20), pytest.approx(4.5))
    # True count 5: one image, predicted 9; a uniform guess is within one 3 times in 10, off by 2.5; always 1 by 4.
    assert (five["images"], five["accuracy"], five["mae"], five["constant_mae"]) == (1, 0, 4, 4)
    assert (five["chance_within1"], five["chance_mae"]) == (pytest.approx(30), pytest.approx(2.5))
    assert m["confusion"][0][:3] == [2, 0, 1] and m["confusion"][4][8] == 1  # true 1: twice 1, once 3; 5 -> 9
    results = {"checkpoint": {"counting": m}}
    rows = {line.split()[0]: line.split()[1:] for line in metrics.format_counting(results).splitlines()[3:]}
    # true count: images, accuracy, within one, MAE | MAE of always 1, MAE of a uniform guess
    assert rows["1"] == ["3", "66.7", "66.7", "0.67", "|", "0.00", "4.50"]
    assert rows["5"] == ["1", "0.0", "0.0", "4.00", "|", "4.00", "2.50"]
    assert rows["all"] == ["5", "60.0", "60.0", "1.20", "|", "1.00", "3.94"]
    table = metrics.format_table(results).splitlines()
    assert table[0].split()[-2:] == ["chance", "constant"]
    assert table[2].split()[-3:] == ["60.0", "10.0", "60.0"]  # accuracy: model, chance, always 1
    assert table[4].split()[-3:] == ["1.20", "3.94", "1.00"]  # MAE
