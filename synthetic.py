"""Synthetic SAR scenes: the embedded default data, drawn from a simple SAR image model.

With no data at hand, `python train.py` trains on a small synthetic SAR detection set that this file
draws once into data_cache/: scenes of sea, coast, channels and airports with ships, aircraft, storage
tanks, bridges, harbours and cars, each an exact box, written as Pascal VOC and captioned by D2C
through data.build_manifest like any real detection set. The image model: mean backscatter (sigma0)
of each surface and target, multiplicative speckle, strong point scatterers with sinc sidelobes, in dB.

    python synthetic.py --out data_cache/synthetic --preview docs/synthetic_examples.png
"""
import argparse
import json
import math
import shutil
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

import annotations
import data

SYNTH_VERSION = 4                # bump when the generator or D2C's captions change, so cached sets are redrawn
DEFAULT_SYNTHETIC = Path(__file__).resolve().parent / "data_cache" / "synthetic"  # train.py's default data
SYNTH_SPACING = 2.0              # metres per pixel of every synthetic scene, written into its annotation
SURFACE_DB = {"sea": -24.0, "land": -11.0, "apron": -25.0}  # mean backscatter (sigma0) of each surface, dB
DB_WINDOW = (-30.0, 5.0)         # dB mapped to 0..255 when a scene is saved as 8 bits
WATER, LAND, APRON, EDGE = 0, 1, 2, 3  # terrain codes; EDGE marks the outermost pixels, no target touches them
KIND_ODDS = {"offshore": 0.35, "coast": 0.35, "channel": 0.1, "airport": 0.2}
SCENE_LABEL = {"offshore": "offshore", "coast": "inshore", "channel": "inshore", "airport": None}
NEAR_COAST_PX = 8                # an object this close to the other surface (land or water) is near the coast
CHIP_KIND = {"ship": "offshore", "aircraft": "airport", "car": "airport", "tank": "coast",
             "bridge": "channel", "harbor": "coast"}  # the scene each chip class is cut from


def speckle(shape, looks, rng):
    """Multiplicative speckle of an L-look intensity image: Gamma(shape=L, scale=1/L), mean 1, variance 1/L.

    Each pixel sums the echoes of many random scatterers, so one look's intensity is exponential
    (Gamma with shape 1) around the mean backscatter; averaging L independent looks gives Gamma(L, 1/L).
    """
    return rng.gamma(looks, 1.0 / looks, size=shape)


