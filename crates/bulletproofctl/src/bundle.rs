//! `bundle build`: the seed's release bundle (ARCHITECTURE.md: trust chain).
//!
//! ```text
//! OUT/core-VER.tar.zst      the core tree (VERSION at its top, written if the tree has none)
//! OUT/modules-VER.tar.zst   the modules tree
//! OUT/manifest-VER.json     the engine's per-file manifest of both (/core/…, /modules/…)
//! OUT/sbom-VER.json         CycloneDX 1.5 JSON: one component per file, SHA-256
//! OUT/checksums.txt         sha256sum format over the four files above
//! OUT/sig.minisig           minisign over checksums.txt, `version:VER<TAB>timestamp:TS[<TAB>expires:TS]`
//! ```
//!
//! Reproducible: entries sorted by path, owners from `--owner` (default 0:0), every
//! mtime and the manifest timestamp from `SOURCE_DATE_EPOCH` (else the newest mtime of
//! the inputs), zstd single-threaded at a fixed level. The same inputs give the same
//! archive, manifest, SBOM and checksums bytes; only `sig.minisig` differs (minisign
//! signatures carry random noise).

use crate::checksums;
use anyhow::{bail, Context};
use integrity_common::handles;
use integrity_common::{Baseline, EntryKind, FileIntegrityEntry, Sha256Digest};
use std::ffi::CString;
use std::fs;
use std::io::{BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub struct BuildOptions {
    pub version: String,
    pub core: PathBuf,
    pub modules: PathBuf,
    pub out: PathBuf,
    pub secret_key: integrity_trust::SecretKey,
    pub expires: Option<String>,
    pub owner: (u32, u32),
    pub name: String,
    pub level: i32,
}

/// What was built.
pub struct Built {
    pub files: Vec<(String, Sha256Digest)>,
    pub entries: usize,
    pub bytes: u64,
}

/// Scans `dir` with the engine (no exclusions) and returns its entries with paths
/// re-rooted under `prefix` (`/core`), owners normalized.
fn scan_tree(
    dir: &Path,
    prefix: &str,
    owner: (u32, u32),
) -> anyhow::Result<Vec<FileIntegrityEntry>> {
    let options = integrity_common::ScanOptions {
        root: dir.to_path_buf(),
        exclusions: integrity_common::Exclusions::none(),
        cross_filesystems: false,
        policy: None,
    };
    let output = integrity_common::scan(&options, &Default::default())?;
    if let Some(error) = output.errors.first() {
        bail!(
            "{}: cannot read {}: {} ({} unreadable paths)",
            dir.display(),
            String::from_utf8_lossy(&error.path),
            error.error,
            output.errors.len()
        );
    }
    let mut entries = Vec::with_capacity(output.entries.len());
    for mut entry in output.entries {
        match entry.kind {
            EntryKind::File | EntryKind::Dir | EntryKind::Symlink => {}
            other => bail!(
                "{}{}: a {} cannot be part of a release (files, directories and symlinks only)",
                dir.display(),
                String::from_utf8_lossy(&entry.path),
                other.as_str()
            ),
        }
        if entry.kind == EntryKind::Symlink {
            let link = entry.target.as_deref().unwrap_or_default();
            let rel = Path::new(std::ffi::OsStr::from_bytes(&entry.path[1..]));
            if crate::extract::check_link_lexically(rel, link).is_err() {
                bail!(
                    "{}{}: symlink to {:?} leaves the tree; update would refuse it",
                    dir.display(),
                    String::from_utf8_lossy(&entry.path),
                    String::from_utf8_lossy(link)
                );
            }
        }
        entry.uid = owner.0;
        entry.gid = owner.1;
        entry.path = integrity_common::manifest::reroot(prefix, &entry.path);
        entries.push(entry);
    }
    Ok(entries)
}

/// `SOURCE_DATE_EPOCH`, or the newest mtime among the inputs.
fn build_epoch(dirs: &[&Path]) -> anyhow::Result<u64> {
    if let Ok(text) = std::env::var("SOURCE_DATE_EPOCH") {
        return text
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={text:?} is not a number of seconds"));
    }
    let mut newest = 0u64;
    let mut stack: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            use std::os::unix::fs::MetadataExt;
            newest = newest.max(meta.mtime().max(0) as u64);
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(newest)
}

/// Writes the tar.zst of one tree into `out_dir` as `out_name`: entries in manifest
/// order (sorted), headers normalized, content hashed again while it is written and
/// compared with the scan (a file changed during the build fails it instead of
/// shipping a bad release). Source files are opened below the tree's handle
/// (`src`, shown as `dir`) with no symlink followed and no blocking on a FIFO swapped
/// in; the archive is written to a fresh `O_EXCL` file of `out_dir` and hashed as it
/// is written: the returned digest is of the bytes written, never of a re-read file.
#[allow(clippy::too_many_arguments)]
fn write_archive(
    synthetic: Option<&[u8]>,
    src: BorrowedFd<'_>,
    dir: &Path,
    prefix: &str,
    entries: &[FileIntegrityEntry],
    epoch: u64,
    level: i32,
    out_dir: BorrowedFd<'_>,
    out_name: &str,
) -> anyhow::Result<(u64, Sha256Digest)> {
    let (file, temp) = handles::create_temp_at(out_dir, out_name.as_bytes())
        .with_context(|| format!("cannot create {out_name}"))?;
    let written = (|| -> anyhow::Result<(u64, Sha256Digest)> {
        handles::set_owner_mode(file.as_fd(), None, 0o644)?;
        let out = HashingWriter {
            inner: file,
            hasher: Default::default(),
        };
        // Independent frames, a new one every few MiB at an entry boundary: the guard
        // restores one entry without decoding what precedes it (see `frames`).
        let encoder =
            crate::frames::FrameWriter::new(BufWriter::with_capacity(1 << 20, out), level)?;
        let mut builder = tar::Builder::new(encoder);
        builder.mode(tar::HeaderMode::Deterministic);
        let mut bytes = 0u64;
        for entry in entries {
            let within = &entry.path[prefix.len()..];
            if within.is_empty() {
                continue; // the tree root: its mode lives in the manifest
            }
            builder.get_mut().entry_boundary();
            let rel = std::ffi::OsStr::from_bytes(&within[1..]);
            let source = dir.join(rel);
            let mut header = tar::Header::new_gnu();
            header.set_mode(entry.mode);
            header.set_uid(entry.uid as u64);
            header.set_gid(entry.gid as u64);
            header.set_mtime(epoch);
            match entry.kind {
                EntryKind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    builder.append_data(&mut header, Path::new(rel), std::io::empty())?;
                }
                EntryKind::Symlink => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    let target = entry.target.as_deref().unwrap_or_default();
                    builder.append_link(
                        &mut header,
                        Path::new(rel),
                        Path::new(std::ffi::OsStr::from_bytes(target)),
                    )?;
                }
                _ => {
                    header.set_entry_type(tar::EntryType::Regular);
                    let size = entry.size.unwrap_or(0);
                    header.set_size(size);
                    let file: Box<dyn std::io::Read> = match synthetic {
                        Some(bytes) if within == b"/VERSION" => Box::new(bytes),
                        _ => Box::new(
                            handles::open_file_beneath(src, &within[1..])
                                .with_context(|| format!("cannot read {}", source.display()))?
                                .0,
                        ),
                    };
                    let mut reader = HashingReader {
                        inner: std::io::Read::take(file, size),
                        hasher: Default::default(),
                    };
                    builder.append_data(&mut header, Path::new(rel), &mut reader)?;
                    if Some(reader.hasher.finish()) != entry.sha256 {
                        bail!("{} changed while the bundle was built", source.display());
                    }
                    bytes += size;
                }
            }
        }
        let encoder = builder.into_inner()?;
        let writer = encoder.finish()?;
        let hashing = writer.into_inner().map_err(|e| e.into_error())?;
        hashing.inner.sync_all()?;
        handles::rename_at(out_dir, &temp, out_dir, &CString::new(out_name)?)?;
        Ok((bytes, hashing.hasher.finish()))
    })();
    if written.is_err() {
        let _ = handles::remove_all_at(out_dir, &temp);
    }
    written.with_context(|| format!("cannot write {out_name}"))
}

