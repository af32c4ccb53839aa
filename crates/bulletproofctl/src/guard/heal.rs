//! The heal: quarantine what differs (with its evidence), put back what the signed
//! manifest says (through `crate::restore`), and the release's own signed files from
//! the archived bundle.

use super::*;

impl Guard {
    /// Quarantines what differs, restores what the manifest says. Returns the
    /// quarantine directory.
    pub(super) fn heal(
        &self,
        _config: &Config,
        active: &str,
        release_dir: &Path,
        manifest: &Baseline,
        drift: &[Drift],
    ) -> anyhow::Result<PathBuf> {
        let layout = &self.layout;
        let release = handles::open_dir(release_dir)
            .with_context(|| format!("cannot open {}", release_dir.display()))?;
        let release = release.as_fd();
        let quarantine = restore::Quarantine::create(layout)?;
        let mut evidence = quarantine.evidence()?;
        let expected = expected_entries(manifest);
        let mut restore: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut paths: Vec<&Drift> = drift.iter().collect();
        paths.sort_by(|a, b| a.path.cmp(&b.path));
        paths.dedup_by(|a, b| a.path == b.path);
        for d in paths {
            let want = expected.get(&d.path);
            // Below a symlink or a quarantined directory, a path is not there.
            let found = handles::stat_beneath(release, &d.path).ok().flatten();
            let found_record = found.as_ref().map(|m| {
                serde_json::json!({
                    "mode": format!("{:04o}", m.perm()), "uid": m.uid, "gid": m.gid, "size": m.size,
                    "type": match m.file_type() {
                        rustix::fs::FileType::Directory => "dir",
                        rustix::fs::FileType::Symlink => "symlink",
                        rustix::fs::FileType::RegularFile => "file",
                        _ => "other",
                    },
                })
            });
            if want.is_none() && found.is_none() {
                continue; // inside an added directory already quarantined
            }
            let shown = String::from_utf8_lossy(&d.path).into_owned();
            let content_differs = match (want, &found) {
                (None, Some(_)) => true,
                (Some(want), Some(_)) => {
                    let actual = actual_entries(release_dir, &d.path);
                    let first = actual.entries.first().filter(|a| *a.path == *d.path);
                    let unreadable = actual.errors.iter().any(|e| *e.path == *d.path);
                    unreadable
                        || first.map(|a| a.kind) != Some(want.kind)
                        || (want.kind == EntryKind::File
                            && first.and_then(|a| a.sha256) != want.sha256)
                        || (want.kind == EntryKind::Symlink
                            && first.and_then(|a| a.target.clone()) != want.target)
                }
                (_, None) => false,
            };
            let mut moved_to = None;
            if content_differs {
                moved_to = Some(quarantine.take(release, &d.path)?);
            }
            let action = if content_differs && want.is_some() {
                "quarantined, restored"
            } else if content_differs {
                "quarantined (not in the manifest)"
            } else if want.is_some() && found.is_none() {
                "restored"
            } else {
                "metadata restored"
            };
            let line = serde_json::json!({
                "path": shown, "anomaly": d.kind.as_str(), "action": action, "release": active,
                "found": found_record, "moved_to": moved_to,
                "expected": want.map(|w| serde_json::json!({
                    "type": w.kind.as_str(), "mode": format!("{:04o}", w.mode), "uid": w.uid, "gid": w.gid,
                    "size": w.size, "sha256": w.sha256.map(|s| s.to_hex()),
                })),
            });
            writeln!(evidence, "{line}")?;
            if let Some(want) = want {
                if content_differs || found.is_none() {
                    restore.insert(want.path.to_vec());
                } else {
                    restore::apply_entry_metadata(release, want)?;
                }
            }
        }
        evidence.sync_all()?;
        // Directories first (parents before children), then files and symlinks from
        // the archives.
        let mut from_archive: BTreeSet<Vec<u8>> = BTreeSet::new();
        for path in &restore {
            let want = &expected[path];
            if want.kind == EntryKind::Dir {
                restore::restore_dir_tree(release, &expected, path, &mut from_archive)?;
            } else {
                from_archive.insert(path.clone());
            }
        }
        if !from_archive.is_empty() {
            restore::restore_from_archives(layout, active, release, &expected, &from_archive)?;
        }
        Ok(quarantine.path)
    }
}

/// Copies the release's `manifest.json`, `checksums.txt` and `sig.minisig` back from
/// its archived bundle, after checking the bundle's signature and the manifest's hash.
pub(super) fn restore_release_metadata(
    layout: &Layout,
    version: &str,
    key: &integrity_trust::PublicKey,
) -> anyhow::Result<()> {
    let archive = layout.archive(version);
    let checksums = release::read_release_file(&archive, "checksums.txt")
        .with_context(|| format!("{} has no checksums.txt", archive.display()))?;
    let signature = String::from_utf8(release::read_release_file(&archive, "sig.minisig")?)
        .context("the signature is not text")?;
    let trusted = integrity_trust::verify(key, &checksums, &signature, false)?;
    let claim = crate::checksums::parse_release_comment(&trusted).map_err(anyhow::Error::msg)?;
    if claim.version.to_string() != version {
        anyhow::bail!("archives/{version} is signed as {}", claim.version);
    }
    let name = format!("manifest-{version}.json");
    let listed = crate::checksums::parse(&checksums).map_err(anyhow::Error::msg)?;
    let digest = listed
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, d)| *d)
        .context("checksums.txt does not list the manifest")?;
    let manifest = release::read_release_file(&archive, &name)?;
    if integrity_common::Sha256Digest::of(&manifest) != digest {
        anyhow::bail!("archives/{version}/{name} does not match its signed checksum");
    }
    let release_dir = layout.release(version);
    for (file, bytes) in [
        (release::RELEASE_MANIFEST, manifest.as_slice()),
        (release::RELEASE_CHECKSUMS, checksums.as_slice()),
        (release::RELEASE_SIGNATURE, signature.as_bytes()),
    ] {
        crate::layout::write_atomically(&release_dir.join(file), bytes, 0o644)?;
    }
    Ok(())
}
