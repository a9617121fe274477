"""The metric cores of eval.py's five tasks: pure tensor functions, tested on hand-made embeddings.

Retrieval recall at k with several right captions per image and its exact chance level; top-1, per-class
and confusion for classification; counting's accuracy, within-one accuracy and mean absolute error with
a uniform guess and the best constant count beside them; logistic regression on frozen features for
the few-shot and linear-probe tasks; then the table and the plots eval.py shows them in. Every number
is a percentage, except counting's mean absolute error, which is in objects. eval.py computes the
features and calls these.
"""
import math
import sys

import torch
import torch.nn.functional as F

import chips

COUNTS = range(1, 11)                 # SARCount: 1 to 10 targets of one class per image
COUNT_METRICS = ("accuracy", "within1", "mae")  # exact count, within one object (percent); mean error (objects)
FEW_SHOT_KS = (1, 2, 4, 8, 16)        # labelled images per class
FEW_SHOT_SEEDS = range(5)             # which k images are drawn; mean and std over these draws
FEW_SHOT_WEIGHT_DECAY = 1e-3          # fixed: with 1 image per class there is nothing to validate on
WEIGHT_DECAYS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)  # the linear probe picks one on validation


def positives_matrix(caption_image, num_images):
    """[N, M] bool: caption j is a right answer for image i. From a [M] owner index, or given as a matrix."""
    if caption_image.dtype == torch.bool:
        return caption_image
    return caption_image[None, :] == torch.arange(num_images)[:, None]


def recall_at_k(similarity, positives, ks):
    """Percent of queries (rows) with a right answer among their top k, for each k.

    A query's rank is the number of wrong answers scoring at least as high as its best right answer:
    ties count against the model, so a model that gives every pair the same score cannot score.
    """
    best = similarity.masked_fill(~positives, -math.inf).max(dim=1).values  # [queries]
    rank = ((similarity >= best[:, None]) & ~positives).sum(dim=1)
    return {k: 100 * (rank < k).sum().item() / len(rank) for k in ks}


def chance_recall(positives, ks):
    """Expected recall@k of a random ranking: 1 - C(M - c, k) / C(M, k) for a query with c right of M."""
    M = positives.shape[1]
    out = {}
    for k in ks:
        miss = torch.ones(len(positives), dtype=torch.float64)
        for t in range(min(k, M)):  # C(M-c, k) / C(M, k) = prod_t (M - c - t) / (M - t)
            miss *= ((M - positives.sum(1) - t).clamp(min=0) / (M - t)).double()
        out[k] = 100 * (1 - miss).mean().item()
    return out


def retrieval_metrics(image_features, text_features, caption_image, ks=(1, 5, 10)):
    """Recall@k both ways and mean recall, in percent, with the chance levels of a random ranking.

    image_features [N, D] and text_features [M, D] are L2-normalised; caption_image [M] is the image
    each caption belongs to (images have several captions), or an [N, M] bool matrix of right answers.
    """
    positives = positives_matrix(caption_image, len(image_features))
    similarity = image_features @ text_features.t()  # [N images, M captions]
    i2t, t2i = recall_at_k(similarity, positives, ks), recall_at_k(similarity.t(), positives.t(), ks)
    chance_i2t, chance_t2i = chance_recall(positives, ks), chance_recall(positives.t(), ks)
    out = {f"i2t_r{k}": i2t[k] for k in ks} | {f"t2i_r{k}": t2i[k] for k in ks}
    out["mean_recall"] = sum(out.values()) / len(out)  # mean recall: the average of the six numbers
    out["chance_mean_recall"] = (sum(chance_i2t.values()) + sum(chance_t2i.values())) / (2 * len(ks))
    return out


def classification_metrics(predictions, labels, num_classes):
    """Top-1 accuracy, per-class accuracy (None for a class with no test image) and the confusion matrix."""
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)  # rows: true class, cols: predicted
    confusion.index_put_((labels, predictions), torch.ones_like(labels), accumulate=True)
    per_class = [100 * confusion[c, c].item() / n if (n := confusion[c].sum().item()) else None
                 for c in range(num_classes)]
    top1 = 100 * (predictions == labels).sum().item() / len(labels)
    # chance: a uniform guess; majority: always naming the commonest test class (higher when unbalanced)
    majority = 100 * confusion.sum(1).max().item() / len(labels)
    return {"top1": top1, "chance": 100 / num_classes, "majority": majority, "per_class": per_class,
            "confusion": confusion.tolist()}


def baseline_key(baseline, metric):
    """eval.json's name for a baseline's score: "chance" (accuracy), "chance_within1", "constant_mae", ..."""
    return baseline if metric == "accuracy" else f"{baseline}_{metric}"


