//! Streaming SHA-256 of file contents: one read buffer per worker thread, the
//! workspace's one streaming hash ([`hash_reader`]), and the prefix check of the
//! `growing` rule ([`hash_prefix`]).

use crate::digest::{Sha256Digest, Sha256Hasher};
use crate::handles;
use std::cell::RefCell;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::Path;

/// Read buffer per worker thread. Small on purpose: the profile on /usr showed the
/// kernel's copy into user space costing as much as SHA-256 itself with a 256 KiB
/// buffer; at 32–64 KiB the buffer stays in cache between the copy and the hash and
/// that copy's cost halves (docs/BENCHMARKS.md).
const READ_BUFFER_BYTES: usize = 32 << 10;

thread_local! {
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_BUFFER_BYTES].into_boxed_slice());
}

/// Hashes up to `limit` bytes of `reader` with the thread's read buffer (the
/// workspace's one streaming hash); returns the digest and the number of bytes read.
pub fn hash_reader(reader: impl Read, limit: u64) -> io::Result<(Sha256Digest, u64)> {
    READ_BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        let mut hasher = Sha256Hasher::new();
        let mut size = 0u64;
        let mut reader = reader.take(limit);
        loop {
            match reader.read(&mut buffer[..]) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buffer[..n]);
                    size += n as u64;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
        Ok((hasher.finish(), size))
    })
}

/// Hashes the first `len` bytes of the regular file at `rel` below `root`, through
/// handles: no symlink followed anywhere on the way (the `growing` check: are the
/// bytes the baseline hashed still the file's first bytes?). A file shorter than
/// `len` is an error.
pub fn hash_prefix(root: &Path, rel: &[u8], len: u64) -> io::Result<Sha256Digest> {
    let root = handles::open_dir(root)?;
    let (file, _) = handles::open_file_beneath(root.as_fd(), rel)?;
    let (digest, size) = hash_reader(file, len)?;
    if size < len {
        return Err(io::Error::other("shorter than the baseline"));
    }
    Ok(digest)
}
