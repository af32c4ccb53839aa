//! Times the phases of storing one baseline (validate, compress, insert + sync), to
//! see where a `POST /baselines` spends its time: `cargo run --release --example
//! ingest_phases -- FILE`.

use metadata_service::ingest;
use metadata_service::store::{SledStore, Store};
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("usage: ingest_phases FILE");
    let bytes = bytes::Bytes::from(std::fs::read(&path).expect("read"));
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(dir.path(), 32 << 20).expect("open");
    let t = Instant::now();
    let meta = ingest::validate(&bytes).expect("valid");
    let validated = t.elapsed();
    let t = Instant::now();
    let prepared = ingest::prepare(meta, bytes.clone());
    let compressed = t.elapsed();
    let t = Instant::now();
    store.insert(&prepared).expect("insert");
    let stored = t.elapsed();
    let rss = || {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find(|line| line.starts_with("VmRSS"))
            .unwrap_or("")
            .to_owned()
    };
    if std::env::var_os("INGEST_REPEAT").is_some() {
        for i in 0..10 {
            let text = String::from_utf8(bytes.to_vec()).expect("utf8");
            let text = text.replacen("\"image_id\":\"", &format!("\"image_id\":\"r{i}"), 1);
            let body = bytes::Bytes::from(text.into_bytes());
            let meta = ingest::validate(&body).expect("valid");
            let prepared = ingest::prepare(meta, body);
            store.insert(&prepared).expect("insert");
            drop(prepared);
            println!("after insert {i}: {}", rss());
        }
    }
    println!(
        "{} bytes: validate {:?}, compress {:?} (gzip {:?} B, zstd {:?} B), insert+sync {:?}",
        bytes.len(),
        validated,
        compressed,
        prepared.meta.gzip_size,
        prepared.meta.zstd_size,
        stored
    );
}