def count_scores(error):
    """Accuracy, within-one accuracy (percent) and mean absolute error (objects) of absolute count errors,
    averaged over images (dim 0): [N] errors give 0-d tensors, [N, 10] (one column per guess) [10] each."""
    error = error.double()
    return {"accuracy": 100 * (error == 0).double().mean(0), "within1": 100 * (error <= 1).double().mean(0),
            "mae": error.mean(0)}


def scores_with_baselines(error, guess_error, constant):
    """The model's scores on some images, a uniform guess's ("chance_...") and the constant's ("constant_...").

    error [N]: the model's; guess_error [N, 10]: every guess's; constant: {metric: the count always answered}.
    """
    model, guess = count_scores(error), count_scores(guess_error)
    out = {metric: model[metric].item() for metric in COUNT_METRICS}
    out |= {baseline_key("chance", m): guess[m].mean().item() for m in COUNT_METRICS}  # exact: each guess 1/10
    out |= {baseline_key("constant", m): guess[m][COUNTS.index(constant[m])].item() for m in COUNT_METRICS}
    return out


def counting_metrics(predicted, true):
    """Counting scores (accuracy, within one, mean absolute error), overall and per true count, with two baselines.

    chance: a number drawn uniformly from 1-10 for every image, its expected scores computed exactly
    (within one and the error depend on the true counts: 1 and 10 have one neighbour only).
    constant: one count answered for every image, the best one for each metric, picked with these very
    test labels (the most common count for accuracy, a median for the error): an upper bound on any
    constant guess, since no real guesser knows the test labels. It is the bar for the error: a model
    that answers one middle number for every image already keeps its error small.
    Also per_count {"n": these scores on the images with n targets, and "images"}, and the count
    confusion matrix (rows: true count 1-10, columns: predicted).
    """
    error = (predicted - true).abs()
    guess_error = (torch.tensor(list(COUNTS))[None, :] - true[:, None]).abs()  # [N, 10]: always guessing g
    every_guess = count_scores(guess_error)  # each metric: [10], one per constant guess
    constant = {metric: COUNTS[every_guess[metric].argmax()] for metric in ("accuracy", "within1")}
    constant["mae"] = COUNTS[every_guess["mae"].argmin()]  # ties: the first, the smaller count
    per_count = {str(n): {"images": int(mask.sum()),
                          **scores_with_baselines(error[mask], guess_error[mask], constant)}
                 for n in COUNTS if (mask := true == n).any()}
    confusion = classification_metrics(predicted - 1, true - 1, len(COUNTS))["confusion"]  # counts 1-10: classes 0-9
    return {"images": len(true), **scores_with_baselines(error, guess_error, constant), "constant_count": constant,
            "per_count": per_count, "confusion": confusion}


def category_of(entry):
    """The one category of a SARCount entry: {"counts": {"ship": 3}} -> "ship"."""
    return next(iter(entry["counts"]))


def counting_report(entries, predicted):
    """SARCount's scores of answers to manifest entries (1-10 targets of one category each): counting_metrics'
    scores and "predictions", one {"image", "category", "true", "predicted"} per entry, kept to look into.
    predicted: [N] counts, one per entry."""
    true = torch.tensor([next(iter(entry["counts"].values())) for entry in entries])
    predictions = [{"image": str(entry["image"]), "category": category_of(entry), "true": t, "predicted": p}
                   for entry, t, p in zip(entries, true.tolist(), predicted.tolist())]
    return {**counting_metrics(predicted, true), "predictions": predictions}


