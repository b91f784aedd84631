"""measure: pure statistics of tensor pairs, audio and streams (no limits, no policy): what the judge and the
noise floor both measure with."""
