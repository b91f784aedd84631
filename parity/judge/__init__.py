"""judge: two traces in, one typed :class:`parity.result.Comparison` out, as the comparison spec says
(:mod:`.spec`: policy, floor store, requirements, precision, mask check, stream-vs-offline pairing).

* :mod:`.compare`: align, measure and gate every stage (the floor where one is measured, else the policy's flat
  rule), the step table, the audio section;
* :mod:`.session`: what a streaming session's N calls add (calls paired by token offset, schedules, options,
  glitches, stream vs offline);
* :mod:`.diagnose`: the ordered findings (the headline is the first error or failure);
* :mod:`.policy`, :mod:`.normalize`, :mod:`.pcm`, :mod:`.require`: rules, alignment, integer PCM, requirements.

Judging runs no model (the capture side hands it what it measured by running one: the step-local stages, the
chunk-mask check)."""
