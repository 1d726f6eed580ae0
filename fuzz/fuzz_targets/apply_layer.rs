//! Two layers of arbitrary entries applied over a temp root: whatever the entries (`..`,
//! absolute paths, symlinks and symlink chains, hardlinks to earlier entries, whiteouts and
//! opaque markers, long PAX names), nothing may be written outside the root. A directory
//! beside the root holds a sentinel; every entry kind may aim at it (`../outside`, its
//! absolute path, a symlink to it), and after both layers it must be exactly as it was. Raw
//! bytes are tried too (a corrupt or compressed-looking stream must only fail).
#![no_main]

use arbitrary::Arbitrary;
use kiln_fs::apply::{apply_layer, ApplyOptions, Whiteouts};
use libfuzzer_sys::fuzz_target;

mod common;
use common::{layer, Entry, Sandbox};

#[derive(Arbitrary, Debug)]
struct Input {
    layers: [Vec<Entry>; 2],
    overlay_whiteouts: bool,
    raw: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let sandbox = Sandbox::new();
    let mut options = ApplyOptions::rootless();
    if input.overlay_whiteouts {
        options.whiteouts = Whiteouts::Overlay;
    }
    for entries in &input.layers {
        let bytes = layer(entries, &sandbox.outside);
        let _ = apply_layer(&bytes[..], &sandbox.root, &options);
    }
    let _ = apply_layer(&input.raw[..], &sandbox.root, &options);
    sandbox.check();
});
