//! Single-core SHA-256 speed of the engine's hasher, in 1 MiB blocks (the benchmark's
//! floor is measured with `openssl speed`; this shows whether ours matches it).

use integrity_common::digest::Sha256Hasher;
use std::time::Instant;

fn main() {
    let block = vec![0x5au8; 1 << 20];
    let mut hasher = Sha256Hasher::new();
    let started = Instant::now();
    let mut bytes = 0u64;
    while started.elapsed().as_secs_f64() < 2.0 {
        for _ in 0..64 {
            hasher.update(&block);
        }
        bytes += 64 << 20;
    }
    let secs = started.elapsed().as_secs_f64();
    std::hint::black_box(hasher.finish());
    println!("{:.0} MB/s", bytes as f64 / 1e6 / secs);
}
