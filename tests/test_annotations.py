"""annotations.py: category names, class lists, and the VOC, COCO, YOLO and DOTA readers (axis-aligned
and rotated boxes, odd encodings, images named the Windows way, the release's own split). The csv
reader, chips.py's chip sets, and what the build makes of every reader's Records are tested through
data.py's build in test_data.py."""
import json
import re
from pathlib import Path

import pytest

import annotations
import synthetic
from annotations import category_name, read_coco, read_dota, read_voc, read_yolo
from data import build_manifest, read_manifest
from test_data import gray_image, voc_object

# ---- category names -------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, name", [("Ship", "ship"), ("boat", "ship"), ("Cargo", "ship"), ("A320/321", "aircraft"),
                                       ("Boeing737", "aircraft"), ("Oil_Tank", "tank"), ("storage-tank", "tank"),
                                       ("Harbour", "harbor"), ("small vehicle", "car"), ("T72", "T72"),
                                       ("Cell-Container", "ship"), ("ore-oil", "ship"), ("LawCo", "ship"),
                                       ("GeneralCargo", "ship"), ("Wind  Turbine", "wind turbine")])
def test_category_names_meet_across_sets(raw, name):
    assert category_name(raw) == name


def test_class_list_maps_ids_and_renames(tmp_path):
    (tmp_path / "classes.txt").write_text("0 2S1\n1 BMP2\nother aircraft\n")
    classes = annotations.read_class_list(tmp_path / "classes.txt")
    assert classes == {"0": "2S1", "1": "BMP2", "other": "aircraft"}
    assert [category_name(raw, classes) for raw in ("0", "1", "other", "ship")] == ["2S1", "BMP2", "aircraft", "ship"]
    (tmp_path / "obj.names").write_text("ship\ntank\n")  # YOLO style: one name a line, id = line number
    assert annotations.read_class_list(tmp_path / "obj.names") == {"0": "ship", "1": "tank"}
    (tmp_path / "obj.names").write_text("ship\noil  tank\nbridge\n")  # a name with a space is one name
    assert annotations.read_class_list(tmp_path / "obj.names") == {"0": "ship", "1": "oil tank", "2": "bridge"}
    (tmp_path / "classes.txt").write_text("0 oil tank\n1 ship\nbridge\n")  # numbered: a stray line keeps its number
    assert annotations.read_class_list(tmp_path / "classes.txt") == {"0": "oil tank", "1": "ship", "2": "bridge"}


def test_a_byte_order_mark_is_not_part_of_the_first_class(tmp_path):
    (tmp_path / "classes.txt").write_text("\ufeff0 ship\n1 oil_tank\n", encoding="utf-8")  # saved by Notepad
    assert annotations.read_class_list(tmp_path / "classes.txt") == {"0": "ship", "1": "oil_tank"}
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "x.txt").write_text("\ufeff0 0.5 0.5 0.2 0.2\n", encoding="utf-8")
    gray_image(tmp_path / "images" / "x.png", 100, 100)
    [record] = read_yolo(tmp_path, annotations.read_class_list(tmp_path / "classes.txt"))
    assert record.objects == [{"category": "ship", "box": [40.0, 40.0, 60.0, 60.0]}]


# ---- readers -------------------------------------------------------------------------------------------

VOC_XML = """<annotation><filename>a.jpg</filename><size><width>40</width><height>30</height></size>
  <pixel_spacing>3.0</pixel_spacing><scene>inshore</scene>
  <object><name>Ship</name><near_coast>1</near_coast>
    <bndbox><xmin>2.0</xmin><ymin>3.5</ymin><xmax>12</xmax><ymax>9</ymax></bndbox></object>
  <object><name>boat</name>
    <robndbox><cx>20</cx><cy>15</cy><w>10</w><h>4</h><angle>1.5707963</angle></robndbox></object>
</annotation>"""


def official_ssdd(root, splits):
    """The official SSDD release's VOC layout: one JPEGImages/, and per split an Annotations_<split>/;
    splits {split: [image ids]}. Returns root."""
    for split, ids in splits.items():
        (root / f"Annotations_{split}").mkdir(parents=True)
        for image_id in ids:
            gray_image(root / "JPEGImages" / f"{image_id}.jpg")
            xml = synthetic.voc_xml(f"{image_id}.jpg", 40, 30, [voc_object("ship", [5, 5, 15, 15])])
            (root / f"Annotations_{split}" / f"{image_id}.xml").write_text(xml)
    return root