def fit_logistic_regression(features, labels, num_classes, weight_decay, max_iter=200):
    """Multinomial logistic regression, full-batch L-BFGS on mean cross-entropy + weight_decay * |W|^2.

    The loss is convex and the start is zero, so the result depends only on the data: deterministic.
    Returns (weight [num_classes, D], bias [num_classes]); the bias is not decayed.
    """
    weight = torch.zeros(num_classes, features.shape[1], dtype=features.dtype, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=features.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(features @ weight.t() + bias, labels) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def logistic_accuracy(train_features, train_labels, test_features, test_labels, weight_decay):
    """Top-1 test accuracy (percent) of logistic regression fitted on the training features.

    Both sets are first centred on the training features' mean and scaled by their mean distance from
    it, so that a weight decay means the same for every model: an untrained tower's unit features all
    point nearly one way (cosine 0.999 between MSTAR chips), and on them as they were any decay of the
    grid held the weights too small to separate its classes. One scale for all dimensions keeps the
    features' geometry: scaling each dimension by its own spread would blow up noise with a few shots.
    """
    mean = train_features.mean(0)
    scale = (train_features - mean).norm(dim=1).mean().clamp_min(1e-12)
    train_features, test_features = (train_features - mean) / scale, (test_features - mean) / scale
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    weight, bias = fit_logistic_regression(train_features, train_labels, num_classes, weight_decay)
    predictions = (test_features @ weight.t() + bias).argmax(dim=1)
    return 100 * (predictions == test_labels).sum().item() / len(test_labels)


def few_shot(train_features, train_labels, test_features, test_labels, ks=FEW_SHOT_KS, seeds=FEW_SHOT_SEEDS):
    """{str(k): {"mean", "std"}}: test accuracy over the seeds' draws of k training images per class.

    Logistic regression on the k-shot features; std is over the draws (population std). A k larger
    than some class's training images gives None.
    """
    classes = train_labels.unique()
    smallest = min((train_labels == c).sum().item() for c in classes)
    out = {}
    for k in ks:
        if k > smallest:  # every class must offer k images, or "k-shot" would mean fewer for some
            print(f"few-shot: skipping k={k}, the smallest class has {smallest} training images", file=sys.stderr)
            out[str(k)] = None
            continue
        accuracies = []
        for seed in seeds:
            g = torch.Generator().manual_seed(seed)
            chosen = torch.cat([draw(train_labels == c, k, g) for c in classes])
            accuracies.append(logistic_accuracy(train_features[chosen], train_labels[chosen], test_features,
                                                test_labels, FEW_SHOT_WEIGHT_DECAY))
        accuracies = torch.tensor(accuracies, dtype=torch.float64)
        out[str(k)] = {"mean": accuracies.mean().item(), "std": accuracies.std(unbiased=False).item()}
    return out


def draw(mask, k, generator):
    """k indices, drawn without replacement, of the True entries of mask."""
    candidates = mask.nonzero()[:, 0]
    return candidates[torch.randperm(len(candidates), generator=generator)[:k]]


def held_out(labels, every=chips.HOLD_OUT_EVERY):
    """Bool mask: every `every`-th item of each class, in the given order, is held out
    (chips.chip_is_held_out, the rule that keeps a chips source's test split out of training)."""
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique():
        members = (labels == c).nonzero()[:, 0]
        mask[members] = torch.tensor([chips.chip_is_held_out(i, every) for i in range(len(members))])
    return mask


def linear_probe(train_features, train_labels, test_features, test_labels, weight_decays=WEIGHT_DECAYS):
    """Test top-1 of logistic regression on all training features; weight decay picked on validation.

    Validation is every 5th training image of each class; the best weight decay is then refitted on
    the whole training split (train + validation), as CLIP's linear-probe protocol does.
    """
    val = held_out(train_labels)
    if val.all() or not val.any():
        raise ValueError("linear probe: too few training images per class to hold out a validation split")
    scores = {wd: logistic_accuracy(train_features[~val], train_labels[~val], train_features[val],
                                    train_labels[val], wd) for wd in weight_decays}
    best = max(weight_decays, key=lambda wd: (scores[wd], wd))  # ties: the stronger regulariser
    top1 = logistic_accuracy(train_features, train_labels, test_features, test_labels, best)
    return {"top1": top1, "weight_decay": best, "validation": {str(wd): s for wd, s in scores.items()}}


# ---- the table and plots eval.py shows the scores in ---------------------------------------------------

def plot_confusion(confusion, class_names, path, title="zero-shot confusion", what="class"):
    """A confusion matrix (of classes, or of counts), rows (the true one) normalised to percentages,
    counts written in, the diagonal (right answers) dotted."""
    import matplotlib.pyplot as plt
    counts = torch.tensor(confusion, dtype=torch.float)
    percent = 100 * counts / counts.sum(1, keepdim=True).clamp(min=1)
    size = 1.5 + 0.45 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    shown = ax.imshow(percent.numpy(), cmap="Blues", vmin=0, vmax=100)
    for (i, j), n in zip(torch.cartesian_prod(torch.arange(len(counts)), torch.arange(len(counts))).tolist(),
                         counts.flatten().tolist()):
        if n:
            colour = "white" if percent[i, j] > 50 else "black"
            ax.text(j, i, int(n), ha="center", va="center", fontsize=7, color=colour)
    ax.plot([-0.5, len(counts) - 0.5], [-0.5, len(counts) - 0.5], color="gray", lw=0.8, ls=":")
    lean = max(map(len, class_names)) > 2  # words lean to fit under their column; numbers stand
    ax.set_xticks(range(len(class_names)), class_names, rotation=45 if lean else 0, ha="right" if lean else "center")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel=f"predicted {what}", ylabel=f"true {what}", title=f"{title} (colour: row %)")
    fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_few_shot(curves, chance, path):
    """Few-shot accuracy against k (mean and std over seeds), one line per model, chance dashed."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, few in curves.items():
        ks = [int(k) for k, v in few.items() if v is not None]
        ax.errorbar(ks, [few[str(k)]["mean"] for k in ks], yerr=[few[str(k)]["std"] for k in ks],
                    marker="o", capsize=3, label=name)
    if chance is not None:
        ax.axhline(chance, linestyle="--", color="gray", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks(FEW_SHOT_KS, [str(k) for k in FEW_SHOT_KS])
    ax.set(xlabel="labelled images per class (k)", ylabel="test accuracy (%)", title="few-shot classification")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


ROWS = [  # (task, metric, block in the results, key in the block)
    ("retrieval", "image->text R@1", "retrieval", "i2t_r1"), ("", "image->text R@5", "retrieval", "i2t_r5"),
    ("", "image->text R@10", "retrieval", "i2t_r10"), ("", "text->image R@1", "retrieval", "t2i_r1"),
    ("", "text->image R@5", "retrieval", "t2i_r5"), ("", "text->image R@10", "retrieval", "t2i_r10"),
    ("", "mean recall", "retrieval", "mean_recall"),
    ("zero-shot", "top-1", "zero_shot", "top1"),
    *[("few-shot" if k == 1 else "", f"{k}-shot top-1", "few_shot", str(k)) for k in FEW_SHOT_KS],
    ("linear probe", "top-1", "linear_probe", "top1"),
    ("counting", "accuracy", "counting", "accuracy"), ("", "within one", "counting", "within1"),
    ("", "MAE (objects)", "counting", "mae"),
]


def chance_level(results, block, key):
    """The chance level the table shows beside a metric, or None."""
    if block == "retrieval" and key == "mean_recall":
        return results.get("retrieval", {}).get("chance_mean_recall")
    if block in ("zero_shot", "few_shot", "linear_probe"):  # one guess among the classes
        return results.get("linear_probe", results.get("zero_shot", {})).get("chance")
    if block == "counting":
        return results.get("counting", {}).get(baseline_key("chance", key))
    return None


def constant_level(results, block, key):
    """The score of the best single answer given to every test image (picked with the test labels), or None."""
    if block in ("zero_shot", "few_shot", "linear_probe"):  # the commonest test class, for all three
        return results.get("zero_shot", {}).get("majority")
    if block == "counting":
        return results.get("counting", {}).get(baseline_key("constant", key))
    return None


def cell(value, digits=1):
    """A table cell: 12.3, or 45.6±1.2 for a few-shot mean and std, or '-' for nothing."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        return f"{value['mean']:.{digits}f}±{value['std']:.{digits}f}"
    return f"{value:.{digits}f}"