/// Passes writes through and hashes exactly the bytes that went through.
struct HashingWriter<W> {
    inner: W,
    hasher: integrity_common::digest::Sha256Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: integrity_common::digest::Sha256Hasher,
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A CycloneDX 1.5 JSON SBOM of the release: the release as the BOM's subject and one
/// `file` component per regular file or symlink, with its SHA-256.
pub fn sbom(
    name: &str,
    version: &str,
    timestamp: &str,
    manifest: &Baseline,
    serial_seed: &Sha256Digest,
) -> Vec<u8> {
    let mut components = Vec::new();
    for entry in &manifest.entries {
        if entry.kind != EntryKind::File {
            continue;
        }
        let path = entry.path_text();
        let mut component = serde_json::json!({
            "type": "file",
            "bom-ref": format!("file:{path}"),
            "name": path.trim_start_matches('/'),
        });
        if let Some(digest) = entry.sha256 {
            component["hashes"] =
                serde_json::json!([{ "alg": "SHA-256", "content": digest.to_hex() }]);
        }
        components.push(component);
    }
    // A version-4-shaped UUID derived from the content, so the SBOM is reproducible.
    let b = serial_seed.0;
    let serial = format!(
        "urn:uuid:{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-4{:01x}{:02x}-{:01x}{:01x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5], b[6] & 0x0f, b[7], 8 | (b[8] & 0x3), b[8] >> 4, b[9],
        b[10], b[11], b[12], b[13], b[14], b[15]
    );
    let document = serde_json::json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial,
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "tools": { "components": [ {
                "type": "application",
                "name": "bulletproofctl",
                "version": env!("CARGO_PKG_VERSION"),
            } ] },
            "component": {
                "type": "application",
                "bom-ref": "release",
                "name": name,
                "version": version,
            },
        },
        "components": components,
    });
    let mut bytes = serde_json::to_vec_pretty(&document).expect("a JSON value serializes");
    bytes.push(b'\n');
    bytes
}