def test_read_voc_keeps_the_official_ssdd_split(tmp_path):
    """Pointed at the release, each split folder's images keep its split (the inshore/offshore subsets
    of the test split are not read twice, but say which test scenes are inshore); pointed at one
    split's folder, its images are found beside it, in JPEGImages/ or that split's JPEGImages_test/."""
    root = official_ssdd(tmp_path / "voc_style", {"train": ["000001", "000002"], "test": ["000003", "000004"],
                                                   "test_inshore": ["000003"]})
    records = read_voc(root)
    assert [(Path(r.image).name, r.split, r.scene) for r in records] == [
        ("000001.jpg", "train", None), ("000002.jpg", "train", None),
        ("000003.jpg", "test", "inshore"), ("000004.jpg", "test", None)]
    assert [(r.image, r.split) for r in read_voc(root / "Annotations_test")] == [
        (str(root / "JPEGImages" / "000003.jpg"), "test"), (str(root / "JPEGImages" / "000004.jpg"), "test")]
    (root / "JPEGImages").rename(root / "JPEGImages_test")
    assert [r.image for r in read_voc(root / "Annotations_test")][0] == str(root / "JPEGImages_test" / "000003.jpg")
    (root / "JPEGImages_test").rename(root / "JPEGImages_test_inshore")
    assert [(Path(r.image).parent.name, r.split) for r in read_voc(root / "Annotations_test_inshore")] == [
        ("JPEGImages_test_inshore", "test")]


def test_read_voc_roboflow_export_split_folders_with_images_beside_their_xml(tmp_path):
    for split in ("train", "valid"):
        gray_image(tmp_path / split / f"{split}1.jpg")
        (tmp_path / split / f"{split}1.xml").write_text(
            synthetic.voc_xml(f"{split}1.jpg", 40, 30, [voc_object("ship", [5, 5, 15, 15])]))
    assert [(r.image, r.split) for r in read_voc(tmp_path)] == [
        (str(tmp_path / "train" / "train1.jpg"), "train"), (str(tmp_path / "valid" / "valid1.jpg"), "val")]


def test_an_image_in_two_split_folders_is_built_once_in_test(tmp_path):
    root = official_ssdd(tmp_path / "ssdd", {"train": ["000001", "000002"], "test": ["000002"]})
    stats = build_manifest([f"SSDD=voc:{root}"], tmp_path / "m.jsonl", verbose=False)
    assert [(Path(e["image"]).stem, e["split"]) for e in read_manifest(tmp_path / "m.jsonl")] == [
        ("000001", "train"), ("000002", "test")]
    assert [kind for kind, _ in stats["problems"]] == ["image read twice (kept once)"]


GAOFEN_XML = """<annotation><source><filename>1.tiff</filename></source><objects><object>
  <possibleresult><name>ship</name></possibleresult>
  <points><point>100,200</point><point>150,200</point><point>150,230</point><point>100,230</point>
    <point>100,200</point></points>
</object></objects></annotation>"""


def test_read_voc_gaofen_points_and_ssdd_segm_polygons(tmp_path):
    """AIR-SARShip-2.0 ships Gaofen-challenge XML in AIR-SARShip-2.0-xml/ (name under <possibleresult>,
    a closed ring of <point>x,y</point>), its TIFFs in AIR-SARShip-2.0-data/; SSDD's polygon version
    writes <segm><point-1>x,y</point-1>...."""
    root = tmp_path / "AIR-SARShip-2.0"
    gray_image(root / "AIR-SARShip-2.0-data" / "1.tiff", 300, 300)
    (root / "AIR-SARShip-2.0-xml").mkdir(parents=True)
    (root / "AIR-SARShip-2.0-xml" / "a.xml").write_text(GAOFEN_XML)  # named unlike its image: <source><filename>
    for folder in (root, root / "AIR-SARShip-2.0-xml"):
        [record] = read_voc(folder)
        assert record.image == str(root / "AIR-SARShip-2.0-data" / "1.tiff")
        assert [(o["category"], o["box"]) for o in record.objects] == [("ship", [100.0, 200.0, 150.0, 230.0])]
    segm = "<segm><point-1>10,15</point-1><point-2>30,11</point-2><point-3>31,25</point-3><point-4>11,29</point-4></segm>"
    (tmp_path / "pseg" / "Annotations").mkdir(parents=True)
    (tmp_path / "pseg" / "Annotations" / "a.xml").write_text(
        f"<annotation><filename>a.jpg</filename><object><name>ship</name>{segm}</object></annotation>")
    gray_image(tmp_path / "pseg" / "JPEGImages" / "a.jpg")
    [record] = read_voc(tmp_path / "pseg")
    assert record.objects[0]["box"] == [10.0, 11.0, 31.0, 29.0]
    (tmp_path / "pseg" / "Annotations" / "a.xml").write_text(  # one point without its y
        f"<annotation><filename>a.jpg</filename><object><name>ship</name>{segm[:-7]}<point-5>9</point-5></segm>"
        "</object></annotation>")
    problems = []
    assert read_voc(tmp_path / "pseg", problems=problems) == [] and "holds 9 numbers" in problems[0][1]


