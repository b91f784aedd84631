"""Naming dialects of real dumps -> canonical stage names, and metadata key aliases.

The table covers the dialects seen in the grantjr1842 fork (field-notes section 2): the harness
schema, ``python_*``, ``rust_*``, ``step{i}_*``, ``test_artifacts``, the HiFT stage dumps and the
branch dialect. ``--map a=b`` adds or overrides entries. Names that map nowhere are kept as they are
(reported as present on one side only).

Some dialect names are ambiguous and are mapped with a stated assumption (``ASSUMPTIONS``), e.g. the
log-only ``rust_v1`` is a single estimator call, taken as step 1.
"""

from __future__ import annotations

import re

# exact names -> canonical
ALIASES: dict[str, str] = {
    # inputs
    "speech_token": "token", "output": "token", "tts_speech_token": "token", "text_speech_token": "token",
    "llm_prompt_speech_token": "prompt_token", "prompt_speech_token": "prompt_token",
    "python_speech_tokens": "prompt_token", "flow_prompt_speech_token": "prompt_token",
    "prompt_speech_feat": "prompt_feat", "python_mel_24k": "prompt_feat", "speech_feat": "prompt_feat",
    "spk_embed": "embedding", "python_spk_emb": "embedding", "speaker_embedding": "embedding",
    "llm_embedding": "embedding", "flow_embedding": "embedding",
    # flow front end and noise
    "mu_in": "mu", "spks_in": "spks", "cond_in": "cond", "conds": "cond",
    "x_init": "x0", "noise": "x0", "flow_noise": "x0",
    # single-call logs (assumed step 1)
    "rust_v1": "step1.v1", "rust_v2": "step1.v2", "rust_v_cfg": "step1.v_cfg",
    "python_v1": "step1.v1", "python_v2": "step1.v2", "python_v_cfg": "step1.v_cfg",
    # flow output
    "python_flow_output": "flow_mel", "flow_output": "flow_mel", "expected_mel": "flow_mel",
    "generated_mel": "flow_mel", "python_hift_mel_input": "flow_mel", "flow_feat_24k": "flow_mel",
    "tts_mel": "flow_mel", "input_mel": "flow_mel", "mel": "flow_mel",
    "expected": "flow_mel", "generated": "flow_mel",
    # F0 and source
    "python_f0": "f0", "f0_output": "f0",
    "python_hift_source": "source", "sine_merge": "source", "s_source": "source",
    "source_s": "f0_upsampled", "upsampled_f0": "f0_upsampled",
    # HiFT stages
    "conv_pre_out": "conv_pre", "python_conv_pre": "conv_pre",
    "conv_post": "hift.conv_post", "conv_post_out": "hift.conv_post",
    "pre_clamp_audio": "audio_preclamp", "python_istft_output": "audio_preclamp", "istft_audio": "audio_preclamp",
    "audio_pre_clamp": "audio_preclamp",
    # audio
    "final_audio": "audio", "python_audio_output": "audio", "python_hift_audio": "audio", "expected_audio": "audio",
    "python_decode_audio": "audio", "tts_speech": "audio", "generated_audio": "audio",
}

# regex dialects -> canonical template
PATTERNS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^(?:rust_|py_|python_)?step_?(\d+)_(v1|v2|v_cfg|x|dt|t)$"), r"step\1.\2"),
    (re.compile(r"^(?:rust_|py_|python_)?step(\d+)\.(v1|v2|v_cfg|x|dt|t)$"), r"step\1.\2"),
    (re.compile(r"^step(\d+)[._]block_?(\d+)(?:_out)?$"), r"step\1.block\2"),
    (re.compile(r"^(?:after_fusion_|fusion_)(\d)(?:_out)?$"), r"hift.fusion\1"),
    (re.compile(r"^(?:after_resblocks_|resblock_)(\d)(?:_out)?$"), r"hift.resblocks\1"),
    (re.compile(r"^(?:upsample_(\d)_out|python_ups_(\d)|ups_(\d))$"), r"hift.ups\1\2\3"),
    (re.compile(r"^source_down(?:_out)?_(\d)(?:_out)?$"), r"hift.source_down\1"),
    (re.compile(r"^python_(.+)$"), r"\1"),  # last resort: strip a python_ prefix, then look up again
]

ASSUMPTIONS = {
    "rust_v1": "a single logged estimator call, taken as step 1",
    "flow_output": "may include the prompt; the prompt part is sliced off when the lengths say so",
    "source_s": "despite its name, the fork's source_s is the upsampled F0",
    "python_speech_tokens": "in the fork's harness schema this holds the prompt tokens",
    "noise": "the flow noise slice x0 (not the HiFT noise)",
}

# two-part tensors that are combined into one canonical stage
COMBINE = {"s_stft": ("s_stft_real", "s_stft_imag")}

