"""Rendering steps on known arrays, exact where the arithmetic is exact, and against pydicom's LUTs."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_voi_lut, convert_color_space

from ahi_pipeline.render import (
    FrameDescription,
    RenderError,
    SegmentedLUT,
    area_resize,
    expand_segmented_lut,
    modality_lut,
    palette_to_rgb,
    render,
    robust_window,
    stored_values,
    to_uint8,
    voi_lut,
    ybr_full_to_rgb,
)

pytestmark = pytest.mark.unit


def test_stored_values_mask_the_unused_high_bits_and_sign_extend() -> None:
    # Given 12-bit samples in 16-bit words, with garbage in the top four bits
    raw = np.array([0xF000 | 0x0FFF, 0x0800, 0x07FF, 0x0000], dtype=np.uint16)
    # When read unsigned, then signed
    unsigned = stored_values(raw, 12, 0)
    signed = stored_values(raw, 12, 1)
    # Then only the 12 bits count, and the sign bit extends
    assert unsigned.tolist() == [4095, 2048, 2047, 0]
    assert signed.tolist() == [-1, -2048, 2047, 0]


def test_the_modality_lut_rescales() -> None:
    assert modality_lut(np.array([0, 1000, 2000]), 2.0, -1024.0).tolist() == [-1024.0, 976.0, 2976.0]


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_the_voi_lut_matches_pydicoms_normalized(function: str) -> None:
    # Given 16-bit unsigned values and a window
    values = np.arange(0, 4096, 7, dtype=np.uint16)
    ds = Dataset()
    ds.BitsStored, ds.PixelRepresentation, ds.PhotometricInterpretation = 16, 0, "MONOCHROME2"
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 1500, 800, function
    # When windowed by pydicom (output 0..65535) and here (output 0..1)
    reference = apply_voi_lut(values, ds).astype(np.float64) / 65535.0
    ours = voi_lut(values, 1500.0, 800.0, function)
    # Then they agree
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_linear_window_edges_follow_ps3_3() -> None:
    # Given center 100 and width 11: 0 at or below 94.5, 1 above 104.5
    values = np.array([94.0, 94.5, 95.0, 99.5, 104.5, 105.0])
    out = voi_lut(values, 100.0, 11.0, "LINEAR")
    assert out.tolist() == pytest.approx([0.0, 0.0, 0.05, 0.5, 1.0, 1.0])


def test_a_bad_window_or_function_is_refused() -> None:
    with pytest.raises(RenderError):
        voi_lut(np.zeros(3), 0.0, 0.5, "LINEAR")
    with pytest.raises(RenderError):
        voi_lut(np.zeros(3), 0.0, 10.0, "CUBIC")


def test_the_robust_window_spans_the_central_percentiles() -> None:
    values = np.arange(10001, dtype=np.float64)
    center, width = robust_window(values)
    assert (center, width) == pytest.approx((5000.0, 9900.0))
    assert robust_window(np.full(10, 7.0)) == (7.5, 1.0)


def test_to_uint8_rounds_and_clips() -> None:
    assert to_uint8(np.array([-0.2, 0.0, 0.5, 1.0, 1.7])).tolist() == [0, 0, 128, 255, 255]


def test_ybr_full_matches_pydicoms_conversion() -> None:
    rng = np.random.default_rng(3)
    ybr = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    reference = convert_color_space(ybr, "YBR_FULL", "RGB").astype(np.int64)
    ours = ybr_full_to_rgb(ybr).astype(np.int64)
    assert np.abs(ours - reference).max() <= 1


def test_palette_colour_maps_through_the_three_luts() -> None:
    # Given a 4-entry palette starting at index 10, 8 bits per entry
    descriptor = [4, 10, 8]
    tables = [[0, 85, 170, 255], [255, 170, 85, 0], [0, 0, 255, 255]]
    indices = np.array([[10, 11], [12, 200]])
    rgb = palette_to_rgb(indices, [descriptor] * 3, tables)
    assert rgb.tolist() == [[[0, 255, 0], [85, 170, 0]], [[170, 85, 255], [255, 0, 255]]]
    with pytest.raises(RenderError):
        palette_to_rgb(indices, [descriptor] * 3, [[0, 1], tables[1], tables[2]])


def test_palette_lut_data_as_the_metadata_holds_it_base64_of_the_ow_value() -> None:
    # Given the LUT data as base64 text of little-endian 16-bit words (the metadata's bulk VRs), and of
    # bytes when the table is half as long as two bytes per entry
    descriptor = [4, 0, 16]
    words = np.array([0, 1000, 40000, 65535], "<u2").tobytes()
    bytes_ = np.array([0, 10, 200, 255], "<u1").tobytes()
    tables = [base64.b64encode(words).decode()] * 2 + [base64.b64encode(bytes_).decode()]
    rgb = palette_to_rgb(np.array([[0, 1, 2, 3]]), [descriptor] * 3, tables)
    assert rgb[0].tolist() == [[0, 0, 0], [1000, 1000, 10], [40000, 40000, 200], [65535, 65535, 255]]
    # … and text that is not base64 is refused
    with pytest.raises(RenderError, match="usable lookup table"):
        palette_to_rgb(np.array([[0]]), [descriptor] * 3, ["not base64!", *tables[1:]])


def test_a_segmented_lut_expands_its_discrete_linear_and_indirect_segments() -> None:
    # Given segments of PS3.3 C.7.9.2: discrete [0, 10], linear to 40 in 3 steps, linear to 41 in 2,
    # then an indirect segment repeating the 2 segments at byte offset 0 (the discrete and the first
    # linear: the linear one continues from the last entry, 41)
    words = [0, 2, 0, 10, 1, 3, 40, 1, 2, 41, 2, 2, 0, 0]
    # When expanded, then every entry is exact (41 + (40 - 41) * i / 3 rounds to 41, 40, 40)
    assert expand_segmented_lut(words).tolist() == [0, 10, 20, 30, 40, 40, 41, 0, 10, 20, 30, 40]
    # (a trailing pad word is ignored)
    assert expand_segmented_lut([0, 1, 7, 0]).tolist() == [7]


@pytest.mark.parametrize(
    ("words", "message"),
    [
        pytest.param([1, 2, 10], "starts with a linear segment", id="linear-first"),
        pytest.param([0, 5, 1, 2], "ends inside a segment", id="discrete-past-the-end"),
        pytest.param([0, 1, 7, 1, 2], "ends inside a segment", id="linear-without-y1"),
        pytest.param([0, 1, 7, 3, 1, 0], "unsupported segment type 3", id="unknown-opcode"),
        pytest.param([0, 1, 7, 1, 65535, 9, 1, 1, 0], "more than 65536 entries", id="too-long"),
        pytest.param(
            [0, 1, 7, 1, 60000, 9, 2, 65535, 0, 0], "more than 65536 entries", id="indirect-repeats-too-many"
        ),
        pytest.param([0, 1, 7, 2, 1, 12, 0], "outside the segments before it", id="indirect-forward"),
        pytest.param(
            [0, 1, 7, 2, 1, 0, 0, 2, 1, 6, 0], "unsupported segment type 2", id="indirect-of-indirect"
        ),
    ],
)
def test_a_malformed_segmented_lut_is_refused_saying_why(words: list[int], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        expand_segmented_lut(words)


def test_palette_colour_through_segmented_luts_when_the_plain_ones_are_absent() -> None:
    # Given metadata with Segmented Red/Green/Blue Palette Color LUT Data only (as base64 of the OW value)
    def segmented(*words: int) -> str:
        return base64.b64encode(np.array(words, "<u2").tobytes()).decode()

    dicom = {
        "PhotometricInterpretation": "PALETTE COLOR",
        "BitsAllocated": 8,
        "BitsStored": 8,
        **{f"{c}PaletteColorLookupTableDescriptor": [5, 0, 16] for c in ("Red", "Green", "Blue")},
        "SegmentedRedPaletteColorLookupTableData": segmented(0, 1, 0, 1, 4, 65535),
        "SegmentedGreenPaletteColorLookupTableData": segmented(0, 5, 9, 9, 9, 9, 9),
        "SegmentedBluePaletteColorLookupTableData": segmented(0, 1, 65535, 1, 4, 0),
    }
    frame = FrameDescription.from_metadata(dicom)
    assert isinstance(frame.palette, tuple)
    assert isinstance(frame.palette[3], SegmentedLUT)

    # When indices are looked up, then through the expanded tables
    rgb = palette_to_rgb(np.array([[0, 2, 4]]), frame.palette[:3], frame.palette[3:])
    assert rgb[0].tolist() == [[0, 9, 65535], [32768, 9, 32768], [65535, 9, 0]]
    # … and 8-bit segmented tables are refused by name
    with pytest.raises(RenderError, match="8-bit entries"):
        palette_to_rgb(np.array([[0]]), [[5, 0, 8]] * 3, frame.palette[3:])


def test_rgb_samples_are_scaled_by_their_own_bits_stored() -> None:
    # Given 32-bit RGB samples at the top, the middle and the bottom of their range
    pixels = np.array([[[2**32 - 1] * 3, [2**31] * 3, [0] * 3]], np.uint32)
    frame = FrameDescription("RGB", samples_per_pixel=3, bits_allocated=32, bits_stored=32)
    assert render(pixels, frame, 256).image[0].tolist() == [[255] * 3, [128] * 3, [0] * 3]


def test_area_resize_averages_exact_areas() -> None:
    # 4×4 → 2×2: means of 2×2 blocks
    image = np.arange(16, dtype=np.float64).reshape(4, 4)
    assert area_resize(image, 2).tolist() == [[2.5, 4.5], [10.5, 12.5]]
    # 3×1 → 2×1: pixels weighted by the area each output pixel covers (1.5 input pixels)
    column = np.array([[0.0], [3.0], [6.0]])
    np.testing.assert_allclose(area_resize(column, 2), [[1.0], [5.0]])
    # never enlarges, keeps the mean, keeps colour channels
    assert area_resize(image, 10).shape == (4, 4)
    colour = np.stack([image, image * 2, image * 3], axis=-1)
    small = area_resize(colour, 2)
    assert small.shape == (2, 2, 3)
    assert small.mean() == pytest.approx(colour.mean())


def test_monochrome1_is_inverted_and_the_window_comes_from_the_metadata() -> None:
    frame = FrameDescription.from_metadata(
        {
            "PhotometricInterpretation": "MONOCHROME1",
            "BitsAllocated": 16,
            "BitsStored": 12,
            "WindowCenter": ["2048", "100"],
            "WindowWidth": ["4096", "50"],
        }
    )
    pixels = np.array([[0, 4095]], dtype=np.uint16)
    rendered = render(pixels, frame)
    assert rendered.image.tolist() == [[255, 0]]
    assert (rendered.window, rendered.window_source) == ((2048.0, 4096.0), "metadata")


def test_without_a_window_the_percentiles_decide() -> None:
    frame = FrameDescription.from_metadata({"PhotometricInterpretation": "MONOCHROME2", "BitsStored": 16})
    pixels = np.tile(np.arange(1000, dtype=np.uint16), (4, 1))
    rendered = render(pixels, frame, longest=1000)
    assert rendered.window_source == "percentiles"
    assert rendered.image[0, 0] == 0
    assert rendered.image[0, -1] == 255


def test_signed_ct_values_are_rescaled_before_windowing() -> None:
    # Given signed stored values with a rescale to HU and a soft-tissue window
    frame = FrameDescription.from_metadata(
        {
            "PhotometricInterpretation": "MONOCHROME2",
            "BitsAllocated": 16,
            "BitsStored": 16,
            "PixelRepresentation": 1,
            "RescaleSlope": "1",
            "RescaleIntercept": "-1024",
            "WindowCenter": "40",
            "WindowWidth": "401",
        }
    )
    pixels = np.array([[-2000, 1064, 1264, 3000]], dtype=np.int16)
    rendered = render(pixels, frame, longest=4)
    assert rendered.image.tolist() == [[0, 128, 255, 255]]


def test_colour_frames_are_converted_and_unsupported_ones_refused() -> None:
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    out = render(rgb, FrameDescription(photometric="RGB", samples_per_pixel=3, bits_stored=8)).image
    assert out[..., 0].tolist() == [[255, 255], [255, 255]]
    with pytest.raises(RenderError, match="not supported"):
        render(rgb, FrameDescription(photometric="HSV"))
    # YBR samples are converted only when they are still YBR (an HTJ2K frame is decoded as RGB)
    ybr = np.full((1, 1, 3), 128, dtype=np.uint8)
    ybr[..., 0] = 200
    as_rgb = render(ybr, FrameDescription(photometric="YBR_FULL_422", bits_stored=8)).image
    converted = render(
        ybr, FrameDescription(photometric="YBR_FULL", bits_stored=8, decoded_as_rgb=False)
    ).image
    assert as_rgb.tolist() == [[[200, 128, 128]]]
    assert converted.tolist() == [[[200, 200, 200]]]