def test_read_voc_keeps_imagesets_splits_and_holds_out_an_image_listed_twice(tmp_path):
    """VOC devkit lists (ImageSets/Main/train.txt, test.txt) give the split; an image the lists do not
    name keeps the project's hashed split (None here), and one listed in train and test is a test image."""
    (tmp_path / "Annotations").mkdir()
    for image_id in ("a", "b", "c", "d"):
        gray_image(tmp_path / "JPEGImages" / f"{image_id}.jpg")
        xml = synthetic.voc_xml(f"{image_id}.jpg", 40, 30, [voc_object("ship", [5, 5, 15, 15])])
        (tmp_path / "Annotations" / f"{image_id}.xml").write_text(xml)
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("a\nb.jpg\n")  # an id, or the image's name or path
    (tmp_path / "ImageSets" / "Main" / "test.txt").write_text("b\nJPEGImages/c.jpg\n\n")
    (tmp_path / "ImageSets" / "Main" / "test_inshore.txt").write_text("c\n")
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_bytes(b"\xff\xfe\x00")  # not text in any encoding
    problems = []
    assert [(Path(r.image).stem, r.split, r.scene) for r in read_voc(tmp_path, problems=problems)] == [
        ("a", "train", None), ("b", "test", None), ("c", "test", "inshore"), ("d", None, None)]
    assert [kind for kind, _ in problems] == ["unreadable split list (left out)", "listed in two splits"]
    assert "b in test and train" in problems[1][1]
    (tmp_path / "ImageSets" / "Main" / "val.txt").unlink()
    (tmp_path / "ImageSets" / "Main").rename(tmp_path / "lists")  # RSDD-SAR: the lists in ImageSets/ itself
    for name in ("train.txt", "test.txt"):
        (tmp_path / "lists" / name).rename(tmp_path / "ImageSets" / name)
    (tmp_path / "lists" / "test_inshore.txt").unlink()
    assert [r.split for r in read_voc(tmp_path)] == ["train", "test", "test", None]
    stats = build_manifest([f"SSDD=voc:{tmp_path}"], tmp_path / "m.jsonl", verbose=False)
    splits = {Path(e["image"]).stem: e["split"] for e in read_manifest(tmp_path / "m.jsonl")}
    assert {k: splits[k] for k in "abc"} == {"a": "train", "b": "test", "c": "test"}
    assert stats["problems"][0][0] == "listed in two splits"


def test_split_list_ids_may_hold_dots_and_annotation_files_upper_case_extensions(tmp_path):
    """"S1A_0.5m_001" is an id, not "S1A_0" with an extension; "b.XML" (saved on Windows) is read."""
    (tmp_path / "Annotations").mkdir()
    for image_id, extension in (("S1A_0.5m_001", ".xml"), ("S1A_0.5m_002", ".xml"), ("b", ".XML")):
        gray_image(tmp_path / "JPEGImages" / f"{image_id}.jpg")
        xml = synthetic.voc_xml(f"{image_id}.jpg", 40, 30, [voc_object("ship", [5, 5, 15, 15])])
        (tmp_path / "Annotations" / f"{image_id}{extension}").write_text(xml)
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("S1A_0.5m_001\nb.jpg\n")
    (tmp_path / "ImageSets" / "Main" / "test.txt").write_text("S1A_0.5m_002\n")
    problems = []
    assert sorted((Path(r.image).stem, r.split) for r in read_voc(tmp_path, problems=problems)) == [
        ("S1A_0.5m_001", "train"), ("S1A_0.5m_002", "test"), ("b", "train")]
    assert problems == []
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "x.TXT").write_text("0 0.5 0.5 0.2 0.2\n")
    gray_image(tmp_path / "images" / "x.png", 100, 100)
    assert [Path(r.image).name for r in read_yolo(tmp_path, {"0": "ship"})] == ["x.png"]


