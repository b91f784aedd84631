"""report: one self-contained HTML page per comparison, plus a summary page for a matrix of cases.

Data flows one way (capture -> trace -> compare -> diagnose -> report). The report never recomputes a
metric: every number on the page comes from the comparison result (:class:`parity.result.Comparison`). It
only *plots* tensors from the traces (mels, F0, waveforms, and their plain differences) and the per-frame
vectors already in the result. It renders what it is given: reading traces and comparing them is the
command layer's work (``parity-report``: :func:`parity.cli.report_from_saved`).

The page needs no network: figures are PNGs (matplotlib's Agg canvas, object API, no pyplot state)
embedded as ``data:image/png;base64`` URIs; audio is 16-bit PCM WAV in ``data:audio/wav;base64`` URIs
(non-finite samples replaced by 0 and everything clipped to [-1, 1] first; the page says when and how
many). Above an audio budget only windows of +-0.5 s around the worst frames are embedded. Every string
that comes from a trace (stage names, metadata, messages) is HTML-escaped by jinja2's autoescape.

Modules: :mod:`.plots` (figures), :mod:`.audio` (players), :mod:`.provenance` (the provenance table), :mod:`.view`
(the view model), :mod:`.page` (the pages). Entry points: :func:`build_report`, :func:`build_summary_page`.
"""

from .audio import DEFAULT_AUDIO_BUDGET
from .page import build_report, build_summary_page, summary_banner
from .view import SECTION_IDS

__all__ = ["build_report", "build_summary_page", "summary_banner", "SECTION_IDS", "DEFAULT_AUDIO_BUDGET"]
