"""rasters.py: SAR pixels from any file a release ships (8-bit, high dynamic range, TIFF of any sample
type, MSTAR's own format), in bounded memory."""
import re

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import chips
from rasters import (SARDataError, image_size, load_sar_image, raster_kind, read_mstar, read_tiff, redisplay,
                     unit_range)


def saved(tmp_path, image, name="x.tif"):
    image.save(tmp_path / name)
    return tmp_path / name


def intensity_ramp():
    """Intensities 1 to 10,000, evenly spaced in log10 (0 to 4) over 101 x 101 pixels."""
    return np.logspace(0, 4, 101 * 101).reshape(101, 101)


def test_8bit_and_rgb_gray_are_divided_by_255(tmp_path):
    gray = load_sar_image(saved(tmp_path, Image.new("L", (5, 4), 51), "g.png"))
    rgb = load_sar_image(saved(tmp_path, Image.new("RGB", (5, 4), (51, 51, 51)), "c.png"), channels=3)
    assert gray.shape == (1, 4, 5) and gray.dtype == torch.float32 and torch.allclose(gray, torch.full_like(gray, 0.2))
    assert rgb.shape == (3, 4, 5) and torch.allclose(rgb, torch.full_like(rgb, 0.2))


def test_an_8bit_tiff_alpha_sample_is_no_colour(tmp_path):
    """Gray + alpha and RGBA TIFFs read as their gray, as the same picture saved as PNG does."""
    gray = np.full((4, 5), 51, np.uint8)
    opaque = np.full((4, 5), 255, np.uint8)
    tifffile.imwrite(tmp_path / "ga.tif", np.stack([gray, opaque], -1), photometric="minisblack", extrasamples=["unassalpha"])
    tifffile.imwrite(tmp_path / "rgba.tif", np.stack([gray, gray, gray, opaque], -1), photometric="rgb",
                     extrasamples=["unassalpha"])
    for name in ("ga.tif", "rgba.tif"):
        assert torch.allclose(load_sar_image(tmp_path / name), torch.full((1, 4, 5), 0.2)), name
    tifffile.imwrite(tmp_path / "pol.tif", np.stack([gray, opaque, opaque], -1), photometric="minisblack",
                     planarconfig="contig")  # 8-bit bands of a SAR product, not colour: band 0
    assert torch.allclose(load_sar_image(tmp_path / "pol.tif"), torch.full((1, 4, 5), 0.2))


def test_redisplay_shows_amplitude_as_intensity_and_keeps_the_order():
    amplitude = torch.tensor([[[0.0, 0.25, 0.5, 0.8]]])  # [1, 1, 4]
    assert redisplay(amplitude, 1, 1) is amplitude  # as stored
    assert torch.allclose(redisplay(amplitude, 2, 1), torch.tensor([[[0.0, 0.0625, 0.25, 0.64]]]))  # squared
    assert torch.allclose(redisplay(amplitude, 0.5, 2), torch.tensor([[[0.0, 1.0, 1.0, 1.0]]]))  # 2 sqrt(x), capped
    assert torch.all(redisplay(amplitude, 0.7, 1.3).diff() >= 0)  # what was brighter is not darker


def test_redisplay_in_decibels_stretches_as_a_float_raster_is_read():
    magnitude = torch.tensor([[[0.0, 0.01, 0.1, 1.0]]])  # [1, 1, 4]: zero, then one decade apart
    # log10: -2 (a zero is the darkest real value), -2, -1, 0; 1st and 99th percentiles -2 and -0.03
    in_db = redisplay(magnitude, 1, 1, db=True)
    assert torch.allclose(in_db, torch.tensor([[[0.0, 0.0, 1 / 1.97, 1.0]]]))
    assert torch.allclose(redisplay(magnitude, 2, 1, db=True), in_db ** 2)  # the gamma and gain come after
    assert torch.allclose(redisplay(magnitude * 7, 1, 1, db=True), in_db)  # a calibration gain is stretched away


def with_a_few_negatives(intensity):
    """Linear data as noise subtraction or resampling leaves it: five pixels a little below zero."""
    values = intensity.copy()
    values[0, :5] = -1e-4
    return values


@pytest.mark.parametrize("kind", ["uint16 intensity", "int32 intensity", "float intensity", "uint16 amplitude",
                                  "float dB", "float intensity, a few negatives"])
