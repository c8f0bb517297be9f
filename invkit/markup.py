"""Untrusted text kept as text: names, paths and messages from configs, datasets and models.

A model may be named ``<img src=x onerror=alert(1)>``, an image file ``![x](/etc/key.png)``, and
an exception may carry either. Wherever invkit writes such a text into Markdown it goes through
``md``, so it reads the same in report.md, report.html and summary.tex and is never markup; on
the console it goes through ``terminal``, so it cannot move the cursor or recolour the terminal.
report.html is sanitised as a whole besides (``invkit.report.formats``), so that a plugin's
own Markdown cannot run script either.
"""

from __future__ import annotations

import html
import re

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Characters that start Markdown markup anywhere in a line. ``_`` only at a word's edge: inside
# a word (``resnet18_a1``) Python-Markdown and GitHub both keep it literal.
INLINE = re.compile(r"([\\`*\[\]|!])|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
LINE_START = re.compile(r"^([#+\-]|\d+[.)])")  # headings, lists, rules (">": an entity)


TERMINAL_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def terminal(text: object) -> str:
    """``text`` for the console: its lines kept, every other control character (an escape
    sequence's ESC, a carriage return) shown as ``?``."""
    return TERMINAL_CONTROL.sub("?", str(text))


def plain(text: object) -> str:
    """``text`` on one line, control characters (terminal escapes, newlines) as spaces."""
    return CONTROL.sub(" ", str(text))


def md(text: object) -> str:
    """``text`` as literal Markdown text: one line, markup characters escaped, ``<``, ``>``
    and ``&`` as entities (so no HTML survives), safe in a table cell or a heading."""
    escaped = INLINE.sub(lambda m: "\\" + m.group(0), plain(text).strip())
    escaped = LINE_START.sub(lambda m: m.group(0)[:-1] + "\\" + m.group(0)[-1], escaped)
    return html.escape(escaped, quote=False)


def code(text: object) -> str:
    """``text`` as an inline code span (literal in every Markdown renderer), or as ``md`` text
    when it holds a backtick or a character a code span cannot hold (``|``, in a table)."""
    line = plain(text).strip()
    if not line or "`" in line or "|" in line:
        return md(line)
    return f"`{line}`"


MD_ESCAPE = re.compile(r"\\([\\`*_\[\]|!#+\-.)])")


def unmarked(text: str) -> str:
    """The literal text ``md`` escaped (for renderings that are not Markdown, such as LaTeX)."""
    return html.unescape(MD_ESCAPE.sub(r"\1", text))


def fenced(text: str, info: str = "text") -> str:
    """``text`` as a fenced code block whose fence no backtick run inside it can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A cell for a CSV file a spreadsheet may open (OWASP's CSV injection advice): a text that
    starts with ``= + - @``, a tab or a carriage return, and is not a number, gets a leading
    ``'``, so that no spreadsheet runs it as a formula; so does a text that already starts with
    ``'``, so that removing one leading ``'`` always gives the name back (``csv_text``). Numbers,
    and texts that read as one (a dataset named ``-1``), are written as they are."""
    if not isinstance(value, str) or not value:
        return value
    if value.startswith("'"):
        return f"'{value}"
    if value.startswith(FORMULA_START):
        try:
            float(value)
        except ValueError:
            return f"'{value}"
    return value


def csv_text(cell: str) -> str:
    """A text cell of an invkit CSV as it was before ``csv_cell``: one leading ``'`` removed."""
    return cell[1:] if cell.startswith("'") else cell
