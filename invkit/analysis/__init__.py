"""What a study makes of its results: the analyses (``analyses``), their statistics
(``stats``), how the built-in results present themselves (``render``), per-view values to one
number (``aggregate``), line fits (``linefit``) and label-free accuracy estimation
(``estimation``).

``invkit.analysis`` was once a module, the one now at ``invkit.analysis.analyses``; a plugin's
``from invkit.analysis import AnalysisResult`` still gives its names.
"""

from invkit.moved import names_of

__getattr__ = names_of("invkit.analysis.analyses")
