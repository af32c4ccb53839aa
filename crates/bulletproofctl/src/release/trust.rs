//! The trust chain: a bundle (signature → trusted comment → every file's hash, files
//! kept open) and a kept release (`verify_release`: the one chain every command and
//! the guard use), the pinned release key, and files read from a release.

use super::*;

/// A bundle whose signature and hashes verified.
pub struct VerifiedBundle {
    pub dir: PathBuf,
    pub claim: ReleaseClaim,
    pub version: String,
    pub checksums: Vec<u8>,
    pub signature: String,
    pub files: BTreeMap<String, (Sha256Digest, fs::File)>,
}

pub(crate) fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, Failure> {
    let (file, _) = integrity_common::handles::open_file(path)
        .map_err(|e| refused(format!("{}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refused(format!("{}: {e}", path.display())))?;
    if bytes.len() as u64 > limit {
        return Err(refused(format!("{} is too large", path.display())));
    }
    Ok(bytes)
}

/// Signature first, then hashes; nothing is decompressed or parsed before both pass.
/// The files stay open: extraction reads the very files that were hashed.
pub fn verify_bundle(
    dir: &Path,
    key: &integrity_trust::PublicKey,
) -> Result<VerifiedBundle, Failure> {
    let checksums_bytes = read_bounded(&dir.join("checksums.txt"), checksums::MAX_CHECKSUMS_BYTES)?;
    let signature_bytes = read_bounded(&dir.join("sig.minisig"), 4096)?;
    let signature = String::from_utf8(signature_bytes)
        .map_err(|_| refused("sig.minisig is not a minisign signature"))?;
    let trusted = integrity_trust::verify(key, &checksums_bytes, &signature, false)
        .map_err(|e| refused(format!("sig.minisig: {e}")))?;
    let claim = checksums::parse_release_comment(&trusted).map_err(refused)?;
    if let Some(expires) = &claim.expires {
        let now = integrity_common::manifest::now_timestamp();
        if checksums::is_expired(expires, &now) {
            return Err(refused(format!(
                "the bundle's signature expired at {expires} (now {now})"
            )));
        }
    }
    let version = claim.version.to_string();
    let listed = checksums::parse(&checksums_bytes).map_err(refused)?;
    let expected = checksums::bundle_files(&version);
    for (name, _) in &listed {
        if !expected.contains(name) {
            return Err(refused(format!(
                "checksums.txt lists {name}, which is not part of release {version}"
            )));
        }
    }
    let mut files = BTreeMap::new();
    for name in &expected {
        let Some((_, digest)) = listed.iter().find(|(listed, _)| listed == name) else {
            return Err(refused(format!("checksums.txt does not list {name}")));
        };
        let path = dir.join(name);
        // Opened once, not followed, not blocked on (a FIFO swapped in is refused), and
        // kept open: staging and the archive read this very inode.
        let (mut file, _) = integrity_common::handles::open_file(&path)
            .map_err(|e| refused(format!("{}: {e}", path.display())))?;
        let (actual, _) = integrity_common::scan::hash_reader(&mut file, u64::MAX)
            .map_err(|e| refused(format!("{}: {e}", path.display())))?;
        if actual != *digest {
            return Err(refused(format!(
                "{name}: SHA-256 {actual} does not match checksums.txt ({digest})"
            )));
        }
        file.rewind().map_err(|e| Failure::Error(e.into()))?;
        files.insert(name.clone(), (*digest, file));
    }
    Ok(VerifiedBundle {
        dir: dir.to_path_buf(),
        claim,
        version,
        checksums: checksums_bytes,
        signature,
        files,
    })
}

/// The public key for this command: `--public-key` if given (pinned when nothing is
/// pinned yet), else the pinned one.
pub fn release_key(
    layout: &Layout,
    given: Option<&Path>,
) -> anyhow::Result<integrity_trust::PublicKey> {
    let pinned = layout.pinned_key();
    match given {
        Some(path) => {
            let key = integrity_trust::load_public_key(path)?;
            if !pinned.exists() {
                let text = fs::read(path)?;
                crate::layout::write_atomically(&pinned, &text, 0o644)?;
                crate::oplog::record(
                    layout,
                    "pin-key",
                    &format!("release key {} pinned", integrity_trust::key_id(&key)),
                );
            } else {
                let current = integrity_trust::load_public_key(&pinned)?;
                if integrity_trust::key_id(&current) != integrity_trust::key_id(&key) {
                    crate::oplog::record(
                        layout,
                        "key-override",
                        &format!(
                            "this command uses key {} instead of the pinned {}",
                            integrity_trust::key_id(&key),
                            integrity_trust::key_id(&current)
                        ),
                    );
                }
            }
            Ok(key)
        }
        None => integrity_trust::load_public_key(&pinned).with_context(|| {
            format!(
                "no release key pinned at {} (give --public-key, or pin one with install --public-key)",
                pinned.display()
            )
        }),
    }
}

/// The one trust chain of a kept release: signature over `checksums.txt` → trusted
/// comment (which must name `expected_version`, the version the release is kept and
/// activated as: an older signed release copied over a newer one's directory is
/// refused) → the manifest's checksum → the manifest.
pub fn verify_release(
    release: &Path,
    key: &integrity_trust::PublicKey,
    expected_version: &str,
) -> anyhow::Result<(Baseline, ReleaseClaim)> {
    let (manifest, claim) = load_release_manifest(release, key)?;
    if claim.version.to_string() != expected_version {
        bail!(
            "{} is kept as version {expected_version} but signed as version {}",
            release.display(),
            claim.version
        );
    }
    Ok((manifest, claim))
}

/// A file of a kept release or archive: root's, regular (a FIFO or symlink there is an
/// error, never a hang), present.
pub fn read_release_file(dir: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(name);
    crate::layout::read_trusted(&path)?.with_context(|| format!("{} is missing", path.display()))
}

/// The manifest of a release, read from its directory and checked against the signed
/// checksums kept beside it (see [`verify_release`], which every caller uses).
pub(crate) fn load_release_manifest(
    release: &Path,
    key: &integrity_trust::PublicKey,
) -> anyhow::Result<(Baseline, ReleaseClaim)> {
    let checksums_bytes = read_release_file(release, RELEASE_CHECKSUMS)?;
    let signature = String::from_utf8(read_release_file(release, RELEASE_SIGNATURE)?)
        .context("the signature is not text")?;
    let trusted = integrity_trust::verify(key, &checksums_bytes, &signature, false)
        .map_err(|e| anyhow::anyhow!("{}: {e}", release.display()))?;
    let claim = checksums::parse_release_comment(&trusted).map_err(anyhow::Error::msg)?;
    let listed = checksums::parse(&checksums_bytes).map_err(anyhow::Error::msg)?;
    let name = format!("manifest-{}.json", claim.version);
    let digest = listed
        .iter()
        .find(|(listed, _)| *listed == name)
        .map(|(_, digest)| *digest)
        .with_context(|| format!("{}: checksums.txt does not list {name}", release.display()))?;
    let bytes = read_release_file(release, RELEASE_MANIFEST)?;
    if Sha256Digest::of(&bytes) != digest {
        bail!(
            "{}: manifest.json does not match its signed checksum",
            release.display()
        );
    }
    Ok((Baseline::from_json_slice(&bytes)?, claim))
}