/// Builds the bundle into `options.out`.
pub fn build(options: &BuildOptions) -> anyhow::Result<Built> {
    let version = checksums::parse_version(&options.version).map_err(anyhow::Error::msg)?;
    let version_text = version.to_string();
    if version_text != options.version {
        bail!(
            "version {:?} is not in canonical semver form ({version_text})",
            options.version
        );
    }
    if let Some(expires) = &options.expires {
        integrity_common::validate_timestamp(expires).map_err(anyhow::Error::msg)?;
    }
    for dir in [&options.core, &options.modules] {
        if !fs::symlink_metadata(dir)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            bail!("{} is not a directory", dir.display());
        }
    }
    // The source trees are read below handles opened once (nothing followed, no FIFO
    // blocked on, whatever is swapped in during the build).
    let open_source = |dir: &Path| {
        handles::open_dir(dir).with_context(|| format!("cannot open {}", dir.display()))
    };
    let (core_dir, modules_dir) = (open_source(&options.core)?, open_source(&options.modules)?);
    // The core carries its VERSION: the operator's file when there is one (it must say
    // this version), else one written by the build (`VER\n`, mode 0644).
    let version_file = options.core.join("VERSION");
    let synthetic_version = match handles::stat_beneath(core_dir.as_fd(), b"VERSION") {
        Ok(Some(meta)) if meta.is_file() => {
            let mut text = String::new();
            handles::open_file_beneath(core_dir.as_fd(), b"VERSION")
                .and_then(|(file, _)| file.take(4096).read_to_string(&mut text))
                .with_context(|| format!("cannot read {}", version_file.display()))?;
            if text.trim() != version_text {
                bail!(
                    "{} says {:?}, not {version_text}",
                    version_file.display(),
                    text.trim()
                );
            }
            None
        }
        Ok(Some(_)) => bail!("{} is not a regular file", version_file.display()),
        Ok(None) => Some(format!("{version_text}\n").into_bytes()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", version_file.display())),
    };
    let epoch = build_epoch(&[&options.core, &options.modules])?;
    let timestamp = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch),
    )
    .to_string();

    let (core, modules) = rayon::join(
        || scan_tree(&options.core, "/core", options.owner),
        || scan_tree(&options.modules, "/modules", options.owner),
    );
    let (mut core, modules) = (core?, modules?);
    if let Some(bytes) = &synthetic_version {
        let entry = FileIntegrityEntry {
            path: b"/core/VERSION".to_vec().into_boxed_slice(),
            sha256: Some(Sha256Digest::of(bytes)),
            mode: 0o644,
            uid: options.owner.0,
            gid: options.owner.1,
            kind: EntryKind::File,
            size: Some(bytes.len() as u64),
            target: None,
            rdev: None,
        };
        let at = core
            .binary_search_by(|e| (*e.path).cmp(&entry.path))
            .unwrap_err();
        core.insert(at, entry);
    }
    let out = open_output_dir(&options.out)?;
    let out = out.as_fd();
    let [core_name, modules_name, manifest_name, sbom_name] =
        checksums::bundle_files(&version_text);
    let (core_bytes, modules_bytes) = rayon::join(
        || {
            write_archive(
                synthetic_version.as_deref(),
                core_dir.as_fd(),
                &options.core,
                "/core",
                &core,
                epoch,
                options.level,
                out,
                &core_name,
            )
        },
        || {
            write_archive(
                None,
                modules_dir.as_fd(),
                &options.modules,
                "/modules",
                &modules,
                epoch,
                options.level,
                out,
                &modules_name,
            )
        },
    );
    let ((core_bytes, core_digest), (modules_bytes, modules_digest)) =
        (core_bytes?, modules_bytes?);
    let bytes = core_bytes + modules_bytes;

    let mut entries = core;
    entries.extend(modules);
    let manifest = Baseline {
        image_id: format!("release-{version_text}"),
        timestamp: timestamp.clone(),
        entries,
        errors: Vec::new(),
        policy: None,
    };
    manifest.validate()?;
    let manifest_bytes = manifest.to_json_bytes();
    let manifest_digest = Sha256Digest::of(&manifest_bytes);
    let sbom_bytes = sbom(
        &options.name,
        &version_text,
        &timestamp,
        &manifest,
        &manifest_digest,
    );
    write_out(out, &manifest_name, &manifest_bytes)?;
    write_out(out, &sbom_name, &sbom_bytes)?;

    // What is signed is what was written: the digests of the bytes as they went out.
    let files = vec![
        (core_name, core_digest),
        (modules_name, modules_digest),
        (manifest_name, manifest_digest),
        (sbom_name, Sha256Digest::of(&sbom_bytes)),
    ];
    let checksums_text = checksums::format(&files);
    write_out(out, "checksums.txt", checksums_text.as_bytes())?;
    let comment = checksums::release_comment(&version_text, &timestamp, options.expires.as_deref());
    let signature =
        integrity_trust::sign(&options.secret_key, checksums_text.as_bytes(), &comment)?;
    write_out(out, "sig.minisig", signature.as_bytes())?;
    Ok(Built {
        files,
        entries: manifest.entries.len(),
        bytes,
    })
}

/// Creates (mode 0755 whatever the umask) and opens the output directory, which must be
/// the caller's and not writable by group or others: anyone else who can write there
/// could swap the files between their writing and their signing, or after.
fn open_output_dir(out: &Path) -> anyhow::Result<OwnedFd> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    let dir = handles::open_dir(out).with_context(|| format!("cannot open {}", out.display()))?;
    let meta = handles::fstat(&dir)?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid != me || meta.perm() & 0o022 != 0 {
        bail!(
            "refusing to write the bundle into {}: it is owned by uid {} with mode {:04o}, and an \
             output directory must be the caller's (uid {me}) and not writable by group or \
             others (whoever else can write there can swap what is being signed)",
            out.display(),
            meta.uid,
            meta.perm()
        );
    }
    Ok(dir)
}

/// Writes one bundle file into the output directory (`O_EXCL` temporary, mode 0644,
/// rename).
fn write_out(out: BorrowedFd<'_>, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    handles::write_atomic_at(out, &CString::new(name)?, bytes, 0o644, None)
        .with_context(|| format!("cannot write {name}"))
}
