"""The report's provenance table: what each side ran (model, weights, noise, dtypes, device, attention and the
kernels that ran, the ONNX Runtime session of an ONNX estimator, the environment), as rows the page renders."""

from __future__ import annotations

from typing import Any

from ..render import fmt


def _kernels(m: dict) -> tuple[Any, Any]:
    k = m.get("attention_kernels")
    if isinstance(k, dict) and ("counts" in k or "fallbacks" in k):
        return k.get("counts"), k.get("fallbacks")
    return k, None


def _error_text(e: Any) -> str | None:
    if e is None:
        return None
    if isinstance(e, dict):
        s = f"{e.get('type', 'error')}: {e.get('message', '')}"
        if e.get("stage"):
            s += f" (while computing {e['stage']}"
            s += f", after {e['last_recorded']})" if e.get("last_recorded") else ")"
        return s
    return str(e)


def _onnx(m: dict, part: str | None = None) -> dict:
    """The ``onnx`` provenance of a trace (or one part of it), ``{}`` when absent."""
    o = m.get("onnx") if isinstance(m.get("onnx"), dict) else {}
    if part is None:
        return o
    return o.get(part) if isinstance(o.get(part), dict) else {}


def _onnx_source(o: dict) -> str | None:
    if not o:
        return None
    src = str(o.get("source") or "-")
    opts = (o.get("export") or {}).get("options") if isinstance(o.get("export"), dict) else None
    if isinstance(opts, dict):
        src += " (" + ", ".join(f"{k} {fmt(v)}" for k, v in opts.items()) + ")"
    return src + (f"; {o['note']}" if o.get("note") else "")


def _onnx_file(f: dict) -> str | None:
    if not f:
        return None
    return (f"opset {fmt(f.get('opset'))}, {f.get('producer') or '?'} {f.get('producer_version') or ''}".rstrip()
            + f", IR {fmt(f.get('ir_version'))}, {fmt(f.get('bytes'))} bytes")


def _onnx_inputs(f: dict) -> str | None:
    if not f:
        return None
    ins = ", ".join(f"{i.get('name')} {i.get('dtype')}" for i in f.get("inputs") or [] if isinstance(i, dict))
    return ins + ("; attn_mask input: the chunk mask can be fed" if f.get("mask_input")
                  else "; no attention-mask input: streaming runs with full attention")


def _onnx_required(sess: dict) -> str | None:
    if not sess.get("require_provider"):
        return None
    miss = sess.get("required_provider_missing")
    return f"{sess['require_provider']}: " + (f"NOT MET: {miss}" if miss else "met")


def _onnx_fusion(fu: dict) -> str | None:
    if not fu:
        return None
    return f"fused {fmt(fu.get('fused'))}; not fused {fmt(fu.get('not_fused'), limit=200)}"