def format_table(results):
    """The evaluation table: one row per metric, one column per model, chance and the best constant at the right."""
    names = list(results)
    header = f"{'task':<13}{'metric':<18}" + "".join(f"{n:>12}" for n in names) + f"{'chance':>10}{'constant':>10}"
    lines = [header, "-" * len(header)]
    first = results[names[0]]
    for task, metric, block, key in ROWS:
        if not any(block in r for r in results.values()):
            continue
        values = [r.get(block, {}).get(key) for r in results.values()]
        levels = [chance_level(first, block, key), constant_level(first, block, key)]
        digits = 2 if key == "mae" else 1
        lines.append(f"{task:<13}{metric:<18}" + "".join(f"{cell(v, digits):>12}" for v in values)
                     + "".join(f"{'' if v is None else cell(v, digits):>10}" for v in levels))
    lines.append("chance: a random ranking (retrieval), a uniform guess among the classes or from 1-10 (counting)")
    lines.append("constant: the one answer for every image that scores best, picked with the test labels: the")
    lines.append("          commonest class; in counting the commonest count (accuracy), a median count (MAE)")
    return "\n".join(lines)


def format_counting(results):
    """Counting by true count: the first model's accuracy, within one and MAE, then every other model's
    and the two baselines' MAE; one row per true count present, then all images."""
    counting = {name: r["counting"] for name, r in results.items() if "counting" in r}
    first, *others = counting
    columns = [*others, f"always {counting[first]['constant_count']['mae']}", "uniform"]
    header = (f"{'true':>5}{'images':>8}{'accuracy':>10}{'within1':>9}{'MAE':>7}  |"
              + "".join(f"{c:>11}" for c in columns))
    lines = [f"counting by true count: {first}'s accuracy and within one (%), then MAE (objects) of each", header,
             "-" * len(header)]
    rows = [(n, {name: c["per_count"][n] for name, c in counting.items()}) for n in counting[first]["per_count"]]
    for label, row in [*rows, ("all", counting)]:  # the whole set's scores have the keys of each count's
        mine = row[first]
        maes = [row[name]["mae"] for name in others] + [mine["constant_mae"], mine["chance_mae"]]
        lines.append(f"{label:>5}{mine['images']:>8}{mine['accuracy']:>10.1f}{mine['within1']:>9.1f}"
                     f"{mine['mae']:>7.2f}  |" + "".join(f"{m:>11.2f}" for m in maes))
    return "\n".join(lines)
