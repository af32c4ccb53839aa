//! Staging a verified bundle: safe extraction (with the restore index), comparison
//! with the signed manifest, owners and modes from it, the bundle's own preflight.

use super::*;

/// Compares what was extracted with the signed manifest's entries under `prefix`.
pub(crate) fn compare_with_manifest(
    manifest: &Baseline,
    prefix: &str,
    items: &BTreeMap<Vec<u8>, Item>,
) -> Result<(), Failure> {
    let mut expected = 0usize;
    for entry in &manifest.entries {
        let Some(within) = entry.path.strip_prefix(prefix.as_bytes()) else {
            continue;
        };
        if !within.is_empty() && within[0] != b'/' {
            continue; // `/coreX` is not under `/core`
        }
        let shown = entry.path_text();
        if within.is_empty() {
            if entry.kind != EntryKind::Dir {
                return Err(refused(format!("manifest: {shown} is not a directory")));
            }
            continue;
        }
        expected += 1;
        let Some(item) = items.get(within) else {
            return Err(refused(format!(
                "{shown} is in the signed manifest but not in the archive"
            )));
        };
        let matches = match (entry.kind, item) {
            (EntryKind::Dir, Item::Dir) => true,
            (EntryKind::File, Item::File { size, sha256 }) => {
                entry.size == Some(*size) && entry.sha256 == Some(*sha256)
            }
            (EntryKind::Symlink, Item::Symlink { target }) => {
                entry.target.as_deref() == Some(target.as_slice())
            }
            _ => false,
        };
        if !matches {
            return Err(refused(format!(
                "{shown} in the archive differs from the signed manifest"
            )));
        }
    }
    if expected != items.len() {
        let extra = items
            .keys()
            .find(|key| {
                let mut full = prefix.as_bytes().to_vec();
                full.extend_from_slice(key);
                manifest
                    .entries
                    .binary_search_by(|e| (*e.path).cmp(&full))
                    .is_err()
            })
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .unwrap_or_default();
        return Err(refused(format!(
            "{prefix}{extra} is in the archive but not in the signed manifest"
        )));
    }
    Ok(())
}

/// Applies owners (as root) and modes from the manifest: children before parents, so a
/// read-only directory never blocks its own contents.
pub(crate) fn apply_metadata(release: &Path, manifest: &Baseline) -> anyhow::Result<()> {
    let root = is_root();
    for entry in manifest.entries.iter().rev() {
        let path = release.join(std::ffi::OsStr::from_bytes(&entry.path[1..]));
        if root {
            std::os::unix::fs::lchown(&path, Some(entry.uid), Some(entry.gid))
                .with_context(|| format!("cannot chown {}", path.display()))?;
        }
        if entry.kind != EntryKind::Symlink {
            fs::set_permissions(&path, fs::Permissions::from_mode(entry.mode))
                .with_context(|| format!("cannot chmod {}", path.display()))?;
        }
    }
    Ok(())
}