# metadata keys: dialect -> canonical
META_ALIASES: dict[str, str] = {
    "steps": "n_timesteps", "num_steps": "n_timesteps", "n_steps": "n_timesteps", "nfe": "n_timesteps",
    "n_timestep": "n_timesteps", "timesteps": "n_timesteps",
    "scheduler": "t_scheduler", "t_schedule": "t_scheduler", "schedule": "t_scheduler",
    "cfg": "cfg_rate", "inference_cfg_rate": "cfg_rate", "guidance": "cfg_rate", "cfg_strength": "cfg_rate",
    "weights_hash": "weights_sha256", "checkpoint_sha256": "weights_sha256",
    "noise_fingerprint": "noise", "seed": "noise_seed",
    "attn": "attention", "attention_backend": "attention", "attn_backend": "attention",
    "dtype": "dtypes", "precision": "dtypes", "torch_dtype": "dtypes",
    "trt": "tensorrt", "use_trt": "tensorrt", "load_trt": "tensorrt",
}


def canonical_name(name: str, extra: dict[str, str] | None = None, _depth: int = 0) -> str:
    if extra and name in extra:
        return extra[name]
    if name in ALIASES:
        return ALIASES[name]
    session = session_name(name, extra)
    if session is not None:
        return session
    for pat, tmpl in PATTERNS:
        m = pat.match(name)
        if m:
            out = m.expand(tmpl)
            if tmpl == r"\1" and _depth == 0:  # python_ prefix stripped: resolve the rest once more
                inner = canonical_name(out, extra, 1)
                return inner
            return out
    return name


def canonical_meta_key(key: str) -> str:
    return META_ALIASES.get(key, key)


def parse_maps(maps: list[str] | None) -> dict[str, str]:
    out = {}
    for m in maps or []:
        a, eq, b = m.partition("=")
        if not eq or not a or not b:
            from reference.errors import InputError

            raise InputError(f"--map {m!r}: expected NAME=CANONICAL")
        out[a.strip()] = b.strip()
    return out


# ---------------------------------------------------------------------------------------------
# chunked (streaming session) dumps: ``chunk_0_mel``, ``chunk0_audio``, ``chunk-2.tts_speech``, one folder of
# .npy files per chunk (``chunk_0/mel.npy`` or ``0/mel.npy``, read by ``ingest`` as ``chunk_0/mel``), and
# the whole stream. Canonical: ``chunk{c}.<field>`` and ``stream.mel`` / ``stream.audio`` (parity.stages).

CHUNK_FIELD_ALIASES: dict[str, str] = {
    "tokens": "tokens", "token": "tokens", "speech_token": "tokens", "tts_speech_token": "tokens",
    "tts_token": "tokens",
    "token_offset": "token_offset", "offset": "token_offset",
    "finalize": "finalize", "is_final": "finalize", "final": "finalize", "is_last": "finalize",
    "streaming": "streaming", "stream": "streaming",
    "flow_mel_full": "flow_mel_full", "flow_mel": "flow_mel_full", "flow_output": "flow_mel_full",
    "flow_out": "flow_mel_full", "mel_full": "flow_mel_full", "raw_mel": "flow_mel_full",
    "mel": "mel", "tts_mel": "mel", "mel_chunk": "mel", "new_mel": "mel", "mel_slice": "mel",
    "audio": "audio", "speech": "audio", "tts_speech": "audio", "wav": "audio", "pcm": "audio",
    "audio_chunk": "audio", "samples": "audio",
}
STREAM_ALIASES: dict[str, str] = {
    "stream.audio": "stream.audio", "stream_audio": "stream.audio", "streamed_audio": "stream.audio",
    "stream_speech": "stream.audio", "full_stream_audio": "stream.audio",
    "stream.mel": "stream.mel", "stream_mel": "stream.mel", "cumulative_mel": "stream.mel", "mel_cache": "stream.mel",
    "hift_cache_mel": "stream.mel",
}
CHUNK_ASSUMPTIONS = {
    "flow_mel": "a chunk's flow_mel is taken as the flow output before the token_offset slice (flow_mel_full)",
    "flow_output": "a chunk's flow_output is taken as the flow output before the token_offset slice (flow_mel_full)",
    "mel": "a chunk's mel is taken as the frames appended to the cumulative mel (after the slice)",
    "tts_mel": "upstream's tts_mel after the token_offset slice: the frames appended to the cumulative mel",
}
_CHUNK_NAME = re.compile(r"^(?:rust_|py_|python_)?(?:chunk[_-]?(\d+)[._/-]|(\d+)/)(.+)$")


def _chunk_parts(name: str) -> tuple[int, str] | None:
    m = _CHUNK_NAME.match(name)
    if not m:
        return None
    return int(m.group(1) if m.group(1) is not None else m.group(2)), m.group(3)


def session_name(name: str, extra: dict[str, str] | None = None) -> str | None:
    """The canonical session stage of a chunked-dump name, or None when ``name`` is not one."""
    if name in STREAM_ALIASES:
        return STREAM_ALIASES[name]
    parts = _chunk_parts(name)
    if parts is None:
        return None
    c, rest = parts
    field = CHUNK_FIELD_ALIASES.get(rest)
    if field is None:  # the flow's own stages inside a chunk: chunk_0_step3_v1, chunk0/noise, ...
        field = canonical_name(rest.replace("/", "_"), extra, 1)
    return f"chunk{c}.{field}"


def session_assumption(name: str) -> str | None:
    parts = _chunk_parts(name)
    return CHUNK_ASSUMPTIONS.get(parts[1]) if parts else None
