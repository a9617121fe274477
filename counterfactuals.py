"""False-count captions: D2C's hard negatives for count-aware training (train.py --count-negatives).

D2C (d2c.py) writes a true caption from an image's boxes; this file goes the other way. It reads back
the counts a caption states ("three ships", "a T72", "2 large aircraft") and rewrites one of them to a
false number, with every word that agrees with it:

    "there is a ship at the centre."                -> "there are four ships at the centre."
    "three ships, two in the upper-left and one at the centre"
                                                    -> "four ships, three in the upper-left and one at the centre"

These are the counterfactual captions of "Teaching CLIP to Count to Ten" (Paiss et al., ICCV 2023):
extra wrong answers for their own image only (sarclip.clip_loss, counterfactuals=).

A counterfactual must read like a caption D2C could have written for some other scene, so that the
text alone cannot give it away (else the text tower learns "two ships in a row" is always wrong, not
to count): that is why the words agreeing with the count (noun, article, verb, "each", a position
breakdown) change with it, and why a count never drops below what the rest of the sentence implies.

Standard library only, like d2c.py.
"""
import functools
import random
import re
from collections import Counter, namedtuple

from d2c import (ABOUT_WORDS, ARRANGEMENT_PHRASES, CELL_PHRASES, COLUMN_PHRASES, NUMBER_WORDS, ROW_PHRASES,
                 SIZE_WORDS, count_phrase, count_word, plural, simple_sentence)

MAX_FALSE_COUNT = 12  # false counts are drawn from 1..12, as far as D2C has number words
COUNT_VALUES = {"a": 1, "an": 1, **{word: n for n, word in enumerate(NUMBER_WORDS)}}
NUMBER = r"\d+|" + "|".join(NUMBER_WORDS)  # a number as D2C writes it: "3" or "three"
BREAKDOWN = re.compile(rf"\b({NUMBER}) (?:{'|'.join(re.escape(p) for p, _ in CELL_PHRASES.values())})\b")
OF_THEM = re.compile(rf"\b({NUMBER}) of them\b")                    # "one of them near the coast"
ARRANGED = re.compile("|".join(p for ps in ARRANGEMENT_PHRASES.values() for p in ps))  # said of 3 or more
SEVERAL = re.compile("|".join(ROW_PHRASES + COLUMN_PHRASES +         # said of 2 or more
                              ("in different parts of the image", r"\d+ to \d+ m long")))
ONE_LENGTH = re.compile(rf"\b(?:{'|'.join(ABOUT_WORDS)}) \d+ m long")  # one object's length, no "each"
EACH = re.compile(rf"\beach (?=(?:{'|'.join(ABOUT_WORDS)}) )")
THERE_BE = re.compile(r"\bthere (is|are) \Z")                        # "there is" right before a count
BE_VISIBLE = re.compile(r"\b(is|are) visible\b")

# One count stated in a caption: "<word> [size] <noun>", where caption[start:end] is the whole phrase.
Count = namedtuple("Count", "start end category n word size")


def number_value(word):
    """The count a number word or digit string stands for: "a" -> 1, "three" -> 3, "13" -> 13."""
    return int(word) if word.isdigit() else COUNT_VALUES[word]


@functools.lru_cache(maxsize=256)
def count_pattern(categories):
    """A regex for "<number> [size] <noun>" of these categories (noun singular or plural), and noun -> category.

    categories is a sorted tuple, so that a set of categories is compiled once (lru_cache).
    """
    category_of = {plural(c, n): c for c in categories for n in (2, 1)}
    longest_first = sorted(category_of, key=len, reverse=True)  # try "ships" before "ship"
    nouns = "|".join(re.escape(noun) for noun in longest_first)
    sizes = "|".join(SIZE_WORDS)
    return re.compile(rf"\b(an|a|{NUMBER}) (?:({sizes}) )?({nouns})(?![\w-])"), category_of


def read_counts(caption, counts):
    """Every count the caption states for the categories in counts, in order, as Count tuples.

    Raises ValueError when a stated count is not the one in counts (the caption is not of that image).
    """
    pattern, category_of = count_pattern(tuple(sorted(counts)))
    found = []
    for match in pattern.finditer(caption):
        word, size, noun = match.groups()
        category, n = category_of[noun], number_value(word)
        if n != counts[category]:
            raise ValueError(f"caption says '{word} {noun}' but counts say {category}: {counts[category]}; "
                             f"caption: {caption!r}")
        found.append(Count(match.start(), match.end(), category, n, word, size))
    return found


def group_end(caption, found, i):
    """Where what the caption says about found[i]'s group ends: at the next stated count, or the end."""
    return found[i + 1].start if i + 1 < len(found) else len(caption)


def fewest_allowed(rest, n, cells):
    """The smallest count that the rest of a group's phrase still fits.

    rest is what follows the count, up to the next group ("in a row, one of them near the coast");
    cells are its position breakdown's numbers as (start, end, k). An arrangement is said of three or
    more; a row or column of cells, "different parts" or a length range of two or more; "k of them"
    needs more than k; and since only one cell of a breakdown moves, every other cell keeps at least 1.
    """
    fewest = 3 if ARRANGED.search(rest) else 2 if SEVERAL.search(rest) else 1
    near = OF_THEM.search(rest)
    if near:
        fewest = max(fewest, number_value(near.group(1)) + 1)
    if cells:
        fewest = max(fewest, n - max(k for _, _, k in cells) + 1)
    return fewest


