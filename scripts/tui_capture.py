"""Run cuvae-tui in a detached tmux session of a given size and save what it shows as a PNG.

    python scripts/tui_capture.py 120x40 out.png --wait 20 -- --latent 2 --epochs 3 --runs /tmp/r

The capture (``tmux capture-pane -e -p``) keeps the colours; it is drawn cell by cell with Pillow
(half-blocks as two rectangles, so the digits look as they do in a terminal). A development tool.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
CW, CH = 9, 18
BASE = [(0, 0, 0), (205, 49, 49), (13, 188, 121), (229, 229, 16), (36, 114, 200), (188, 63, 188), (17, 168, 205),
        (229, 229, 229), (102, 102, 102), (241, 76, 76), (35, 209, 139), (245, 245, 67), (59, 142, 234),
        (214, 112, 214), (41, 184, 219), (255, 255, 255)]


def xterm(n: int):
    if n < 16:
        return BASE[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return steps[n // 36], steps[n // 6 % 6], steps[n % 6]
    v = 8 + 10 * (n - 232)
    return v, v, v


def parse(text: str):
    """Rows of (char, fg, bg) cells from ANSI text."""
    rows = []
    fg0, bg0 = (220, 220, 220), (12, 12, 12)
    for line in text.split("\n"):
        fg, bg, bold, row = fg0, bg0, False, []
        for m in re.finditer(r"\x1b\[([0-9;:]*)m|([^\x1b])", line):
            if m.group(2) is not None:
                row.append((m.group(2), fg, bg))
                continue
            codes = [int(c) if c else 0 for c in re.split("[;:]", m.group(1))] or [0]
            i = 0
            while i < len(codes):
                c = codes[i]
                if c == 0:
                    fg, bg = fg0, bg0
                elif c in (38, 48) and i + 1 < len(codes):
                    if codes[i + 1] == 2:
                        col = tuple(codes[i + 2:i + 5])
                        i += 4
                    else:
                        col = xterm(codes[i + 2])
                        i += 2
                    fg, bg = (col, bg) if c == 38 else (fg, col)
                elif 30 <= c <= 37:
                    fg = BASE[c - 30]
                elif 90 <= c <= 97:
                    fg = BASE[c - 90 + 8]
                elif 40 <= c <= 47:
                    bg = BASE[c - 40]
                elif 100 <= c <= 107:
                    bg = BASE[c - 100 + 8]
                elif c == 39:
                    fg = fg0
                elif c == 49:
                    bg = bg0
                i += 1
        rows.append(row)
    return rows


def render(text: str, cols: int, lines: int) -> Image.Image:
    font = ImageFont.truetype(FONT, 15)
    wide = ImageFont.truetype(FONT.replace("SansMono", "Sans"), 15)  # has the braille the plots use
    img = Image.new("RGB", (cols * CW, lines * CH), (12, 12, 12))
    d = ImageDraw.Draw(img)
    for y, row in enumerate(parse(text)[:lines]):
        x = 0
        for ch, fg, bg in row:
            if x >= cols:
                break
            box = (x * CW, y * CH, (x + 1) * CW - 1, (y + 1) * CH - 1)
            d.rectangle(box, fill=bg)
            if ch == "▀":
                d.rectangle((box[0], box[1], box[2], box[1] + CH // 2 - 1), fill=fg)
            elif ch == "▄":
                d.rectangle((box[0], box[1] + CH // 2, box[2], box[3]), fill=fg)
            elif ch == "█":
                d.rectangle(box, fill=fg)
            elif ch != " ":
                d.text((box[0], box[1]), ch, font=wide if "\u2800" <= ch <= "\u28ff" else font, fill=fg)
            x += 1
    return img


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("size", help="COLSxLINES, e.g. 120x40")
    p.add_argument("out", help="PNG to write")
    p.add_argument("--wait", type=float, default=15.0, help="seconds before the capture")
    p.add_argument("--keys", default="", help="tmux keys to send before capturing (space separated)")
    p.add_argument("--session", default="cuvae-capture")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    a, rest = p.parse_args(argv[:cut]), argv[cut + 1:]  # after --: cuvae-tui's arguments
    cols, lines = map(int, a.size.split("x"))
    cmd = " ".join(shlex.quote(x) for x in [sys.executable, "-m", "cuvae_tui", *rest])
    subprocess.run(["tmux", "kill-session", "-t", a.session], capture_output=True)
    subprocess.run(["tmux", "new-session", "-d", "-s", a.session, "-x", str(cols), "-y", str(lines),
                    "env TERM=xterm-256color COLORTERM=truecolor " + cmd + "; echo exit code $?; sleep 600"], check=True)
    try:
        time.sleep(a.wait)
        for k in a.keys.split():
            subprocess.run(["tmux", "send-keys", "-t", a.session, k], check=True)
            time.sleep(1.5)
        text = subprocess.run(["tmux", "capture-pane", "-e", "-p", "-t", a.session], capture_output=True,
                              text=True, check=True).stdout
    finally:
        subprocess.run(["tmux", "send-keys", "-t", a.session, "q"], capture_output=True)
        time.sleep(2)
        subprocess.run(["tmux", "kill-session", "-t", a.session], capture_output=True)
    render(text, cols, lines).save(a.out)
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
