"""capture: run a pipeline (the reference or a candidate) on one input bundle and record its stages into a trace.

* :mod:`.recorder`: the recorder pipelines report their stages to (glob patterns decide what is kept);
* :mod:`.runner`: one capture of N calls (a single token2wav call is a session of one call) into an incremental
  trace, a crash closing it with the stage being computed;
* :mod:`.session`: what the streaming session adds (upstream's chunked loop: its plan, its stages, its progress);
* :mod:`.local`: the candidate's step-local (teacher-forced) run on the reference's own tensors;
* :mod:`.mask_check`: the streaming chunk-mask check, which runs the reference estimator.

Capture runs models; it never judges (that is :mod:`parity.judge`)."""
