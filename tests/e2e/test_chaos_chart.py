"""`ballast chaos run --chart`: the SVG timeline renders in a real browser (headless Chromium, Debian's
`chromium` package, installed by scripts/test.sh) into a picture that is not blank, with the elements
a reader needs: three panels, both series, fault windows and incident marks."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Decodes an 8-bit RGB/RGBA PNG (what Chromium writes) into rows of pixel bytes."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), f"unexpected PNG format {depth}/{color}"
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    i = 0
    for _ in range(height):
        f, line = raw[i], bytearray(raw[i + 1 : i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - channels] if x >= channels else 0
            b = prev[x]
            c = prev[x - channels] if x >= channels else 0
            if f == 1:
                line[x] = (line[x] + a) & 0xFF
            elif f == 2:
                line[x] = (line[x] + b) & 0xFF
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, channels, rows


@pytest.mark.timeout(120)
def test_chaos_chart_renders_in_chromium(ballast_bin: str, tmp_path: Path):
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (scripts/test.sh installs Debian's chromium package)")
    svg, report = tmp_path / "outage.svg", tmp_path / "outage.json"
    run = subprocess.run(
        [ballast_bin, "chaos", "run", "outage-2026-06-02", "--quick", "--chart", str(svg), "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    text = svg.read_text()
    assert text.count('class="panel"') == 3
    for cls in ("fault-window", "incident", "series with-ballast", "series without-ballast"):
        assert f'class="{cls}"' in text, cls

    png = tmp_path / "chart.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--window-size=960,720",
            f"--screenshot={png}",
            svg.as_uri(),
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    width, channels, rows = png_pixels(png)
    assert width == 960
    pixels = [row[x : x + 3] for row in rows for x in range(0, len(row), channels)]
    non_white = sum(1 for p in pixels if p != b"\xff\xff\xff")
    assert non_white > len(pixels) * 0.05, f"the chart looks blank: {non_white} of {len(pixels)} pixels drawn"

    def near(p: bytes, rgb: tuple[int, int, int]) -> bool:
        return all(abs(p[i] - rgb[i]) <= 24 for i in range(3))

    # The series' colours and the shaded fault windows are on the picture.
    assert sum(1 for p in pixels if near(p, (0x1F, 0x77, 0xB4))) > 200, "no 'with Ballast' line drawn"
    assert sum(1 for p in pixels if near(p, (0xD6, 0x27, 0x28))) > 100, "no 'without Ballast' line drawn"
    assert sum(1 for p in pixels if near(p, (0xF8, 0xD0, 0xBC))) > 1000, "no fault window shaded"