def test_read_voc_float_boxes_rotated_boxes_and_extra_tags(tmp_path):
    gray_image(tmp_path / "JPEGImages" / "a.jpg")
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text(VOC_XML)
    [record] = read_voc(tmp_path)
    assert record.image == str(tmp_path / "JPEGImages" / "a.jpg")
    assert (record.width, record.height, record.pixel_spacing, record.scene) == (40, 30, 3.0, "inshore")
    ship, boat = record.objects
    assert ship == {"category": "ship", "box": [2.0, 3.5, 12.0, 9.0], "near_coast": True}
    assert boat["category"] == "ship" and boat["box"] == pytest.approx([18, 10, 22, 20])  # turned 90 degrees
    assert record.to_d2c()["objects"][1] == {"category": "ship", "box": boat["box"]}  # polygon left out


SSDD_XML = """<annotation><filename>000002.jpg</filename><size><width>501</width><height>355</height></size>
  <object><name>ship</name><rotated_bndbox>
    <rotated_bbox_cx>235</rotated_bbox_cx><rotated_bbox_cy>160</rotated_bbox_cy>
    <rotated_bbox_w>13</rotated_bbox_w><rotated_bbox_h>49</rotated_bbox_h>
    <rotated_bbox_theta>85.03025817871094</rotated_bbox_theta>
    <x1>210</x1><y1>155</y1><x2>260</x2><y2>151</y2><x3>261</x3><y3>165</y3><x4>211</x4><y4>169</y4>
  </rotated_bndbox></object>
  <object><name>ship</name><rotated_bndbox>
    <rotated_bbox_cx>100</rotated_bbox_cx><rotated_bbox_cy>50</rotated_bbox_cy>
    <rotated_bbox_w>40</rotated_bbox_w><rotated_bbox_h>10</rotated_bbox_h>
    <rotated_bbox_theta>90</rotated_bbox_theta>
  </rotated_bndbox></object>
</annotation>"""


def test_read_voc_ssdd_rotated_boxes(tmp_path):
    """The official SSDD release: corners when given, else centre, size and theta in degrees."""
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "000002.xml").write_text(SSDD_XML)
    [record] = read_voc(tmp_path)
    cornered, turned = record.objects
    assert cornered["box"] == [210, 151, 261, 169]  # the corners' extent
    assert cornered["polygon"] == [210, 155, 260, 151, 261, 165, 211, 169]
    assert turned["box"] == pytest.approx([95, 30, 105, 70])  # 40 x 10 turned 90 degrees: 10 wide, 40 high


def test_read_coco_boxes_and_image_folder(tmp_path):
    gray_image(tmp_path / "images" / "P1.png", 100, 80)
    coco = {"images": [{"id": 7, "file_name": "P1.png", "width": 100, "height": 80}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 20, 30, 5]}],
            "categories": [{"id": 1, "name": "Ship"}]}
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    [record] = read_coco(tmp_path / "annotations.json")
    assert record.image == str(tmp_path / "images" / "P1.png")
    assert record.objects == [{"category": "ship", "box": [10.0, 20.0, 40.0, 25.0]}]  # [x, y, w, h] -> corners


@pytest.mark.parametrize("json_file, image, split", [
    ("Annotations/train.json", "JPEGImages/train/1.jpg", "train"),    # SARDet-100K
    ("annotations/test.json", "images/test/1.jpg", "test"),           # SSDD's coco_style
    ("annotations/test2017.json", "JPEGImages/1.jpg", "test"),        # HRSID
    ("annotations/train_test2017.json", "JPEGImages/1.jpg", None),    # HRSID's whole set: the hash decides
    ("annotations/instances_val2017.json", "val2017/1.jpg", "val"),   # COCO's own layout
    ("valid/_annotations.coco.json", "valid/1.jpg", "val"),           # Roboflow's export: the folder says
    ("annotations/interval.json", "images/1.jpg", None),             # "val" inside a word is no split
])
def test_coco_files_of_one_split_keep_it_and_find_images_in_its_folder(tmp_path, json_file, image, split):
    gray_image(tmp_path / image)
    coco = {"images": [{"id": 1, "file_name": "1.jpg"}], "categories": [{"id": 1, "name": "ship"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10]}]}
    (tmp_path / json_file).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / json_file).write_text(json.dumps(coco))
    [record] = read_coco(tmp_path / json_file)
    assert (record.image, record.split) == (str(tmp_path / image), split)