def test_high_dynamic_range_goes_to_log_scale_and_percentiles(tmp_path, kind):
    intensity = intensity_ramp()
    values = {"uint16 intensity": lambda: Image.fromarray(intensity.round().astype(np.uint16)),
              "int32 intensity": lambda: Image.fromarray(intensity.round().astype(np.int32)),
              "float intensity": lambda: Image.fromarray(intensity.astype(np.float32)),
              "uint16 amplitude": lambda: Image.fromarray((100 * np.sqrt(intensity)).astype(np.uint16)),
              "float dB": lambda: Image.fromarray((10 * np.log10(intensity) - 30).astype(np.float32)),
              "float intensity, a few negatives": lambda: Image.fromarray(with_a_few_negatives(intensity).astype(np.float32)),
              }[kind]()
    pixels = load_sar_image(saved(tmp_path, values))[0].numpy()
    assert pixels.min() == 0 and pixels.max() == 1   # 1st and 99th percentiles stretched to 0 and 1
    # Intensity 100 is halfway between 1 and 10,000 on a log scale, whether stored as intensity,
    # amplitude (its square root) or dB (-10 dB here, not logged again).
    assert pixels[50, 50] == pytest.approx(0.5, abs=0.01)


def test_nan_and_inf_pixels(tmp_path):
    values = np.linspace(-30, 0, 100, dtype=np.float32).reshape(10, 10)
    values[0, 0], values[0, 1], values[0, 2] = np.nan, np.inf, -np.inf
    pixels = load_sar_image(saved(tmp_path, Image.fromarray(values)))[0]
    assert pixels[0, :3].tolist() == [0.0, 1.0, 0.0] and torch.isfinite(pixels).all()


def test_unreadable_image_names_the_file(tmp_path):
    whole = saved(tmp_path, Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)), "a.png")
    (tmp_path / "cut.png").write_bytes(whole.read_bytes()[:2000])  # a valid header, half the pixels
    with pytest.raises(SARDataError, match="cut.png"):
        load_sar_image(tmp_path / "cut.png")


def test_max_side_shrinks_big_images(tmp_path):
    path = saved(tmp_path, Image.new("L", (1000, 600), 128), "big.jpg")
    assert load_sar_image(path, max_side=100).shape == (1, 60, 100)    # decoded at 1/8 (125 x 75), averaged
    path = saved(tmp_path, Image.fromarray(np.ones((600, 1000), np.uint16)), "big.tif")
    assert load_sar_image(path, max_side=300).shape == (1, 180, 300)


def tiff(path, values, **options):
    """Write values as a TIFF with tifffile (tile=, compression=, planarconfig= ...); returns the path."""
    tifffile.imwrite(path, values, **options)
    return path


def test_complex_slc_becomes_amplitude(tmp_path):
    """Single-look complex data I + jQ is read as its amplitude |I + jQ|, then logged and stretched."""
    iq = np.array([[3 + 4j, 6 - 8j], [0 + 1j, -5 + 12j]], np.complex64)
    pixels, high_dynamic_range = read_tiff(tiff(tmp_path / "slc.tif", iq))
    assert np.allclose(pixels, [[5, 10], [1, 13]]) and high_dynamic_range
    assert torch.equal(load_sar_image(tmp_path / "slc.tif")[0], torch.from_numpy(unit_range(pixels)))


def test_complex_int16_as_capella_ships_it(tmp_path):
    """Complex int16 (TIFF SampleFormat 5, 32 bits: I then Q, each int16), as Capella's SLC GeoTIFFs."""
    i, q = np.array([[3, -6], [0, 300]], np.int16), np.array([[4, 8], [-1, 400]], np.int16)
    packed = (i.astype(np.uint16).astype(np.uint32) | q.astype(np.uint16).astype(np.uint32) << 16).view(np.int32)
    with tifffile.TiffFile(tiff(tmp_path / "cint16.tif", packed), mode="r+b") as tif:
        tif.pages.first.tags["SampleFormat"].overwrite(5)  # numpy has no complex int16: mark it as one
    assert read_tiff(tmp_path / "cint16.tif")[0].tolist() == [[5, 10], [1, 500]]


