//! How a port's module test reads one vector: its inputs, the reference outputs, the tolerance.
//!
//! Run with the kit and the port's outputs: `PORT_KIT=kit/ PORT_OUTPUTS=port.safetensors cargo test`. Here the
//! "port" output is read from PORT_OUTPUTS; a real port computes it from `inputs`, e.g.
//! `let out = my_port::dit_block(&weights, 3, &x, &t, mask.as_ref(), &rope);`.

use port_kit_check::{judge, manifest, read, vector};
use safetensors::SafeTensors;
use std::path::Path;

#[test]
fn dit_block_0_matches_the_kit() {
    let (Ok(kit), Ok(port_file)) = (std::env::var("PORT_KIT"), std::env::var("PORT_OUTPUTS")) else {
        eprintln!("PORT_KIT / PORT_OUTPUTS not set: nothing to check");
        return;
    };
    let kit = Path::new(&kit);
    let m = manifest(kit).unwrap();
    let id = "decoder.estimator.transformer_blocks.0";
    let (entry, bytes) = vector(kit, &m, id).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    // the module's inputs, as the reference received them (time-major [B, T, C]; mask absent offline)
    let x = read(&st, "inputs.x").unwrap();
    let t = read(&st, "inputs.t").unwrap();
    let rope = read(&st, "inputs.rope").unwrap();
    assert_eq!(x.shape.len(), 3);
    assert_eq!(t.shape, vec![x.shape[0], x.shape[2]]);
    assert_eq!(rope.shape[0], x.shape[1]);
    let weights: Vec<&str> = entry["weights"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert!(weights.contains(&"decoder.estimator.transformer_blocks.0.attn.to_q.weight"));
    // the port's output (here: read back from PORT_OUTPUTS)
    let port_bytes = std::fs::read(port_file).unwrap();
    let port = SafeTensors::deserialize(&port_bytes).unwrap();
    let got = read(&port, &format!("{id}/out")).unwrap();
    let out = &entry["outputs"][0];
    let verdict = judge(out, &read(&st, "outputs.out").unwrap(), &got);
    assert!(verdict.passed, "{id}: {}", verdict.why);
}
