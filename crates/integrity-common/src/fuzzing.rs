//! The checks behind the fuzz targets (`fuzz/`), kept here so plain `cargo test`
//! replays the fuzz corpus with exactly the same assertions (tests/fuzz_corpus.rs).

use crate::manifest::Baseline;
use crate::pathenc;

/// Parses `data` as a manifest. A document that parses must validate, be sorted and
/// unique, and survive a write/parse round trip unchanged, byte for byte.
pub fn check_manifest_bytes(data: &[u8]) -> Option<Baseline> {
    let baseline = Baseline::from_json_slice(data).ok()?;
    baseline
        .validate()
        .expect("a parsed manifest must pass validate()");
    assert!(
        baseline
            .entries
            .windows(2)
            .all(|pair| pair[0].path < pair[1].path),
        "entries must be strictly sorted"
    );
    let written = baseline.to_json_bytes();
    let reparsed = Baseline::from_json_slice(&written).expect("our own output must parse");
    assert_eq!(reparsed, baseline, "round trip changed the manifest");
    assert_eq!(
        reparsed.to_json_bytes(),
        written,
        "writing is not deterministic"
    );
    Some(baseline)
}

/// Raw bytes round-trip through the encoding; any text that decodes is canonical.
pub fn check_path_encoding(data: &[u8]) {
    let encoded = pathenc::encode(data);
    let decoded = pathenc::decode(&encoded).expect("encode output must decode");
    assert_eq!(&*decoded, data, "round trip lost bytes");
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(bytes) = pathenc::decode(text) {
            assert_eq!(
                pathenc::encode(&bytes),
                text,
                "two texts decode to one path"
            );
        }
    }
}
