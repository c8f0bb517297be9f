"""The report in other forms: one self-contained HTML file, and the summary as LaTeX.

Both are made from report.md's own Markdown, so they say exactly what it says, whoever wrote
the analyses: report.html embeds the figures (one file to send or archive) and makes every
table sortable; summary.tex turns the Summary's tables into booktabs tables, as papers in
this field print them.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from invkit.markup import unmarked

SORTING = """
document.querySelectorAll("table").forEach(table => {
  table.querySelectorAll("th").forEach((th, column) => {
    th.title = "sort"; th.style.cursor = "pointer";
    th.addEventListener("click", () => {
      const body = table.tBodies[0], rows = Array.from(body.rows);
      const key = row => row.cells[column].innerText.trim();
      const number = text => parseFloat(text.replace(/^r\\s|^ρ\\s/, ""));
      const up = th.dataset.order !== "up"; th.dataset.order = up ? "up" : "down";
      rows.sort((a, b) => {
        const x = number(key(a)), y = number(key(b));
        const order = isNaN(x) || isNaN(y) ? key(a).localeCompare(key(b)) : x - y;
        return up ? order : -order;
      });
      rows.forEach(row => body.appendChild(row));
    });
  });
});
"""

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
img { max-width: 100%; }
code, pre { background: #f6f6f6; }
pre { padding: 0.6em; overflow-x: auto; }
"""


PLOT_SOURCE = re.compile(r"plots/[A-Za-z0-9_-]+-[0-9a-f]{8}\.png")  # report.plot_name's names
IMAGE = re.compile(r"<img\b[^>]*>")
ATTRIBUTE = re.compile(r'\b(src|alt)="([^"]*)"')


def _plot_file(out_dir: Path, source: str) -> Path | None:
    """The study's own plot that ``source`` names: a regular file in ``plots/`` with a name
    invkit gives plots, reached through no symbolic link; ``None`` for anything else."""
    if not PLOT_SOURCE.fullmatch(source):
        return None
    folder, path = out_dir / "plots", out_dir / source
    if folder.is_symlink() or not path.is_file() or path.is_symlink():
        return None
    return path


def _embedded(out_dir: Path, tag: str) -> str:
    """An ``<img>`` of the study's own plots with the PNG inside the page, so report.html
    stands alone; any other image becomes its alt text: the page loads nothing from outside."""
    attributes = dict(ATTRIBUTE.findall(tag))
    alt = attributes.get("alt", "")  # already escaped by the sanitiser
    path = _plot_file(out_dir, html.unescape(attributes.get("src", "")))
    if path is None:
        return alt
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'


ALLOWED_TAGS = {
    "a", "blockquote", "br", "code", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "img",
    "li", "ol", "p", "pre", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href"}, "img": {"src", "alt"}, "td": {"align"}, "th": {"align"}}


def sanitised(body: str) -> str:
    """HTML made from Markdown, cleaned by nh3 (ammonia): the tags and attributes Markdown
    makes, links to http(s) and relative addresses only; no script, style, event handler or
    ``javascript:`` address survives, whatever the Markdown held."""
    import nh3

    return nh3.clean(
        body,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https"},
        strip_comments=True,
    )


def report_html(markdown_text: str, out_dir: Path) -> str:
    """report.md as one HTML page: sanitised, figures embedded from the study's own plots/,
    tables sortable by a click on a header (the page's only script, invkit's own)."""
    import markdown

    body = sanitised(markdown.markdown(markdown_text, extensions=["tables", "fenced_code"]))
    body = IMAGE.sub(lambda m: _embedded(out_dir, m.group(0)), body)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>invkit study report</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n<script>{SORTING}</script>\n</body></html>\n"
    )


LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "ρ": r"$\rho$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "—": "---",
    "−": "$-$",
    "×": r"$\times$",
}


def _latex_text(text: str) -> str:
    text = unmarked(re.sub(r"`([^`]*)`", r"\1", text))
    return "".join(LATEX.get(character, character) for character in text)


def _latex_cell(cell: str) -> str:
    """A table cell; ``<br>`` line breaks become a stacked cell."""
    parts = [_latex_text(part.strip()) for part in cell.split("<br>")]
    return parts[0] if len(parts) == 1 else r"\shortstack[l]{" + r" \\ ".join(parts) + "}"


def markdown_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """The tables of a Markdown text, each as (header, rows) of cell texts."""
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|") and line.rstrip().endswith("|"):
            cells = [cell.strip() for cell in line.strip()[1:-1].split(" | ")]
            if current is None:
                current = (cells, [])
                tables.append(current)
            elif not all(set(cell) <= {"-", ":"} for cell in cells):
                current[1].append(cells)
        else:
            current = None
    return tables


def summary_latex(summary_markdown: str) -> str:
    """The Summary's tables as booktabs LaTeX (``\\usepackage{booktabs}``), one per table."""
    blocks = ["% written by invkit from report.md's Summary; needs \\usepackage{booktabs}"]
    for header, rows in markdown_tables(summary_markdown):
        columns = "l" * len(header)
        lines = [
            r"\begin{tabular}{" + columns + "}",
            r"\toprule",
            " & ".join(_latex_cell(cell) for cell in header) + r" \\",
            r"\midrule",
            *(" & ".join(_latex_cell(cell) for cell in row) + r" \\" for row in rows),
            r"\bottomrule",
            r"\end{tabular}",
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
