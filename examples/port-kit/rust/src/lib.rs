//! Reading a tts-parity port kit from Rust (docs/port-kit.md).
//!
//! A kit is `manifest.json` plus one safetensors file per vector: `inputs.<name>` (what the reference module
//! received on a real run), `outputs.<name>` (what it returned). The manifest gives, per output, the tolerance:
//! `limit.max_abs` and `limit.rel_l2` (k x the module-level noise floor). The rule (`tolerance_rule` in the
//! manifest): same shape, every element finite, and for each statistic in `gate`, value <= limit, computed in f64.

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::fs;
use std::path::Path;

/// A tensor read as f64, with its shape (row-major, as stored).
#[derive(Debug, Clone)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

fn le<const N: usize>(c: &[u8]) -> [u8; N] {
    c.try_into().expect("chunk size")
}

/// One tensor of a safetensors file as f64 (F32, F64, I64, I32, BOOL; the kit stores nothing else).
pub fn read(st: &SafeTensors, key: &str) -> Result<Tensor, String> {
    let view = st.tensor(key).map_err(|e| format!("tensor '{key}': {e:?}"))?;
    let b = view.data();
    let data: Vec<f64> = match view.dtype() {
        Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes(le(c)) as f64).collect(),
        Dtype::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes(le(c))).collect(),
        Dtype::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(le(c)) as f64).collect(),
        Dtype::I32 => b.chunks_exact(4).map(|c| i32::from_le_bytes(le(c)) as f64).collect(),
        Dtype::BOOL => b.iter().map(|&x| if x != 0 { 1.0 } else { 0.0 }).collect(),
        other => return Err(format!("tensor '{key}': dtype {other:?} is not read by this example")),
    };
    Ok(Tensor { shape: view.shape().to_vec(), data })
}

/// The manifest of a kit directory.
pub fn manifest(kit: &Path) -> Result<Value, String> {
    let path = kit.join("manifest.json");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let m: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if m["schema"] != "tts-parity-kit/1" {
        return Err(format!("{}: schema {} is not tts-parity-kit/1", path.display(), m["schema"]));
    }
    Ok(m)
}

/// The manifest entry of vector `id` and the bytes of its file (parse them with `SafeTensors::deserialize`).
pub fn vector(kit: &Path, m: &Value, id: &str) -> Result<(Value, Vec<u8>), String> {
    let entry = m["vectors"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["id"] == id))
        .ok_or_else(|| format!("no vector {id} in the kit"))?
        .clone();
    let file = kit.join(entry["file"].as_str().unwrap_or_default());
    let bytes = fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok((entry, bytes))
}

/// The verdict of one output under the manifest's rule.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub passed: bool,
    /// the largest value / (limit / k) over the gated statistics: "N x floor" (infinite for a wrong shape or NaN)
    pub ratio: f64,
    pub max_abs: f64,
    pub rel_l2: f64,
    pub why: String,
}

/// Judge a port's output against the reference output, with the tolerance of `output` (a manifest output entry).
pub fn judge(output: &Value, reference: &Tensor, port: &Tensor) -> Verdict {
    let fail = |why: String| Verdict { passed: false, ratio: f64::INFINITY, max_abs: f64::NAN, rel_l2: f64::NAN, why };
    if port.shape != reference.shape {
        return fail(format!("shape {:?}, the kit's {:?} ({})", port.shape, reference.shape, output["layout"]));
    }
    if let Some(i) = port.data.iter().position(|x| !x.is_finite()) {
        return fail(format!("non-finite value at flat index {i}"));
    }
    let (mut max_abs, mut dd, mut rr) = (0.0f64, 0.0f64, 0.0f64);
    for (p, r) in port.data.iter().zip(&reference.data) {
        let d = p - r;
        max_abs = max_abs.max(d.abs());
        dd += d * d;
        rr += r * r;
    }
    let (nd, nr) = (dd.sqrt(), rr.sqrt());
    let rel_l2 = if nr > 0.0 { nd / nr } else if nd == 0.0 { 0.0 } else { f64::INFINITY };
    let tol = &output["tolerance"];
    let k = tol["k"].as_f64().unwrap_or(0.0);
    let (mut passed, mut ratio) = (true, 0.0f64);
    for stat in tol["gate"].as_array().into_iter().flatten() {
        let name = stat.as_str().unwrap_or_default();
        let value = if name == "max_abs" { max_abs } else { rel_l2 };
        let limit = tol["limit"][name].as_f64().unwrap_or(0.0);
        passed &= value <= limit;
        ratio = ratio.max(if limit > 0.0 { value / (limit / k) } else { f64::INFINITY });
    }
    let why = format!("max_abs {max_abs:.3e}, rel_l2 {rel_l2:.3e}: {ratio:.3} x floor (k {k})");
    Verdict { passed, ratio, max_abs, rel_l2, why }
}