def test_float64_and_unsupported_sample_types(tmp_path):
    values = intensity_ramp()  # float64
    assert torch.equal(load_sar_image(tiff(tmp_path / "f64.tif", values)),
                       load_sar_image(tiff(tmp_path / "f32.tif", values.astype(np.float32))))
    with pytest.raises(SARDataError, match=r"bits\.tif: TIFF sample type .* 1-bit is not supported"):
        load_sar_image(tiff(tmp_path / "bits.tif", np.eye(8, dtype=bool)))


def test_dual_pol_reads_the_first_band(tmp_path):
    vv, vh = intensity_ramp(), intensity_ramp()[::-1] / 10
    planar = tiff(tmp_path / "planar.tif", np.stack([vv, vh]).astype(np.float32), planarconfig="separate")
    interleaved = tiff(tmp_path / "contig.tif", np.stack([vv, vh], -1).astype(np.float32), planarconfig="contig")
    assert np.array_equal(read_tiff(planar)[0], vv.astype(np.float32))
    assert np.array_equal(read_tiff(interleaved)[0], vv.astype(np.float32))
    rgb_gray = tiff(tmp_path / "rgb.tif", np.full((4, 5, 3), 51, np.uint8), photometric="rgb")
    assert read_tiff(rgb_gray)[0].tolist() == np.full((4, 5), 0.2, np.float32).tolist()  # 8-bit: mean / 255


@pytest.mark.parametrize("layout", [{"tile": (64, 64), "compression": "zlib"}, {"rowsperstrip": 7},
                                    {"compression": "lzw", "predictor": True}])
def test_max_side_multilooks_while_reading(tmp_path, layout):
    """600 x 300 with max_side 100: looks of 6 x 6 pixels, each cell the mean of its 36 (tiled and
    compressed, or uncompressed and memory-mapped: the same numbers)."""
    values = np.random.default_rng(0).integers(1, 60_000, (600, 300)).astype(np.uint16)
    pixels, _ = read_tiff(tiff(tmp_path / "big.tif", values, **layout), max_side=100)
    assert pixels.shape == (100, 50)
    assert np.allclose(pixels, values.reshape(100, 6, 50, 6).mean(axis=(1, 3)), rtol=1e-6)
    odd, _ = read_tiff(tmp_path / "big.tif", max_side=77)  # looks of 7, then a last area average
    assert odd.shape == (77, 38) and abs(odd.mean() - values.mean()) < 0.01 * values.mean()


def test_no_data_stays_out_of_the_looks(tmp_path):
    values = np.array([[0, 0, 10, 20], [0, 0, np.nan, 30], [1, 2, 3, 4], [5, 6, 7, 8]], np.float32)
    pixels, _ = read_tiff(tiff(tmp_path / "border.tif", values), max_side=2)
    assert np.isnan(pixels[0, 0]) and pixels[0, 1] == 20 and pixels[1].tolist() == [3.5, 5.5]
    assert load_sar_image(tmp_path / "border.tif", max_side=2)[0, 0, 0] == 0  # no data at all: darkest


def test_a_big_tiff_is_read_in_bounded_memory(tmp_path):
    """A 4096 x 4096 uint16 scene (32 MiB; 64 MiB as float32) read at max_side 256, tiled and
    compressed, or uncompressed: Python-side memory stays at a few blocks, never the whole image."""
    import tracemalloc
    band = np.tile(np.arange(1, 4097, dtype=np.uint16), (256, 1))  # 256 rows; written a segment at a time
    tiles = lambda: (band[:, x:x + 256] for _ in range(16) for x in range(0, 4096, 256))
    for name, segments, layout in (("tiled.tif", tiles(), {"tile": (256, 256), "compression": "zlib"}),
                                   ("striped.tif", (band for _ in range(16)), {"rowsperstrip": 256})):
        tifffile.imwrite(tmp_path / name, segments, shape=(4096, 4096), dtype=np.uint16, **layout)
        tracemalloc.start()
        pixels, _ = read_tiff(tmp_path / name, max_side=256)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert pixels.shape == (256, 256) and pixels[0, :2].tolist() == [8.5, 24.5]  # means of 16 x 16 looks
        assert peak < 12 * 2 ** 20, f"{name}: {peak / 2 ** 20:.0f} MiB"


# ---- MSTAR's own format: a Phoenix header, then big-endian magnitude and phase -------------------------