def count_counterfactuals(caption, counts, k=1, seed=0):
    """Up to k distinct captions, each the caption with exactly one category's count made false.

    Why: a contrastive batch rarely holds two captions that differ only in their count, so nothing in
    the CLIP loss forces number words to matter: "three ships" and "five ships" may embed alike.
    Following "Teaching CLIP to Count to Ten" (Paiss et al., ICCV 2023), the training loop adds these
    counterfactual captions as hard negatives for their own image only (for another image in the batch
    "five ships" may even be true).

    caption: a D2C caption (or one like it) of an image whose {category: number of objects} is counts.
    seed: an int, or a random.Random to draw from (the training loop's own); the same seed gives the
    same captions. Returns [] when the caption states no count (empty scenes: "no targets").

    Rules:
      - One category's count n becomes m, drawn with the category uniformly from the pairs (category, m)
        with m in 1..12 (MAX_FALSE_COUNT), m != n. Zero is never drawn: "no ships" would leave the
        size, place and length words describing nothing. A count above twelve ("13 cars") gets 1..12.
      - m is at least what the rest of its group's phrase implies (fewest_allowed): 3 after "in a row",
        2 after "along the top" or "60 to 120 m long", k + 1 after "k of them near the coast".
      - Agreeing words follow: noun number (plural: "a ship" -> "two ships", "three T72s" -> "a T72",
        "aircraft" stays), the article ("an aircraft", "a large aircraft") or "one", chosen at random for
        m = 1 as D2C does ("one" always in the simple template's form), digits when the caption writes
        counts up to twelve in digits ("3 ships" -> "5 ships"), "there is/are" right before the count,
        "is/are visible" for the new total, and "each" before a single length ("each about 120 m long").
      - A position breakdown changes consistently: one cell's number, chosen at random, moves by m - n
        and stays at least 1 ("three ships, two in the upper-left and one at the centre" -> "four ships,
        three in the upper-left and one at the centre").
      - A category stated twice in the caption is left alone; a stated count that is not counts' raises
        ValueError.

    Each call takes about 30 microseconds for k=1 (a compiled regex is cached per set of categories).
    """
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    found = read_counts(caption, counts) if counts else []
    breakdown = [(m.start(1), m.end(1), number_value(m.group(1))) for m in BREAKDOWN.finditer(caption)]
    stated = Counter(count.category for count in found)
    options = []  # (index into found, false count)
    for i, count in enumerate(found):
        end = group_end(caption, found, i)
        cells = [cell for cell in breakdown if count.end <= cell[0] < end]
        fewest = fewest_allowed(caption[count.end:end], count.n, cells)
        if stated[count.category] == 1:
            options += [(i, m) for m in range(fewest, MAX_FALSE_COUNT + 1) if m != count.n]
    style = {"digits": any(w.isdigit() and int(w) < len(NUMBER_WORDS)  # D2C writes all or none in digits
                           for w in [c.word for c in found] + [caption[a:b] for a, b, _ in breakdown]),
             "simple": caption == simple_sentence({c.category: c.n for c in found}),
             "total": sum(counts.values())}
    return [with_count(caption, found, i, m, breakdown, rng, **style)
            for i, m in rng.sample(options, min(k, len(options)))]


def with_count(caption, found, i, m, breakdown, rng, digits, simple, total):
    """The caption with found[i]'s count set to m and the words that agree with it changed to match."""
    count, n = found[i], found[i].n
    end = group_end(caption, found, i)
    noun = f"{count.size} {plural(count.category, m)}" if count.size else plural(count.category, m)
    edits = [(count.start, count.end, f"{count_word(m)} {noun}" if simple else count_phrase(m, noun, rng, digits))]
    cells = [cell for cell in breakdown if count.end <= cell[0] < end and cell[2] + m - n >= 1]
    if cells:  # one cell moves with the total, so that the breakdown still adds up
        start, stop, k = rng.choice(cells)
        edits.append((start, stop, count_word(k + m - n, digits)))
    each, one_length = EACH.search(caption, count.end, end), ONE_LENGTH.search(caption, count.end, end)
    if m == 1 and each:
        edits.append((each.start(), each.end(), ""))
    elif n == 1 and one_length:
        edits.append((one_length.start(), one_length.start(), "each "))
    there = THERE_BE.search(caption, 0, count.start)
    if there:
        edits.append((there.start(1), there.end(1), "are" if m > 1 else "is"))
    visible = BE_VISIBLE.search(caption, count.end)
    if visible:  # the verb agrees with every object in the caption: "a ship and a car are visible"
        edits.append((visible.start(1), visible.end(1), "are" if total - n + m > 1 else "is"))
    for start, stop, text in sorted(edits, reverse=True):  # right to left, so earlier offsets hold
        caption = caption[:start] + text + caption[stop:]
    return caption
