"""Counterfactual counts: a true caption with one count made false, grammatical, and false of its image."""
import random
import re
from collections import Counter

import pytest

from counterfactuals import count_counterfactuals
from d2c import captions, count_word, plural
from test_d2c import NUMBERS, busy_record, counts_in, many_captions, ship  # the D2C tests' record helpers


def counterfactuals(caption, counts, k=40, seed=0):
    """Every counterfactual there is (k is more than enough), as a set."""
    return set(count_counterfactuals(caption, counts, k=k, seed=seed))


def test_counterfactuals_of_every_number_word():
    assert counterfactuals("a SAR image of two ships.", {"ship": 2}) == {
        "a SAR image of one ship.", "a SAR image of three ships.", "a SAR image of four ships.",
        "a SAR image of five ships.", "a SAR image of six ships.", "a SAR image of seven ships.",
        "a SAR image of eight ships.", "a SAR image of nine ships.", "a SAR image of ten ships.",
        "a SAR image of eleven ships.", "a SAR image of twelve ships."}
    for n in range(1, 13):  # the simple template: 1..12 less the true count, "one" never "a"
        got = counterfactuals(f"a SAR image of {count_word(n)} {plural('ship', n)}.", {"ship": n})
        assert got == {f"a SAR image of {count_word(m)} {plural('ship', m)}." for m in range(1, 13) if m != n}


def test_counterfactuals_keep_digits_and_count_up_to_twelve():
    got = counterfactuals("a radar scene of 3 ships.", {"ship": 3})
    assert len(got) == 11 and got & {"a radar scene of a ship.", "a radar scene of one ship."}
    assert got - {"a radar scene of a ship.", "a radar scene of one ship."} == \
        {f"a radar scene of {m} ships." for m in (2, 4, 5, 6, 7, 8, 9, 10, 11, 12)}
    words = counterfactuals("a radar scene of 13 cars.", {"car": 13})  # above twelve: digits either way
    assert len(words) == 12 and "a radar scene of five cars." in words and "a radar scene of 5 cars." not in words
    assert "a radar scene of 2 ships and 5 cars." in counterfactuals("a radar scene of 2 ships and 13 cars.",
                                                                     {"ship": 2, "car": 13})


def test_counterfactual_nouns_and_articles():
    assert counterfactuals("there is an aircraft in this SAR image.", {"aircraft": 1}) == \
        {f"there are {count_word(m)} aircraft in this SAR image." for m in range(2, 13)}
    large = set().union(*(counterfactuals("a SAR image with two large aircraft.", {"aircraft": 2}, seed=s)
                          for s in range(10)))
    assert {"a SAR image with a large aircraft.", "a SAR image with one large aircraft."} <= large
    tanks = counterfactuals("a radar image of a T72 and two 2S1s.", {"T72": 1, "2S1": 2})
    assert len(tanks) == 22  # T72: 2..12, 2S1: 1 and 3..12
    assert "a radar image of three T72s and two 2S1s." in tanks
    assert tanks & {"a radar image of a T72 and a 2S1.", "a radar image of a T72 and one 2S1."}


def test_counterfactual_verbs_agree():
    lone = counterfactuals("a ship is visible in a SAR image.", {"ship": 1})
    assert "two ships are visible in a SAR image." in lone
    assert counterfactuals("three ships are visible in a SAR image.", {"ship": 3}) & \
        {"a ship is visible in a SAR image.", "one ship is visible in a SAR image."}
    mixed = counterfactuals("there is a ship and two cars in this radar image.", {"ship": 1, "car": 2})
    assert "there are two ships and two cars in this radar image." in mixed  # the verb before the first count
    assert "there is a ship and five cars in this radar image." in mixed
    pair = counterfactuals("a ship and a car are visible in this SAR image.", {"ship": 1, "car": 1})
    assert "three ships and a car are visible in this SAR image." in pair


def test_counterfactual_breakdown_still_adds_up():
    caption = "a SAR image of three ships, two in the upper-left and one at the centre."
    got = counterfactuals(caption, {"ship": 3})
    assert len(got) == 10  # 2 and 4..12: one ship would leave a cell empty
    assert "a SAR image of two ships, one in the upper-left and one at the centre." in got
    for text in got:
        total, left, centre = (NUMBERS[w] for w in re.match(
            r"a SAR image of (\w+) ships, (\w+) in the upper-left and (\w+) at the centre\.$", text).groups())
        assert total == left + centre and (left == 2 or centre == 1)  # one cell moved, the other kept