def mstar_file(path, magnitude, native_header=0):
    """Write magnitude [rows, cols] as MSTAR ships it: the Phoenix text header, a native header of that
    many bytes (fullscenes), then magnitude and phase, big-endian; float32 for chips, uint16 otherwise."""
    rows, cols = magnitude.shape
    dtype = ">f4" if native_header == 0 else ">u2"

    def header(length):
        return (f"[PhoenixHeaderVer01.04]\nPhoenixHeaderLength= {length:06d}\nnative_header_length= {native_header}\n"
                f"NumberOfColumns= {cols}\nNumberOfRows= {rows}\nTargetType= t72_tank\n[EndofPhoenixHeader]\n").encode()
    phase = np.full((rows, cols), 7, dtype)  # read by nobody: a wrong offset would show it
    path.write_bytes(header(len(header(0))) + b"\xff" * native_header + magnitude.astype(dtype).tobytes() + phase.tobytes())
    return path


def test_an_mstar_chip_reads_its_float_magnitude(tmp_path):
    magnitude = np.arange(1, 13, dtype=np.float32).reshape(3, 4) / 7  # 3 rows, 4 columns
    path = mstar_file(tmp_path / "HB03333.015", magnitude)
    assert raster_kind(path) == "mstar" and image_size(path) == (4, 3)
    pixels, high_dynamic_range = read_mstar(path)
    assert high_dynamic_range and np.array_equal(pixels, magnitude)
    assert torch.equal(load_sar_image(path)[0], torch.from_numpy(unit_range(magnitude)))  # logged, stretched


def test_an_mstar_header_with_windows_line_ends_and_no_native_header_length(tmp_path):
    magnitude = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    path = mstar_file(tmp_path / "HB03333.015", magnitude)
    text, body = path.read_bytes().split(b"[EndofPhoenixHeader]\n")
    text = text.replace(b"native_header_length= 0\n", b"").replace(b"\n", b"\r\n") + b"[EndofPhoenixHeader]\r\n"
    length = len(text)  # the length field keeps its width: six digits
    path.write_bytes(re.sub(rb"PhoenixHeaderLength= \d+", b"PhoenixHeaderLength= %06d" % length, text) + body)
    assert np.array_equal(read_mstar(path)[0], magnitude)


def test_an_mstar_fullscene_skips_its_native_header_and_reads_uint16(tmp_path):
    magnitude = np.arange(40 * 60, dtype=np.uint16).reshape(40, 60)
    path = mstar_file(tmp_path / "HB06158.000", magnitude, native_header=512)
    assert np.array_equal(read_mstar(path)[0], magnitude.astype(np.float32))
    shrunk, _ = read_mstar(path, max_side=30)  # averaged down to the longer side, like any scene
    assert shrunk.shape == (20, 30) and shrunk[0, 0] == magnitude[:2, :2].mean()


def test_a_cut_short_mstar_file_names_the_file(tmp_path):
    path = mstar_file(tmp_path / "HB03333.015", np.ones((8, 8), np.float32))
    path.write_bytes(path.read_bytes()[:-300])  # the phase block gone, and part of the magnitude
    with pytest.raises(SARDataError, match=r"HB03333\.015: cut short"):
        load_sar_image(path)
    with pytest.raises(SARDataError, match="cut short"):
        image_size(path)
    path.write_bytes(path.read_bytes().replace(b"NumberOfRows= 8", b"NumberOfRows= ?"))
    with pytest.raises(SARDataError, match="has no number for NumberOfRows"):
        load_sar_image(path)
    path.write_bytes(path.read_bytes().replace(b"NumberOfRows= ?", b"NumberOfRows= 0"))
    with pytest.raises(SARDataError, match="0 rows and 8 columns"):
        image_size(path)


def test_mstar_files_are_chips_by_content_not_extension(tmp_path):
    t72 = tmp_path / "TEST" / "T72" / "SN_132"
    t72.mkdir(parents=True)
    for name in ("HB03333.015", "HB03334.015", "HB03335.016"):
        mstar_file(t72 / name, np.ones((8, 8), np.float32))
    (t72 / "notes.001").write_text("not an image")  # a number for extension, no Phoenix header: left out
    assert [p.name for p in chips.chip_files(tmp_path / "TEST" / "T72")] == ["HB03333.015", "HB03334.015", "HB03335.016"]
    records = chips.read_chips(tmp_path / "TEST")
    assert [(r.width, r.height, r.objects[0]["category"]) for r in records] == [(8, 8, "T72")] * 3