PROVENANCE = [
    # label, getter, highlight differences
    ("pipeline", lambda m: m.get("pipeline"), False),  # differs by design
    ("model", lambda m: m.get("model"), True),
    ("config", lambda m: m.get("config"), True),
    ("weights sha256", lambda m: m.get("weights_sha256"), True),
    ("weights", lambda m: m.get("weights"), True),
    ("noise fingerprint", lambda m: (m.get("noise") or {}).get("fingerprint") if isinstance(m.get("noise"), dict)
     else m.get("noise"), True),
    ("noise source", lambda m: (m.get("noise") or {}).get("source") if isinstance(m.get("noise"), dict) else None,
     True),
    ("dtypes", lambda m: m.get("dtypes"), True),
    ("precision", lambda m: m.get("precision"), True),
    ("device", lambda m: m.get("device"), True),
    ("attention (requested)", lambda m: m.get("attention"), True),
    ("attention kernels that ran (counts)", lambda m: _kernels(m)[0], True),
    ("attention fallbacks", lambda m: _kernels(m)[1] or None, True),
    ("n_timesteps", lambda m: m.get("n_timesteps"), True),
    ("t_scheduler", lambda m: m.get("t_scheduler"), True),
    ("cfg_rate", lambda m: m.get("cfg_rate"), True),
    ("sigma_min", lambda m: m.get("sigma_min"), True),
    ("streaming", lambda m: m.get("streaming"), True),
    ("finalize", lambda m: m.get("finalize"), True),
    ("sample rate", lambda m: m.get("sample_rate"), True),
    ("inputs", lambda m: m.get("inputs"), True),
    ("torch", lambda m: (m.get("env") or {}).get("torch") if isinstance(m.get("env"), dict) else None, True),
    ("git SHA", lambda m: (m.get("env") or {}).get("git_sha") if isinstance(m.get("env"), dict) else None, True),
    ("python", lambda m: (m.get("env") or {}).get("python") if isinstance(m.get("env"), dict) else None, True),
    ("threads", lambda m: (m.get("env") or {}).get("threads") if isinstance(m.get("env"), dict) else None, True),
    ("profile", lambda m: m.get("profile"), True),
    ("switches", lambda m: m.get("switches"), True),
    ("faults", lambda m: m.get("faults"), True),
    ("compile", lambda m: m.get("compile"), True),
    *[(label, get, False) for label, get in (  # the ONNX Runtime estimator (candidate only: not highlighted)
        ("ONNX Runtime", lambda m: _onnx(m).get("onnxruntime")),
        ("ONNX estimator source", lambda m: _onnx_source(_onnx(m))),
        ("ONNX file sha256", lambda m: _onnx(m, "file").get("sha256")),
        ("ONNX file opset / producer / IR", lambda m: _onnx_file(_onnx(m, "file"))),
        ("ONNX graph inputs", lambda m: _onnx_inputs(_onnx(m, "file"))),
        ("ONNX providers requested", lambda m: _onnx(m, "session").get("providers_requested")),
        ("ONNX providers used", lambda m: _onnx(m, "session").get("providers_used")),
        ("ONNX required provider", lambda m: _onnx_required(_onnx(m, "session"))),
        ("ONNX graph optimization level", lambda m: _onnx(m, "session").get("graph_optimization_level")),
        ("ONNX intra-op threads", lambda m: _onnx(m, "session").get("intra_op_threads")),
        ("ONNX fused nodes (session graph)", lambda m: _onnx(m).get("fused_nodes")),
        ("ONNX op counts (session graph)", lambda m: _onnx(m).get("optimized_op_counts")
         or _onnx(m).get("graph_op_counts")),
        ("ONNX fusion pass", lambda m: _onnx_fusion(_onnx(m, "fusion"))),
        ("ONNX fp16 conversion", lambda m: _onnx(m).get("fp16")),
        ("ONNX estimator calls", lambda m: m.get("onnx_run")),
    )],
    ("status", lambda m: m.get("status"), True),
    ("error", lambda m: _error_text(m.get("error")), True),
    ("started", lambda m: m.get("started"), False),
    ("seconds", lambda m: m.get("seconds"), False),
]
_PROV_KEYS = {"pipeline", "model", "config", "weights_sha256", "weights", "noise", "dtypes", "precision", "device",
              "attention", "attention_kernels", "n_timesteps", "t_scheduler", "cfg_rate", "sigma_min", "streaming",
              "finalize", "sample_rate", "inputs", "env", "profile", "switches", "faults", "compile", "status",
              "error", "started", "seconds", "stage_order", "onnx", "onnx_run"}


def provenance_rows(meta: dict) -> tuple[list[dict], list[dict]]:
    ref = meta.get("ref") if isinstance(meta.get("ref"), dict) else {}
    cand = meta.get("cand") if isinstance(meta.get("cand"), dict) else {}
    rows = []
    for label, get, hl in PROVENANCE:
        a, b = get(ref), get(cand)
        if a is None and b is None:
            continue
        ta, tb = fmt(a, limit=400), fmt(b, limit=400)
        rows.append({"label": label, "ref": ta, "cand": tb, "differs": hl and ta != tb})
    other = []
    for k in sorted(set(ref) | set(cand)):
        if k in _PROV_KEYS:
            continue
        ta, tb = fmt(ref.get(k), limit=400), fmt(cand.get(k), limit=400)
        other.append({"label": k, "ref": ta, "cand": tb, "differs": ta != tb})
    return rows, other
