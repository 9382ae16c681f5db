"""Render a report document (a list of blocks, see lora.report.content) as Markdown or as one HTML file.

Blocks are plain tuples so content and presentation stay apart:
  ("h", level, text)                 heading
  ("p", text)                        paragraph
  ("verdict", text, verdict)         the headline sentence, coloured by verdict
  ("table", headers, rows, classes)  rows of strings; classes: one CSS class per row ("" for none)
  ("img", filename, alt)             a PNG written next to the report

All text arrives raw (transcripts are model output and may hold `<`, `&`, `|`...); escaping
happens here and only here.
"""

from __future__ import annotations

import base64
import html
import re

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#222;max-width:1150px;
  margin:24px auto;padding:0 16px;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em;word-break:break-all}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #d5d8dc;padding:4px 8px;
  text-align:left;vertical-align:top}th{background:#f2f4f4}td{word-break:break-word}td:first-child{white-space:nowrap}
tr.worse td{background:#fdedec}tr.better td{background:#eafaf1}
.verdict{font-size:1.3em;font-weight:600;padding:10px 14px;border-radius:6px;border-left:6px solid #7f8c8d;
  background:#f4f6f6}.verdict.improved{border-color:#1e8449;background:#eafaf1}
.verdict.worse{border-color:#c0392b;background:#fdedec}
img{max-width:100%;border:1px solid #eee}
"""

MD_SPECIAL = re.compile(r"([\\`*<>|&])")
MD_LONE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def md_escape(text: str) -> str:
    """Backslash-escape what Markdown would act on; intraword `_` (snake_case ids, paths) is left alone."""
    text = " ".join(str(text).split())  # a newline would end a table row
    return MD_LONE_UNDERSCORE.sub(r"\_", MD_SPECIAL.sub(r"\\\1", text))


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(map(md_escape, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(blocks: list[tuple]) -> str:
    """GitHub-flavoured Markdown; images are referenced by relative file name."""
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append("#" * block[1] + " " + md_escape(block[2]))
        elif kind == "p":
            out.append(md_escape(block[1]))
        elif kind == "verdict":
            out.append(f"**{md_escape(block[1])}**")
        elif kind == "table":
            out.extend(_md_table(block[1], block[2]))
        elif kind == "img":
            out.append(f"![{md_escape(block[2])}]({block[1]})")
        out.append("")
    return "\n".join(out)


def _html_table(headers: list[str], rows: list[list[str]], classes: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row, cls in zip(rows, classes):
        attr = f' class="{html.escape(cls)}"' if cls else ""
        body.append(f"<tr{attr}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(blocks: list[tuple], title: str, images: dict[str, bytes]) -> str:
    """One self-contained page: inline CSS, PNGs embedded as base64 data URIs (see lora.report.content)."""
    parts = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            parts.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "verdict":
            cls = re.sub(r"[^a-z]+", "-", str(block[2]).lower())
            parts.append(f'<p class="verdict {cls}">{html.escape(block[1])}</p>')
        elif kind == "table":
            parts.append(_html_table(block[1], block[2], block[3]))
        elif kind == "img":
            src = _data_uri(images[block[1]]) if block[1] in images else html.escape(block[1])
            parts.append(f'<p><img src="{src}" alt="{html.escape(block[2])}"></p>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
