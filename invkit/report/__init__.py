"""How a study is shown: the report and its files (``report``), report.html and summary.tex
(``formats``).

``invkit.report`` was once a module, the one now at ``invkit.report.report``; a plugin's
``from invkit.report import rerender`` still gives its names.
"""

from invkit.moved import names_of

__getattr__ = names_of("invkit.report.report")