@pytest.mark.parametrize("caption, n, false_counts", [
    ("a SAR image of a ship in the upper-left.", 1, range(2, 13)),
    ("a SAR image of two ships along the top.", 2, range(3, 13)),        # a row of cells: two or more
    ("a SAR image of two ships, about 60 to 120 m long.", 2, range(3, 13)),
    ("a SAR image of three ships in a row.", 3, range(4, 13)),           # an arrangement: three or more
    ("a SAR image of three ships, two of them near the coast.", 3, range(4, 13)),
])
def test_counterfactual_counts_fit_the_rest_of_the_sentence(caption, n, false_counts):
    got = counterfactuals(caption, {"ship": n})
    assert sorted(counts_in(text, ["ship"])["ship"] for text in got) == list(false_counts)


def test_counterfactual_each_length():
    assert "a SAR image of two ships, each about 120 m long." in \
        counterfactuals("a SAR image of a ship, about 120 m long.", {"ship": 1})
    assert counterfactuals("a SAR image of two ships, each about 120 m long.", {"ship": 2}) & \
        {"a SAR image of a ship, about 120 m long.", "a SAR image of one ship, about 120 m long."}


def test_no_counterfactuals_without_a_count():
    empty = {"width": 800, "height": 800, "scene": "offshore", "objects": []}
    for text in many_captions(empty, seeds=5) + captions(empty, n=1, simple=True):
        assert count_counterfactuals(text, {}, k=3) == []
    assert count_counterfactuals("a SAR image of two ships.", {"ship": 2}, k=0) == []


def test_counterfactuals_are_deterministic_and_distinct():
    caption, counts = "there is a ship and two cars in this radar image.", {"ship": 1, "car": 2}
    first = count_counterfactuals(caption, counts, k=4, seed=5)
    assert len(set(first)) == 4 and first == count_counterfactuals(caption, counts, k=4, seed=5)
    assert first == count_counterfactuals(caption, counts, k=4, seed=random.Random(5))  # the loop's own rng
    assert first != count_counterfactuals(caption, counts, k=4, seed=6)


def test_counterfactuals_need_the_true_counts():
    with pytest.raises(ValueError, match="caption says 'two ships' but counts say ship: 3"):
        count_counterfactuals("a SAR image of two ships.", {"ship": 3})


def agrees(caption, counts):
    """True when "there is/are" and "is/are visible" agree with the counts the caption states."""
    there, visible = re.search(r"\bthere (is|are) (\w+)", caption), re.search(r"\b(is|are) visible", caption)
    return ((not there or (there[1] == "is") == (there[2] in ("a", "an", "one")))
            and (not visible or (visible[1] == "is") == (sum(counts.values()) == 1)))


def test_counterfactuals_of_real_captions_change_exactly_one_count():
    cars = [{"category": "car", "box": [10 * i, 700, 10 * i + 8, 704]} for i in range(13)]
    two_cells = [ship(100, 100, 140, 110), ship(150, 120, 190, 130), ship(400, 400, 440, 410)]
    tanks = [{"category": c, "box": b} for c, b in (("T72", [10, 10, 100, 100]), ("T72", [200, 300, 290, 390]),
                                                   ("2S1", [300, 10, 390, 100]))]
    for record in (busy_record(), {"width": 800, "height": 800, "pixel_spacing": 3.0, "objects": two_cells},
                   {"width": 491, "height": 594, "objects": tanks}, {"width": 800, "height": 800, "objects": cars}):
        counts = dict(Counter(obj["category"] for obj in record["objects"]))
        true = many_captions(record) + captions(record, n=1, simple=True)
        for seed, caption in enumerate(true):
            for text in count_counterfactuals(caption, counts, k=3, seed=seed):
                assert text not in true
                said = counts_in(text, list(counts))  # also checks each noun agrees with its number
                changed = [c for c in counts if said[c] != counts[c]]
                assert len(changed) == 1 and 1 <= said[changed[0]] <= 12, (caption, text)
                assert agrees(text, said), text
                cells = re.findall(rf"\b(\d+|{'|'.join(NUMBERS)}) (?:in the upper-left|at the centre)", text)
                if counts == {"ship": 3} and len(cells) == 2:  # two_cells' breakdown still adds up
                    assert sum(int(w) if w.isdigit() else NUMBERS[w] for w in cells) == said["ship"], text