def test_coco_undeclared_categories_and_crowd_regions_are_not_counted(tmp_path):
    gray_image(tmp_path / "images" / "P1.png", 100, 80)
    ship = {"image_id": 7, "category_id": 1, "bbox": [10, 20, 30, 5]}
    coco = {"images": [{"id": 7, "file_name": "P1.png"}], "categories": [{"id": 1, "name": "ship"}],
            "annotations": [{**ship, "id": 1}, {**ship, "id": 2, "bbox": [50, 50, 10, 10]},
                            {**ship, "id": 3, "category_id": 9},              # category 9 is not declared
                            {**ship, "id": 4, "iscrowd": 1, "bbox": [0, 0, 90, 40]}]}  # many ships, one mask
    (tmp_path / "annotations.json").write_text("\ufeff" + json.dumps(coco), encoding="utf-8")  # BOM too
    stats = build_manifest([f"coco:{tmp_path / 'annotations.json'}"], tmp_path / "m.jsonl", verbose=False)
    [entry] = read_manifest(tmp_path / "m.jsonl")
    assert entry["counts"] == {"ship": 2}
    assert all(re.search(r"\b(two|2) ships\b", c) for c in entry["captions"])
    assert {kind: where for kind, where in stats["problems"]} == {
        "undeclared COCO category dropped": f"{tmp_path / 'annotations.json'}: image P1.png, annotation 3: category_id 9",
        "COCO crowd region not counted": f"{tmp_path / 'annotations.json'}: image P1.png, annotation 4"}


def test_coco_ids_written_as_text_still_meet_and_orphan_annotations_are_reported(tmp_path):
    """A converter that writes image_id "7" for image id 7 must not leave the image an empty scene
    ("no targets", false); annotations of an image the file does not list are reported; a flat
    segmentation (one polygon, not COCO's list of them) is read as that polygon."""
    gray_image(tmp_path / "images" / "P1.png", 100, 80)
    coco = {"images": [{"id": 7, "file_name": "P1.png"}], "categories": [{"id": 1, "name": "ship"}],
            "annotations": [{"id": 1, "image_id": "7", "category_id": 1, "bbox": [10, 20, 30, 5],
                             "segmentation": [10, 20, 40, 20, 40, 25, 10, 25]},
                            {"id": 2, "image_id": 8, "category_id": 1, "bbox": [0, 0, 5, 5]}]}
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    problems = []
    [record] = read_coco(tmp_path / "annotations.json", problems=problems)
    assert record.objects == [{"category": "ship", "box": [10.0, 20.0, 40.0, 25.0],
                               "polygon": [10.0, 20.0, 40.0, 20.0, 40.0, 25.0, 10.0, 25.0]}]
    assert problems == [("COCO annotations of no listed image (dropped)",
                         f"{tmp_path / 'annotations.json'}: 1 of them, e.g. image_id '8'")]


def test_read_yolo_uses_the_class_list_and_the_image_header(tmp_path):
    gray_image(tmp_path / "images" / "x.jpg", 200, 100)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "x.txt").write_text("1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.1 0.1\n")
    [record] = read_yolo(tmp_path, {"0": "ship", "1": "oil_tank"})
    assert (record.width, record.height) == (200, 100)
    assert record.objects == [{"category": "tank", "box": [80.0, 30.0, 120.0, 70.0]},
                              {"category": "ship", "box": [10.0, 5.0, 30.0, 15.0]}]