def smooth_noise(rng, height, width, cells):
    """A smooth random field (about unit spread): a cells x cells Gaussian grid, upsampled bicubically."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, "F").resize((width, height), Image.BICUBIC))


def dilate(mask, steps):
    """A boolean mask grown by steps pixels (4-connected, so a diamond)."""
    mask = mask.copy()
    for _ in range(steps):
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        mask = grown
    return mask


def land_mask(rng, height, width, kind):
    """(land mask, angle): all sea, all land, land behind a wavy shore, or a wavy channel through land.

    angle (radians) points across the shore, out to sea for a coast, across the water for a channel.
    """
    angle = rng.uniform(0, 2 * np.pi)
    if kind in ("offshore", "airport"):
        return np.full((height, width), kind == "airport"), angle
    y, x = np.mgrid[:height, :width].astype(np.float32)
    across, along = x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)
    shore = across + 2 * smooth_noise(rng, height, width, 12)  # small bays and headlands
    for k in (1, 2, 3):  # and a few long, smooth swings
        shore += rng.uniform(2, 10) / k * np.sin(2 * np.pi * k * along / rng.uniform(150, 300) + rng.uniform(0, 7))
    if kind == "coast":
        return shore < np.quantile(shore, rng.uniform(0.3, 0.5)), angle
    return np.abs(shore - np.median(shore)) > rng.uniform(10, 16), angle


def backdrop(rng, land, kind):
    """(sigma0 in dB, terrain codes): sea with slow wind swells, land as a patchwork of fields, aprons."""
    h, w = land.shape
    sea = SURFACE_DB["sea"] + 1.5 * smooth_noise(rng, h, w, 3)
    fields = 2.0 * np.round(1.5 * smooth_noise(rng, h, w, 6))  # quantised: flat fields with sharp edges
    db = np.where(land, SURFACE_DB["land"] + fields + 1.5 * smooth_noise(rng, h, w, max(4, w // 8)), sea)
    terrain = np.where(land, LAND, WATER).astype(np.int8)
    # Paving is dark (a smooth surface reflects the radar away): an airport's apron and runway, a port's yard.
    if kind == "airport":
        r0, c0 = int(rng.uniform(0.05, 0.3) * h), int(rng.uniform(0.05, 0.3) * w)
        r1, c1 = int(rng.uniform(0.7, 0.95) * h), int(rng.uniform(0.7, 0.95) * w)
        terrain[r0:r1, c0:c1] = APRON
        if rng.random() < 0.5 and h - r1 > 20:  # a runway below the apron
            top = int(rng.integers(r1 + 4, h - 12))
            terrain[top:top + 10] = APRON
    elif kind == "coast":
        r0, c0 = int(rng.uniform(0, 0.7) * h), int(rng.uniform(0, 0.7) * w)
        yard = terrain[r0:r0 + int(rng.uniform(0.2, 0.4) * h), c0:c0 + int(rng.uniform(0.2, 0.4) * w)]
        yard[yard == LAND] = APRON
    if kind in ("airport", "coast"):
        db = np.where(terrain == APRON, SURFACE_DB["apron"] + 0.5 * smooth_noise(rng, h, w, 8), db)
    terrain[[0, -1]], terrain[:, [0, -1]] = EDGE, EDGE
    return db, terrain


@dataclass
class Shape:
    """A target drawn in a window of the scene: its footprint and how it shows up."""
    body: np.ndarray            # bool footprint; its bounding box is the object's box
    bright: np.ndarray          # bool, where the strong point scatterers may sit
    db: object                  # sigma0 of the footprint in dB (a number or an array over the window)
    needs: list                 # [(mask, terrain code)]: every pixel of mask must lie on that terrain
    wake: np.ndarray | None = None  # multiplier of the water's sigma0 (a ship's dark wake)


def rotate(dx, dy, angle):
    """Pixel offsets as (along, across) a direction at angle radians from the x axis."""
    c, s = np.cos(angle), np.sin(angle)
    return dx * c + dy * s, dy * c - dx * s


def draw_ship(rng, dx, dy, angle):
    """A slender hull at a random heading, bright superstructure on its centre line, maybe a dark wake."""
    length = rng.uniform(16, 48)
    beam = max(4.0, length / rng.uniform(4, 6))
    a, c = rotate(dx, dy, rng.uniform(0, 2 * np.pi))
    body = np.square(np.square(a / (length / 2))) + np.square(c / (beam / 2)) <= 1  # rounded, slender
    wake = None
    if rng.random() < 0.4:  # the ship's turbulence damps the small waves behind it: a dark trail that fades
        behind, trail = -a - length / 2, min(rng.uniform(0.8, 1.5) * length, TARGETS["ship"][1] - length / 2)
        inside = (behind > 0) & (behind < trail) & (np.abs(c) < beam * (0.5 + 0.5 * behind / length))
        wake = np.where(inside, 0.15 + 0.85 * behind / trail, 1.0)
    return Shape(body, body & (np.abs(c) <= beam / 4), -1.0, [(body, WATER)], wake)


def draw_aircraft(rng, dx, dy, angle):
    """Fuselage, swept wings and tail plane seen from above: a cross; bright points all over it."""
    length = rng.uniform(18, 32)
    span, width = length * rng.uniform(0.8, 1.05), max(2.0, length / 9)
    a, c = rotate(dx, dy, rng.uniform(0, 2 * np.pi))
    sweep = 0.5 * np.abs(c)
    fuselage = (np.abs(a) <= length / 2) & (np.abs(c) <= width / 2)
    wings = (np.abs(a - 0.05 * length + sweep) <= length / 12) & (np.abs(c) <= span / 2)
    tail = (np.abs(a + 0.4 * length + sweep) <= length / 20 + 0.5) & (np.abs(c) <= span / 5)
    body = fuselage | wings | tail
    return Shape(body, body, -6.0, [(body, APRON)])


def draw_car(rng, dx, dy, angle):
    """A small compact blob on paving: a vehicle, a few pixels long."""
    a, c = rotate(dx, dy, rng.uniform(0, np.pi))
    body = (np.abs(a) <= rng.uniform(2.0, 3.0)) & (np.abs(c) <= rng.uniform(1.2, 1.8))
    return Shape(body, body, 0.0, [(body, APRON)])


def draw_tank(rng, dx, dy, angle):
    """A round storage tank: a bright ring (the wall) around a dark roof, brightest facing the radar (left)."""
    radius = rng.uniform(4, 10)
    distance = np.hypot(dx, dy)
    body = distance <= radius
    ring = body & (distance >= radius - 1.5)
    return Shape(body, ring & (dx < -radius / 3), np.where(ring, -2.0, -14.0), [(body, LAND)])


def draw_bridge(rng, dx, dy, angle):
    """A straight deck across the channel, bright along both edges, both ends on land."""
    a, c = rotate(dx, dy, angle + rng.normal(0, 0.1))
    half, width = rng.uniform(22, 34), rng.uniform(3, 5)
    body = (np.abs(a) <= half) & (np.abs(c) <= width / 2)
    ends, middle = body & (np.abs(a) >= half - 3), body & (np.abs(a) <= 2)
    return Shape(body, body & (np.abs(c) >= width / 2 - 1), -3.0, [(ends, LAND), (middle, WATER)])


def draw_harbor(rng, dx, dy, angle):
    """A quay along the shore with 2-4 piers reaching out to sea: a comb."""
    a, c = rotate(dx, dy, angle)  # a: out to sea, c: along the shore
    n, gap, length, width = rng.integers(2, 5), rng.uniform(8, 12), rng.uniform(12, 24), rng.uniform(3, 4.5)
    span = (n - 1) * gap / 2
    quay = (a >= -5) & (a <= 0) & (np.abs(c) <= span + width / 2)
    piers = (a > 0) & (a <= length) & (np.abs(c) <= span + width / 2)
    piers &= np.abs((c + span + gap / 2) % gap - gap / 2) <= width / 2
    return Shape(quay | piers, piers, -4.0, [(quay, LAND), (piers & (a > length - 3), WATER)])


# category -> (painter, window radius in pixels, terrain its centre is drawn from)
TARGETS = {"harbor": (draw_harbor, 40, "shore"), "bridge": (draw_bridge, 40, WATER),
           "tank": (draw_tank, 11, LAND), "aircraft": (draw_aircraft, 20, APRON),
           "ship": (draw_ship, 64, WATER), "car": (draw_car, 5, APRON)}


def fits(shape, terrain, occupied):
    """True when a drawn target lies on its terrain, clear of the image edge and of other targets."""
    body = shape.body
    return bool(body.any() and not (terrain[body] == EDGE).any() and not occupied[body].any()
                and all((terrain[mask] == code).all() for mask, code in shape.needs))


def paint(rng, scene, shape, rows, cols):
    """Paint a target that fits into the scene's sigma0 and point scatterers; returns its box."""
    sigma, body = scene["sigma"][rows, cols], shape.body  # a view: painting it paints the scene
    if shape.wake is not None:
        sigma *= np.where((scene["terrain"][rows, cols] == WATER) & ~scene["occupied"][rows, cols], shape.wake, 1.0)
    sigma[body] = 10 ** (np.broadcast_to(shape.db, body.shape)[body] / 10)
    ys, xs = np.nonzero(shape.bright)  # about one strong scatterer per 20 pixels, 5 to 20 dB
    pick = rng.choice(len(ys), size=min(len(ys), 1 + int(body.sum()) // 20), replace=False)
    strengths = 10 ** rng.uniform(0.5, 2, len(pick))
    scene["points"] += [(rows.start + y, cols.start + x, a) for y, x, a in zip(ys[pick], xs[pick], strengths)]
    ys, xs = np.nonzero(body)
    x0, y0, x1, y1 = cols.start + xs.min(), rows.start + ys.min(), cols.start + xs.max() + 1, rows.start + ys.max() + 1
    scene["occupied"][max(y0 - 2, 0):y1 + 2, max(x0 - 2, 0):x1 + 2] = True  # keeps boxes 2 px apart
    return [int(x0), int(y0), int(x1), int(y1)]


def place_target(rng, category, scene, tries=30):
    """Draw one target where it fits, trying random centres on its home terrain; its object, or None."""
    draw, radius, home = TARGETS[category]
    (h, w), candidates = scene["terrain"].shape, scene["homes"][home]
    for _ in range(tries if len(candidates) else 0):
        cy, cx = divmod(int(rng.choice(candidates)), w)
        if category in scene["anchors"] and rng.random() < 0.7:  # tank farms, parking lots, rows of aircraft
            ay, ax = np.add(scene["anchors"][category], rng.normal(0, 2 * radius, 2))
            cy, cx = int(np.clip(ay, 0, h - 1)), int(np.clip(ax, 0, w - 1))
        rows = slice(max(cy - radius, 0), min(cy + radius + 1, h))
        cols = slice(max(cx - radius, 0), min(cx + radius + 1, w))
        dy, dx = np.mgrid[rows.start - cy:rows.stop - cy, cols.start - cx:cols.stop - cx].astype(np.float32)
        shape = draw(rng, dx, dy, scene["angle"])
        if fits(shape, scene["terrain"][rows, cols], scene["occupied"][rows, cols]):
            obj = {"category": category, "box": paint(rng, scene, shape, rows, cols)}
            scene["anchors"][category] = (cy, cx)
            if scene["near"] is not None:  # near the coast: close to land and to water at once
                obj["near_coast"] = all(bool(near[rows, cols][shape.body].any()) for near in scene["near"])
            return obj
    return None


def scene_contents(rng, kind):
    """How many targets of each category a scene of this kind asks for (placement may fit fewer).

    Ships, aircraft and tanks, SARCount's categories, reach 10: a model cannot learn what nine ships
    look like, or what "nine" means, from scenes that never hold more than six.
    """
    n = lambda low, high: int(rng.integers(low, high + 1))
    if kind == "offshore":
        return {"ship": n(0, 10)}
    if kind == "coast":
        return {"harbor": n(0, 1), "tank": n(0, 10) * n(0, 1), "ship": n(0, 4), "car": n(0, 4) * n(0, 1)}
    if kind == "channel":
        return {"bridge": n(1, 2), "ship": n(0, 3)}
    return {"aircraft": n(1, 10), "car": n(0, 3)}


def add_scatterers(intensity, points, radius=8, resolution=1.3):
    """Intensity plus point scatterers (y, x, strength), each spread by the radar's point response:
    sinc^2 in range and in azimuth, whose sidelobes (-13 dB the first) draw the bright crosses seen
    on strong scatterers in SAR images. resolution is in pixels."""
    t = np.sinc(np.arange(-radius, radius + 1) / resolution) ** 2
    kernel = np.outer(t, t)
    padded = np.pad(intensity, radius)  # sidelobes near the border spill outside, not back in
    for y, x, strength in points:
        padded[y:y + 2 * radius + 1, x:x + 2 * radius + 1] += strength * kernel
    return padded[radius:-radius, radius:-radius]


def to_8bit(intensity):
    """Linear intensity -> dB -> 0..255 over DB_WINDOW, the way SAR products are usually shown."""
    db = 10 * np.log10(np.maximum(intensity, 1e-10))
    return np.round(np.clip((db - DB_WINDOW[0]) / (DB_WINDOW[1] - DB_WINDOW[0]), 0, 1) * 255).astype(np.uint8)


def synthetic_scene(rng, width, height, kind, wanted=None):
    """One synthetic SAR scene: (8-bit image [H, W], objects with exact boxes, scene label).

    kind: "offshore", "coast", "channel" or "airport"; wanted: {category: count} instead of the usual
    mix. The image model: mean backscatter sigma0 of the surfaces and target bodies, times speckle,
    plus strong point scatterers (targets' and buildings') drawn with sidelobes, in dB, to 8 bits.
    """
    land, angle = land_mask(rng, height, width, kind)
    db, terrain = backdrop(rng, land, kind)
    homes = {code: np.flatnonzero(terrain == code) for code in (WATER, LAND, APRON)}
    homes["shore"] = np.flatnonzero((terrain == LAND) & dilate(terrain == WATER, 1))
    coastal = SCENE_LABEL[kind] == "inshore"
    scene = {"terrain": terrain, "sigma": 10 ** (db / 10), "occupied": np.zeros(land.shape, bool), "points": [],
             "homes": homes, "angle": angle, "anchors": {},
             "near": (dilate(land, NEAR_COAST_PX), dilate(~land, NEAR_COAST_PX)) if coastal else None}
    urban = rng.choice(homes[LAND], size=len(homes[LAND]) // 600) if len(homes[LAND]) else []
    objects = []
    for category, count in (wanted or scene_contents(rng, kind)).items():
        objects += [obj for _ in range(count) if (obj := place_target(rng, category, scene))]
    points = scene["points"] + [(*divmod(int(i), width), 10 ** rng.uniform(-1, 0.3)) for i in urban]  # buildings
    intensity = scene["sigma"] * speckle(land.shape, rng.choice([1, 2, 3, 4]), rng)  # 1 to 4 looks
    return to_8bit(add_scatterers(intensity, points)), objects, SCENE_LABEL[kind]


def voc_xml(filename, width, height, objects, scene=None, pixel_spacing=None):
    """A Pascal VOC annotation, with sarclip's extra tags <pixel_spacing>, <scene> and <near_coast>."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for key, value in (("width", width), ("height", height), ("depth", 1)):
        ET.SubElement(size, key).text = str(value)
    for key, value in (("pixel_spacing", pixel_spacing), ("scene", scene)):
        if value is not None:
            ET.SubElement(root, key).text = str(value)
    for obj in objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj["category"]
        if "near_coast" in obj:
            ET.SubElement(node, "near_coast").text = str(int(obj["near_coast"]))
        box = ET.SubElement(node, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), obj["box"]):
            ET.SubElement(box, key).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def save_scene(folder, name, image, objects, scene):
    """Write a scene as PNG plus VOC annotation: folder/<name>.png, folder/Annotations/<stem>.xml."""
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / name, compress_level=1)  # speckle hardly compresses: favour speed
    xml = voc_xml(name, image.shape[1], image.shape[0], objects, scene, SYNTH_SPACING)
    (folder / "Annotations" / f"{Path(name).stem}.xml").write_text(xml)


def exact_scene(rng, size, kind, wanted, attempts=10):
    """A scene holding exactly the wanted targets (redrawn until they all fit), else None."""
    for _ in range(attempts):
        image, objects, scene = synthetic_scene(rng, size, size, kind, wanted)
        if len(objects) == sum(wanted.values()):
            return image, objects, scene
    return None


def make_synthetic(out_dir, seed=0, n_scenes=2000, chips_per_class=100, images_per_count=30):
    """Write the synthetic SAR set once (skipped when already complete for these settings); returns paths.

    out_dir/JPEGImages/*.png + Annotations/*.xml  scenes of 128-256 px (Pascal VOC), manifest mmsar.jsonl
    out_dir/chips/<class>/*.png                    64x64 chips, one target each (zero-shot, few-shot, probes)
    out_dir/count/<k>/*.png + count/Annotations/   1-10 targets of one class (VOC), count.jsonl (all "test")
    Every image has its own generator, seeded by (seed, part, index): the same files for the same seed.
    Not safe to run from several processes at once: under DDP, make it on one rank, then barrier.
    """
    out = Path(out_dir)
    settings = {"version": SYNTH_VERSION, "seed": seed, "n_scenes": n_scenes, "chips_per_class": chips_per_class,
                "images_per_count": images_per_count, "complete": True}
    paths = {"scenes": out / "mmsar.jsonl", "count": out / "count.jsonl", "chips": out / "chips"}
    marker = out / "synthetic.json"
    if marker.is_file():
        if json.loads(marker.read_text()) == settings:
            return paths
        for part in ("JPEGImages", "Annotations", "chips", "count"):  # ours, from other settings: start afresh
            shutil.rmtree(out / part, ignore_errors=True)
    (out / "Annotations").mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({**settings, "complete": False}))
    kinds, odds = list(KIND_ODDS), list(KIND_ODDS.values())
    for i in range(n_scenes):
        rng = np.random.default_rng((seed, 0, i))
        kind = kinds[rng.choice(len(kinds), p=odds)]
        width, height = (int(side) for side in rng.choice([128, 160, 192, 224, 256], 2))
        save_scene(out, f"JPEGImages/{i:05d}.png", *synthetic_scene(rng, width, height, kind))
    for c, category in enumerate(CHIP_KIND):
        (out / "chips" / category).mkdir(parents=True, exist_ok=True)
        for i in range(chips_per_class):
            image = exact_scene(np.random.default_rng((seed, 1, c, i)), 64, CHIP_KIND[category], {category: 1})
            if image:
                Image.fromarray(image[0]).save(out / "chips" / category / f"{i:05d}.png", compress_level=1)
    (out / "count" / "Annotations").mkdir(parents=True, exist_ok=True)
    for k in range(1, 11):
        for i in range(images_per_count):
            category = ("ship", "aircraft", "tank")[i % 3]
            made = exact_scene(np.random.default_rng((seed, 2, k, i)), 192, CHIP_KIND[category], {category: k})
            if made:
                save_scene(out / "count", f"{k}/{k:02d}_{i:05d}.png", *made)
    data.build_manifest([f"SynthSAR=voc:{out}"], paths["scenes"], verbose=False)
    data.build_manifest([f"SynthSAR=voc:{out / 'count'}"], paths["count"], split="test", verbose=False)
    marker.write_text(json.dumps(settings))
    return paths


def save_preview(manifest_path, png_path, n=12, columns=4):
    """A grid of n scenes from a manifest, boxes and categories drawn, first caption below each."""
    import textwrap
    import matplotlib.pyplot as plt
    entries, chosen, seen = data.read_manifest(manifest_path), [], set()
    for entry in entries:  # one scene per mix of categories and scene type first, for variety
        if (kind := (frozenset(entry["counts"]), entry.get("scene"))) not in seen:
            seen.add(kind)
            chosen.append(entry)
    chosen = (chosen + [e for e in entries if e not in chosen])[:n]
    rows = math.ceil(len(chosen) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.6 * rows), squeeze=False)
    colours = dict(zip(sorted(annotations.KNOWN_CATEGORIES),
                       ("#ffd700", "#00e5ff", "#ff5fd2", "#7cff4f", "#ff8c00", "#ff4040")))
    for ax, entry in zip(axes.flat, chosen):
        ax.imshow(np.asarray(Image.open(entry["image"])), cmap="gray", vmin=0, vmax=255)
        for x0, y0, x1, y1, category in entry["boxes"]:
            colour = colours.get(category, "w")
            ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color=colour, lw=0.8))
            ax.text(x0, y0 - 2, category, color=colour, fontsize=6)
        ax.set_title(f"{entry.get('scene') or 'land'}, {entry['width']}x{entry['height']} px", fontsize=8)
        ax.set_xlabel(textwrap.fill(entry["captions"][0], 42), fontsize=6)
        ax.set_xticks([]), ax.set_yticks([])
    for ax in axes.flat[len(chosen):]:
        ax.axis("off")
    fig.tight_layout()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    palette = Image.open(png_path).convert("RGB").quantize(256, Image.Quantize.FASTOCTREE)
    palette.save(png_path)  # 256 colours are plenty here, at a quarter of the bytes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_SYNTHETIC)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenes", type=int, default=2000)
    parser.add_argument("--preview", nargs="?", const="docs/synthetic_examples.png", help="also draw this PNG")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    paths = make_synthetic(args.out, args.seed, args.scenes)
    print(f"synthetic SAR set in {args.out} ({time.perf_counter() - start:.1f} s): "
          + ", ".join(f"{k} {v}" for k, v in paths.items()))
    if args.preview:
        save_preview(paths["scenes"], args.preview)


if __name__ == "__main__":
    main()
