//! `port-kit-check KIT PORT_OUTPUTS.safetensors`: every vector of the kit whose outputs the port file holds
//! (keys `<vector id>/<output>`), judged by the manifest's rule; exit code 1 when one fails.

use port_kit_check::{judge, manifest, read, vector};
use safetensors::SafeTensors;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: port-kit-check KIT_DIR PORT_OUTPUTS.safetensors");
        return ExitCode::from(2);
    }
    match run(Path::new(&args[1]), Path::new(&args[2])) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("port-kit-check: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(kit: &Path, port_path: &Path) -> Result<bool, String> {
    let m = manifest(kit)?;
    let port_bytes = std::fs::read(port_path).map_err(|e| format!("{}: {e}", port_path.display()))?;
    let port = SafeTensors::deserialize(&port_bytes).map_err(|e| format!("{}: {e:?}", port_path.display()))?;
    let (mut judged, mut failed) = (0, 0);
    for v in m["vectors"].as_array().into_iter().flatten() {
        let id = v["id"].as_str().unwrap_or_default();
        let outputs = v["outputs"].as_array().cloned().unwrap_or_default();
        if !outputs.iter().any(|o| port.tensor(&format!("{id}/{}", o["name"].as_str().unwrap_or(""))).is_ok()) {
            continue; // this module is not ported (yet)
        }
        let (entry, bytes) = vector(kit, &m, id)?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| format!("{id}: {e:?}"))?;
        // every output of a vector shares its k, so the worst ratio is a failing output's when one fails
        let (mut ok, mut worst, mut why) = (true, -1.0f64, String::new());
        for o in entry["outputs"].as_array().into_iter().flatten() {
            let name = o["name"].as_str().unwrap_or_default();
            let reference = read(&st, o["key"].as_str().unwrap_or_default())?;
            let got = read(&port, &format!("{id}/{name}"))?;
            let verdict = judge(o, &reference, &got);
            ok &= verdict.passed;
            if verdict.ratio > worst {
                (worst, why) = (verdict.ratio, format!("{name}: {}", verdict.why));
            }
        }
        judged += 1;
        failed += usize::from(!ok);
        println!("{:<50} {}  {}", id, if ok { "pass" } else { "FAIL" }, why);
    }
    println!("{judged} vectors judged, {failed} failed");
    Ok(judged > 0 && failed == 0)
}