/// Stages a verified bundle: extraction of both archives (in parallel, one shared
/// budget), comparison with the signed manifest, modes and owners, the bundle's own
/// preflight. Returns the staged release directory (under `install/stage`).
pub(crate) fn stage_bundle(
    layout: &Layout,
    bundle: &mut VerifiedBundle,
    config: &Config,
) -> Result<(PathBuf, Baseline), Failure> {
    let version = bundle.version.clone();
    let [core_name, modules_name, manifest_name, _] = checksums::bundle_files(&version);
    let mut manifest_bytes = Vec::new();
    bundle
        .files
        .get_mut(&manifest_name)
        .expect("verified")
        .1
        .read_to_end(&mut manifest_bytes)
        .map_err(|e| Failure::Error(e.into()))?;
    if Sha256Digest::of(&manifest_bytes) != bundle.files[&manifest_name].0 {
        return Err(refused(format!(
            "{manifest_name} changed after it was verified"
        )));
    }
    let manifest = Baseline::from_json_slice(&manifest_bytes)
        .map_err(|e| refused(format!("{manifest_name}: {e}")))?;
    if manifest.image_id != format!("release-{version}") {
        return Err(refused(format!(
            "{manifest_name} is the manifest of {}, not of release-{version}",
            manifest.image_id
        )));
    }
    for entry in &manifest.entries {
        let under = |p: &str| {
            entry.path.starts_with(p.as_bytes())
                && (entry.path.len() == p.len() || entry.path[p.len()] == b'/')
        };
        if !(under("/core") || under("/modules")) {
            return Err(refused(format!(
                "{manifest_name}: {} is outside /core and /modules",
                entry.path_text()
            )));
        }
        if !matches!(
            entry.kind,
            EntryKind::Dir | EntryKind::File | EntryKind::Symlink
        ) {
            return Err(refused(format!(
                "{manifest_name}: {} is a {}",
                entry.path_text(),
                entry.kind.as_str()
            )));
        }
    }

    let stage_root = layout.stage();
    fs::create_dir_all(&stage_root).map_err(|e| Failure::Error(e.into()))?;
    let stage = tempfile::Builder::new()
        .prefix(&format!("{version}."))
        .tempdir_in(&stage_root)
        .map_err(|e| Failure::Error(e.into()))?;
    let budget = Budget::new(config.max_release_bytes, config.max_entries);
    let core_file = bundle.files.remove(&core_name).expect("verified").1;
    let modules_file = bundle.files.remove(&modules_name).expect("verified").1;
    // Extraction also notes where each frame and entry is: the restore index.
    let run = |file: fs::File,
               dir: &Path,
               name: &str|
     -> Result<(BTreeMap<Vec<u8>, Item>, frames::ArchiveIndex), Failure> {
        fs::create_dir(dir).map_err(|e| Failure::Error(e.into()))?;
        let (decoder, seen) =
            frames::FrameReader::new(file).map_err(|e| refused(format!("{name}: {e}")))?;
        let mut headers = BTreeMap::new();
        let items = extract::extract_indexed(decoder, dir, &budget, &mut headers)
            .map_err(|e| refused(format!("{name}: {e}")))?;
        let index = frames::ArchiveIndex {
            frames: seen.borrow().clone(),
            entries: headers
                .into_iter()
                .map(|(key, at)| (integrity_common::pathenc::encode(&key).into_owned(), at))
                .collect(),
        };
        Ok((items, index))
    };
    let core_dir = stage.path().join("core");
    let modules_dir = stage.path().join("modules");
    let (core_items, modules_items) = rayon::join(
        || run(core_file, &core_dir, &core_name),
        || run(modules_file, &modules_dir, &modules_name),
    );
    let ((core_items, core_index), (modules_items, modules_index)) = (core_items?, modules_items?);
    let restore_index: frames::ReleaseIndex = [
        ("core".to_string(), core_index),
        ("modules".to_string(), modules_index),
    ]
    .into();
    crash_point("extracted");
    compare_with_manifest(&manifest, "/core", &core_items)?;
    compare_with_manifest(&manifest, "/modules", &modules_items)?;
    match core_items.get(&b"/VERSION"[..]) {
        Some(Item::File { .. }) => {
            let text = fs::read_to_string(core_dir.join("VERSION")).unwrap_or_default();
            if text.trim() != version {
                return Err(refused(format!(
                    "core/VERSION says {:?}, the signature {version}",
                    text.trim()
                )));
            }
        }
        _ => return Err(refused("the core has no VERSION file")),
    }
    apply_metadata(stage.path(), &manifest)?;
    for (name, bytes) in [
        (RELEASE_MANIFEST, manifest_bytes.as_slice()),
        (RELEASE_CHECKSUMS, bundle.checksums.as_slice()),
        (RELEASE_SIGNATURE, bundle.signature.as_bytes()),
    ] {
        crate::layout::write_atomically(&stage.path().join(name), bytes, 0o644)?;
    }
    let index_bytes = serde_json::to_vec(&restore_index).map_err(|e| Failure::Error(e.into()))?;
    crate::layout::write_atomically(&stage.path().join(frames::INDEX_FILE), &index_bytes, 0o644)?;
    fs::set_permissions(stage.path(), fs::Permissions::from_mode(0o755))
        .map_err(|e| Failure::Error(e.into()))?;
    preflight(layout, stage.path(), &version, config)?;
    crash_point("preflight-done");
    Ok((stage.keep(), manifest))
}

/// Runs `core/preflight` of a staged release when the bundle ships one: cwd the staged
/// release, `BULLETPROOF_ROOT`, `BULLETPROOF_STAGE`, `BULLETPROOF_VERSION` set; a
/// non-zero exit or a timeout refuses the bundle.
pub(crate) fn preflight(
    layout: &Layout,
    staged: &Path,
    version: &str,
    config: &Config,
) -> Result<(), Failure> {
    let program = staged.join("core/preflight");
    match fs::symlink_metadata(&program) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(refused("core/preflight is not a regular file")),
        Err(_) => return Ok(()),
    }
    let mut child = std::process::Command::new(&program)
        .current_dir(staged)
        .env("BULLETPROOF_ROOT", &layout.root)
        .env("BULLETPROOF_STAGE", staged)
        .env("BULLETPROOF_VERSION", version)
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| refused(format!("cannot run the bundle's preflight: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(config.preflight_timeout_secs);
    loop {
        match child.try_wait().map_err(|e| Failure::Error(e.into()))? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => {
                return Err(refused(format!("the bundle's preflight failed ({status})")))
            }
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(refused(format!(
                    "the bundle's preflight ran longer than {} s",
                    config.preflight_timeout_secs
                )));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
