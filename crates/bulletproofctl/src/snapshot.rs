//! `snapshot`: the active release (verified against its signed manifest first) as a
//! `backups/snapshot-<ver>-<time>.tar.zst`, signed with the host key.

use crate::{layout, oplog, release, seclog};
use anyhow::Context;
use integrity_trust::Password;
use std::path::PathBuf;

/// The exit code of a refusal (the release does not verify).
const EXIT_VERIFY: u8 = 1;

pub fn snapshot(
    layout: &layout::Layout,
    secret_key: Option<PathBuf>,
    password: Password<'_>,
) -> anyhow::Result<u8> {
    let active = layout
        .active_version()?
        .context("the root is not installed")?;
    if active == layout::EMPTY_RELEASE {
        anyhow::bail!("no release is active yet; nothing to snapshot");
    }
    seclog::ensure_ready(layout)?;
    // The host key vouches only for what the release key signed: the active release is
    // verified (signature chain, then content, modes, owners, nothing added or missing)
    // before anything is archived or signed.
    let release = layout.release(&active);
    let verified = release::release_key(layout, None).and_then(|key| {
        let (manifest, _) = release::verify_release(&release, &key, &active)?;
        release::full_verify(&release, &manifest).map_err(anyhow::Error::msg)
    });
    if let Err(error) = verified {
        let message = format!(
            "the active release {active} does not match its signed manifest ({error:#}); not signing it (bulletproofctl guard --once heals it)"
        );
        oplog::record(layout, "snapshot", &format!("refused: {message}"));
        eprintln!("bulletproofctl: refused: {message}");
        return Ok(EXIT_VERIFY);
    }
    let key_path = match secret_key {
        Some(path) => path,
        None => {
            let path = layout.host_key();
            if !path.exists() {
                let id = integrity_trust::keygen(&path, &layout.host_public_key(), None)?;
                eprintln!(
                    "bulletproofctl: created the host key {id} ({})",
                    path.display()
                );
            }
            path
        }
    };
    let sk = integrity_trust::load_secret_key(&key_path, password)?;
    let stamp = integrity_common::manifest::now_timestamp().replace([':', '-'], "");
    let name = format!("snapshot-{active}-{stamp}.tar.zst");
    let out = layout.archives().join(&name);
    let temp = tempfile::Builder::new()
        .prefix(".snapshot.")
        .tempfile_in(layout.archives())?;
    {
        let encoder = zstd::Encoder::new(std::io::BufWriter::new(temp.as_file()), 3)?;
        let mut builder = tar::Builder::new(encoder);
        builder.follow_symlinks(false);
        for part in ["core", "modules"] {
            builder.append_dir_all(part, release.join(part))?;
        }
        for part in [
            release::RELEASE_MANIFEST,
            release::RELEASE_CHECKSUMS,
            release::RELEASE_SIGNATURE,
        ] {
            builder.append_path_with_name(release.join(part), part)?;
        }
        builder.into_inner()?.finish()?;
    }
    temp.as_file().sync_all()?;
    let (digest, _) = integrity_common::scan::hash_reader(temp.reopen()?, u64::MAX)?;
    temp.persist(&out)?;
    let data = std::fs::read(&out)?;
    let comment = format!("snapshot:{active}\tsha256:{digest}\tfile:{name}");
    let signature = integrity_trust::sign(&sk, &data, &comment)?;
    layout::write_atomically(
        &integrity_trust::signature_path(&out),
        signature.as_bytes(),
        0o644,
    )?;
    oplog::record(
        layout,
        "snapshot",
        &format!("{} of {active}", out.display()),
    );
    println!("{}", out.display());
    Ok(0)
}