def test_images_named_the_windows_way_are_found(tmp_path):
    """Sets made on Windows ship "A.JPG" beside labels that name "A" (YOLO) or "A.jpg" (VOC), and write
    COCO paths with backslashes."""
    gray_image(tmp_path / "images" / "A.JPG")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "A.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    assert [r.image for r in read_yolo(tmp_path, {"0": "ship"})] == [str(tmp_path / "images" / "A.JPG")]
    (tmp_path / "Annotations").mkdir()
    ship = [voc_object("ship", [5, 5, 15, 15])]
    (tmp_path / "Annotations" / "A.xml").write_text(synthetic.voc_xml("A.jpg", 40, 30, ship))
    assert [r.image for r in read_voc(tmp_path)] == [str(tmp_path / "images" / "A.JPG")]
    gray_image(tmp_path / "images" / "train" / "B.jpg")  # a COCO file written on Windows
    (tmp_path / "b.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "train\\B.jpg"}], "categories": [{"id": 1, "name": "ship"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10]}]}))
    assert [r.image for r in read_coco(tmp_path / "b.json")] == [str(tmp_path / "images" / "train" / "B.jpg")]


def test_coco_paths_of_the_machine_that_wrote_the_file_find_the_images_here(tmp_path):
    gray_image(tmp_path / "JPEGImages" / "P0001.jpg")
    gray_image(tmp_path / "images" / "P0002.png")
    gray_image(tmp_path / "images" / "val" / "P0003.jpg")
    gray_image(tmp_path / "images" / "P0003.jpg")  # another image of that name: the longer ending decides
    names = ["D:\\HRSID\\JPEGImages\\P0001.jpg", "/home/someone/HRSID/P0002.jpg", "C:\\HRSID\\val\\P0003.jpg",
             "C:\\HRSID\\P0004.jpg", "train\\P0002.png"]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "train.json").write_text(json.dumps({
        "images": [{"id": i, "file_name": name} for i, name in enumerate(names)], "categories": [],
        "annotations": []}))
    found = [r.image for r in read_coco(tmp_path / "annotations" / "train.json")]
    assert found[:3] == [str(tmp_path / p) for p in ("JPEGImages/P0001.jpg", "images/P0002.png", "images/val/P0003.jpg")]
    assert not Path(found[3]).exists() and found[3].endswith("C:/HRSID/P0004.jpg")  # reported missing, as it is
    assert not Path(found[4]).exists()  # a relative path is never shortened to another folder's image


