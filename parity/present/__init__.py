"""present: what a comparison looks like to people: the terminal summary (:mod:`.summary`), the HTML report
(:mod:`.report`) and the jinja environment (:mod:`.render`). It renders results and plots the tensors it is
given; it reads no trace, runs no comparison and recomputes no metric."""
