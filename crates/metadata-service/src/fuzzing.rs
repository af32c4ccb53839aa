//! The checks of the `request_body` fuzz target (`fuzz/`), here so the corpus replay
//! test runs them without libFuzzer: whatever bytes arrive as a `POST /baselines` or a
//! `PUT …/signature` body, parsing must not panic, and what is accepted must keep the
//! store's invariants.

use crate::ingest::{self, Encoding};
use std::io::Read;

/// Largest input whose compressed forms are also built and checked (compression is
/// slow under the fuzzer's instrumentation).
const COMPRESS_LIMIT: usize = 64 * 1024;

/// Runs both body parsers on `data`; returns whether it was a storable baseline.
pub fn check_request_body(data: &[u8]) -> bool {
    if ingest::validate_signature(data).is_ok() {
        let text = std::str::from_utf8(data).expect("accepted signature is UTF-8");
        assert_eq!(text.lines().count(), 4);
        assert!(data.len() <= ingest::MAX_SIGNATURE_BYTES);
    }
    let Ok(meta) = ingest::validate(data) else {
        return false;
    };
    // What the service acknowledges describes exactly these bytes.
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(
        meta.sha256,
        integrity_common::Sha256Digest::of(data).to_hex()
    );
    integrity_common::validate_image_id(&meta.image_id).expect("accepted image id is valid");
    let baseline = integrity_common::Baseline::from_json_slice(data).expect("validated twice");
    assert_eq!(baseline.entries.len() as u64, meta.entries);
    assert!(meta.matches_etag(&meta.etag(Encoding::Identity)));
    if data.len() <= COMPRESS_LIMIT {
        let prepared = ingest::prepare(meta, bytes::Bytes::copy_from_slice(data));
        if let Some(gzip) = &prepared.gzip {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&gzip[..])
                .read_to_end(&mut out)
                .expect("own gzip decodes");
            assert_eq!(out, data);
        }
        if let Some(zstd) = &prepared.zstd {
            assert_eq!(zstd::decode_all(&zstd[..]).expect("own zstd decodes"), data);
        }
    }
    true
}

/// The checks of the `host_report` fuzz target: whatever bytes arrive as a
/// `POST /reports` body, parsing must not panic; an accepted report serialises back
/// to bytes that parse to the same report, and its findings group without panicking.
/// Returns whether it was accepted.
pub fn check_host_report(data: &[u8]) -> bool {
    use integrity_common::report::HostReport;
    let Ok(report) = HostReport::parse(data, 1000) else {
        return false;
    };
    integrity_common::report::validate_host_id(&report.host_id).expect("accepted host id");
    let again = HostReport::parse(&report.to_bytes(), 1000).expect("own bytes parse");
    assert_eq!(again, report);
    let index = crate::fleet::drift::DriftIndex::default();
    let keys = index.keys_of(&report.image_id, &report.anomalies);
    assert!(keys.len() <= report.anomalies.len());
    true
}