def test_yolo_images_without_a_label_file_are_empty_scenes_and_dota_reports_them(tmp_path):
    """Ultralytics: an image with no label file is a background image (no targets); one whose label
    file cannot be read is not (reported, never captioned "no targets"). DOTA has no such rule."""
    for name in ("a", "bad", "neg"):
        gray_image(tmp_path / "images" / "train" / f"{name}.jpg", 100, 100)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "labels" / "train" / "bad.txt").write_text("0 0.5 0.5\n")
    problems = []
    assert [(Path(r.image).name, len(r.objects), r.split) for r in read_yolo(tmp_path, {"0": "ship"}, problems)] == [
        ("a.jpg", 1, "train"), ("neg.jpg", 0, "train")]
    assert [kind for kind, _ in problems] == ["malformed annotation"]
    # Never a background image, whose caption "no targets" could be false: an image of a split shipped
    # without labels, a twin of a labelled image (x.png beside x.jpg), an image of a flat set.
    gray_image(tmp_path / "images" / "test" / "t.jpg")
    gray_image(tmp_path / "images" / "train" / "a.png")
    flat = tmp_path / "flat"
    gray_image(flat / "x.jpg")
    gray_image(flat / "preview.png")
    (flat / "x.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    assert [Path(r.image).name for r in read_yolo(tmp_path, {"0": "ship"})] == ["a.jpg", "neg.jpg"]
    assert [Path(r.image).name for r in read_yolo(flat, {"0": "ship"})] == ["x.jpg"]
    elsewhere = tmp_path / "elsewhere"  # labels in a folder not named labels/: each label's image is missing
    gray_image(elsewhere / "images" / "y.jpg")
    (elsewhere / "annotations").mkdir()
    (elsewhere / "annotations" / "y.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    problems = []
    assert read_yolo(elsewhere, {"0": "ship"}, problems) == [] and [k for k, _ in problems] == ["missing image"]
    dota = tmp_path / "dota"
    for name in ("x", "neg"):
        gray_image(dota / "images" / f"{name}.png")
    (dota / "labelTxt").mkdir()
    (dota / "labelTxt" / "x.txt").write_text("1 1 9 1 9 9 1 9 ship 0\n")
    problems = []
    assert [Path(r.image).name for r in read_dota(dota, problems=problems)] == ["x.png"]
    assert problems == [("images with no label file (left out)", f"{dota}: 1 images, e.g. images/neg.png")]


def test_read_yolo_rotated_boxes(tmp_path):
    """Ultralytics' OBB labels: four corners in fractions of the image; the box is their extent."""
    gray_image(tmp_path / "images" / "r.png", 200, 100)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "r.txt").write_text("0 0.1 0.2 0.3 0.1 0.35 0.3 0.15 0.4\n0 0.1 0.2 0.3 0.1 0.35 0.3 0.15\n")
    problems = []
    assert read_yolo(tmp_path, {"0": "ship"}, problems) == []  # seven numbers are no polygon: the file is reported
    assert problems[0][0] == "malformed annotation" and "r.txt" in problems[0][1]
    (tmp_path / "labels" / "r.txt").write_text("0 0.1 0.2 0.3 0.1 0.35 0.3 0.15 0.4\n")
    [record] = read_yolo(tmp_path, {"0": "ship"})
    [ship] = record.objects
    assert ship["box"] == pytest.approx([20.0, 10.0, 70.0, 40.0])
    assert ship["polygon"] == pytest.approx([20.0, 20.0, 60.0, 10.0, 70.0, 30.0, 30.0, 40.0])


def test_voc_in_chinese_encodings_reads_with_its_names(tmp_path):
    """Chinese annotation tools save VOC XML in GBK or GB2312, which the XML parser alone refuses, and
    a declaration may lie (UTF-8 bytes said to be GB2312 or Latin-1), name no known encoding, or be
    missing: each file reads, with the image file it names found. A file cut off is still reported,
    as malformed, not as an encoding problem."""
    gray_image(tmp_path / "JPEGImages" / "舰船_1.jpg")
    (tmp_path / "Annotations").mkdir()
    body = ("<annotation><folder>舰船</folder><filename>舰船_1.jpg</filename><object><name>ship</name>"
            "<bndbox><xmin>5</xmin><ymin>5</ymin><xmax>15</xmax><ymax>15</ymax></bndbox></object></annotation>")
    files = {"gbk": ('<?xml version="1.0" encoding="GBK"?>\n' + body).encode("gbk"),
             "lying": ('<?xml version="1.0" encoding="gb2312"?>\n' + body).encode("utf-8"),
             "lying_latin1": ('<?xml version="1.0" encoding="ISO-8859-1"?>\n' + body).encode("utf-8"),
             "unknown_name": ('<?xml version="1.0" encoding="no-such-code"?>\n' + body).encode("gbk"),
             "undeclared": body.encode("gb2312"),
             "utf16": ('<?xml version="1.0" encoding="utf-16"?>\n' + body).encode("utf-16")}
    for name, raw in files.items():
        (tmp_path / "Annotations" / f"{name}.xml").write_bytes(raw)
    (tmp_path / "Annotations" / "cut.xml").write_bytes(files["gbk"][:-20])
    problems = []
    records = read_voc(tmp_path, problems=problems)
    assert [r.image for r in records] == [str(tmp_path / "JPEGImages" / "舰船_1.jpg")] * len(files)
    assert all(r.objects[0]["box"] == [5.0, 5.0, 15.0, 15.0] for r in records)
    [(kind, where)] = problems
    assert kind == "malformed annotation" and "cut.xml" in where and "multi-byte" not in where
    for encoding in ("gbk", "utf-16"):  # a class list saved in GBK, or as Notepad's "Unicode"
        (tmp_path / "classes.txt").write_bytes("0 舰船\n1 ship\n".encode(encoding))
        assert annotations.read_class_list(tmp_path / "classes.txt") == {"0": "舰船", "1": "ship"}


def test_read_dota_polygons_and_gsd(tmp_path):
    gray_image(tmp_path / "images" / "r.png")
    (tmp_path / "labelTxt").mkdir()
    (tmp_path / "labelTxt" / "r.txt").write_text("imagesource:GF3\ngsd:0.5\n1 2 11 2 11 6 1 6 ship 0\n")
    [record] = read_dota(tmp_path)
    assert record.pixel_spacing == 0.5 and record.image == str(tmp_path / "images" / "r.png")
    assert record.objects == [{"category": "ship", "box": [1.0, 2.0, 11.0, 6.0],
                               "polygon": [1.0, 2.0, 11.0, 2.0, 11.0, 6.0, 1.0, 6.0]}]


def test_label_folders_linked_from_elsewhere_are_read(tmp_path):
    """Datasets are often assembled with symbolic links (labels/train -> a folder on another disk); a
    link back up the tree is followed once, not forever."""
    gray_image(tmp_path / "set" / "images" / "train" / "a.jpg", 100, 100)
    (tmp_path / "disk" / "labels_train").mkdir(parents=True)
    (tmp_path / "disk" / "labels_train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "set" / "labels").mkdir()
    (tmp_path / "set" / "labels" / "train").symlink_to(tmp_path / "disk" / "labels_train")
    (tmp_path / "disk" / "labels_train" / "up").symlink_to(tmp_path / "set")
    [record] = read_yolo(tmp_path / "set", {"0": "ship"})
    assert (record.image, record.split) == (str(tmp_path / "set" / "images" / "train" / "a.jpg"), "train")


def test_yolo_roboflow_export_reads_its_label_folders_not_its_readme_files(tmp_path):
    """A Roboflow YOLO export ships README.roboflow.txt and README.dataset.txt at its root, beside
    train/labels/ and valid/labels/: text files, but no labels (read as labels they were missing images)."""
    for split in ("train", "valid"):
        gray_image(tmp_path / split / "images" / "a.jpg", 100, 100)
        (tmp_path / split / "labels").mkdir()
        (tmp_path / split / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "README.roboflow.txt").write_text("This dataset was exported via roboflow.com\n")
    (tmp_path / "README.dataset.txt").write_text("# SAR ships > 2023\n")
    problems = []
    records = read_yolo(tmp_path, {"0": "ship"}, problems)
    assert sorted(r.split for r in records) == ["train", "val"] and problems == []
    (tmp_path / "flat").mkdir()  # a flat set (labels beside images, no label folder) still reads every .txt
    gray_image(tmp_path / "flat" / "b.jpg", 100, 100)
    (tmp_path / "flat" / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    assert [Path(r.image).name for r in read_yolo(tmp_path / "flat", {"0": "ship"})] == ["b.jpg"]


@pytest.mark.parametrize("image, label, split", [
    ("images/train/a.jpg", "labels/train/a.txt", "train"),  # Ultralytics: images/ and labels/, a folder per split
    ("valid/images/a.jpg", "valid/labels/a.txt", "val"),    # Roboflow's export: a folder per split, "valid" = val
    ("test/a.jpg", "test/a.txt", "test"),                   # images and labels side by side
    ("a.jpg", "a.txt", None),                               # no split folder: the project's hash decides
])
def test_yolo_and_dota_sets_find_their_images_and_keep_their_split(tmp_path, image, label, split):
    """A label file's image is its path with the last labels/ (DOTA: labelTxt/) read as images/, and a
    train/, val/, valid/ or test/ folder on the way is the release's own split."""
    gray_image(tmp_path / "yolo" / image, 100, 100)
    (tmp_path / "yolo" / label).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "yolo" / label).write_text("0 0.5 0.5 0.2 0.2\n")
    [record] = read_yolo(tmp_path / "yolo", {"0": "ship"})
    assert record.image == str(tmp_path / "yolo" / image) and record.objects[0]["box"] == [40.0, 40.0, 60.0, 60.0]
    assert record.split == split
    if split and Path(image).parts[0] != "images":  # pointed at the split's own folder, its name is the split
        assert [r.split for r in read_yolo(tmp_path / "yolo" / Path(image).parts[0], {"0": "ship"})] == [split]
    for labels in ("labelTxt", "labels"):  # DOTA's own layout, and SRSDD's
        gray_image(tmp_path / labels / "train" / "images" / "r.png")
        (tmp_path / labels / "train" / labels).mkdir(parents=True)
        (tmp_path / labels / "train" / labels / "r.txt").write_text("1 2 11 2 11 6 1 6 bulk-cargo 0\n")
        [record] = read_dota(tmp_path / labels)
        assert (record.image, record.split) == (str(tmp_path / labels / "train" / "images" / "r.png"), "train")
        assert record.objects[0]["category"] == "ship"
