//! One signature format everywhere (ARCHITECTURE.md: trust chain): minisign. A thin layer over the
//! `minisign` crate by minisign's author (no Ed25519 of our own), adding what a tool that
//! runs unattended needs: keys loaded from files with or without a password, never a
//! prompt without a terminal, the trusted comment returned after it is verified, and
//! errors that say what is wrong without printing key material.
//!
//! Secret key files and password files are read through
//! `integrity_common::secret::read_secret`: refused when someone other than root or the
//! user running us could have written them, with a warning when others can read them.
//! The `*_with` functions hand that warning to the caller; the others print it on
//! stderr.
//!
//! Never `{:?}` a `minisign::SecretKey`: its `Debug` prints the key bytes.

use integrity_common::secret::{read_secret, warn_on_stderr};
pub use integrity_common::secret::{SecretError, SecretWarning};
use minisign::{KeyPair, PublicKeyBox, SecretKeyBox, SignatureBox};
pub use minisign::{PublicKey, SecretKey};
use std::fmt;
use std::io::{Cursor, IsTerminal};
use std::path::Path;

/// A trust failure. The text never contains secret material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustError(pub String);

impl fmt::Display for TrustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TrustError {}

fn err(context: &str, error: impl fmt::Display) -> TrustError {
    TrustError(format!("{context}: {error}"))
}

/// Where the password of an encrypted secret key comes from.
#[derive(Debug, Clone, Copy)]
pub enum Password<'a> {
    /// The first line of this file (a secret file: refused when others can write it).
    File(&'a Path),
    /// Ask on the terminal if there is one; refuse otherwise.
    PromptIfTerminal,
}

impl From<SecretError> for TrustError {
    fn from(error: SecretError) -> Self {
        TrustError(error.to_string())
    }
}

/// The password on the first line of `path` (a secret file: see the crate doc).
fn read_password(
    path: &Path,
    on_warning: &mut dyn FnMut(&SecretWarning),
) -> Result<String, TrustError> {
    let secret = read_secret(path, "password file")?;
    if let Some(warning) = secret.warning() {
        on_warning(warning);
    }
    Ok(secret.first_line()?.to_owned())
}

/// Where a file's detached signature lives: `FILE.minisig` (minisign's convention).
pub fn signature_path(file: &std::path::Path) -> std::path::PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".minisig");
    std::path::PathBuf::from(name)
}

/// A new key pair written as `secret` (mode 0600) and `public`, in minisign's formats:
/// encrypted with scrypt when a password file is given, unencrypted otherwise (like
/// `minisign -W`). Existing files are never overwritten.
/// A warning about the password file is printed on stderr ([`keygen_with`] hands it
/// to the caller).
pub fn keygen(secret: &Path, public: &Path, password: Option<&Path>) -> Result<String, TrustError> {
    keygen_with(secret, public, password, &mut warn_on_stderr)
}

/// [`keygen`], handing a warning about the password file (readable by others) to
/// `on_warning`.
pub fn keygen_with(
    secret: &Path,
    public: &Path,
    password: Option<&Path>,
    on_warning: &mut dyn FnMut(&SecretWarning),
) -> Result<String, TrustError> {
    for path in [secret, public] {
        if path.exists() {
            return Err(TrustError(format!(
                "{} exists; refusing to overwrite a key",
                path.display()
            )));
        }
    }
    let KeyPair { pk, sk } = match password {
        Some(file) => KeyPair::generate_encrypted_keypair(Some(read_password(file, on_warning)?)),
        None => KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|error| err("generating the key pair", error))?;
    let sk_box = sk
        .to_box(None)
        .map_err(|error| err("encoding the secret key", error))?;
    let pk_box = pk
        .to_box()
        .map_err(|error| err("encoding the public key", error))?;
    write_new(secret, sk_box.to_string().as_bytes(), 0o600)?;
    write_new(public, pk_box.to_string().as_bytes(), 0o644)?;
    Ok(key_id(&pk))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TrustError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|error| err(&format!("cannot create {}", path.display()), error))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| err(&format!("cannot write {}", path.display()), error))
}

/// The key id as minisign prints it (16 uppercase hex digits).
pub fn key_id(pk: &PublicKey) -> String {
    let mut id = [0u8; 8];
    id.copy_from_slice(&pk.keynum()[..8]);
    format!("{:016X}", u64::from_le_bytes(id))
}

/// Loads a secret key file (minisign format, encrypted or not). The key file and a
/// password file are secret files (see the crate doc); a warning about either is
/// printed on stderr ([`load_secret_key_with`] hands it to the caller).
pub fn load_secret_key(path: &Path, password: Password<'_>) -> Result<SecretKey, TrustError> {
    load_secret_key_with(path, password, &mut warn_on_stderr)
}

/// [`load_secret_key`], handing a warning about the key file or the password file
/// (readable by others) to `on_warning`.
pub fn load_secret_key_with(
    path: &Path,
    password: Password<'_>,
    on_warning: &mut dyn FnMut(&SecretWarning),
) -> Result<SecretKey, TrustError> {
    let secret = read_secret(path, "secret key")?;
    if let Some(warning) = secret.warning() {
        on_warning(warning);
    }
    let text = secret.text()?;
    let sk_box = SecretKeyBox::from_string(text)
        .map_err(|error| err(&format!("secret key {}", path.display()), error))?;
    if let Ok(sk) = SecretKey::from_unencrypted_box(sk_box.clone()) {
        return Ok(sk);
    }
    if let Some(sk) = unencrypted_without_checksum(text) {
        return Ok(sk);
    }
    let password = match password {
        Password::File(file) => Some(read_password(file, on_warning)?),
        Password::PromptIfTerminal if std::io::stdin().is_terminal() => None,
        Password::PromptIfTerminal => {
            return Err(TrustError(format!(
                "secret key {} is encrypted: give --password-file (no terminal to ask on)",
                path.display()
            )))
        }
    };
    SecretKey::from_box(sk_box, password)
        .map_err(|error| err(&format!("secret key {}", path.display()), error))
}

/// Reads an unencrypted key as the `minisign -W` command writes it: no KDF and an
/// all-zero checksum, which the `minisign` crate refuses as "Corrupted key" (it expects
/// the checksum an unencrypted key made by the crate carries). Accepted only when the
/// key is otherwise well-formed and the secret half matches its public half.
fn unencrypted_without_checksum(text: &str) -> Option<SecretKey> {
    use ct_codecs::{Base64, Decoder};
    const LEN: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32;
    let line = text.lines().nth(1)?.trim();
    let bytes = Base64::decode_to_vec(line, None).ok()?;
    if bytes.len() != LEN || &bytes[2..4] != b"\0\0" || bytes[LEN - 32..].iter().any(|&b| b != 0) {
        return None;
    }
    let sk = SecretKey::from_bytes(&bytes).ok()?;
    // An Ed25519 secret key carries its public key in its second half; a signature
    // made with it must verify with that public key, or the file is corrupt.
    let pk = PublicKey::from_secret_key(&sk).ok()?;
    minisign::sign(Some(&pk), &sk, Cursor::new(b"probe"), None, None).ok()?;
    Some(sk)
}

/// Loads a public key: a minisign `.pub` file, or the bare base64 line.
pub fn load_public_key(path: &Path) -> Result<PublicKey, TrustError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| err(&format!("cannot read public key {}", path.display()), error))?;
    parse_public_key(&text).map_err(|error| err(&format!("public key {}", path.display()), error))
}

/// Parses a public key from a `.pub` file's text or its base64 line.
pub fn parse_public_key(text: &str) -> Result<PublicKey, TrustError> {
    let trimmed = text.trim();
    let parsed = if trimmed.starts_with("untrusted comment:") {
        PublicKeyBox::from_string(trimmed).and_then(PublicKey::from_box)
    } else {
        PublicKey::from_base64(trimmed)
    };
    parsed.map_err(|error| TrustError(error.to_string()))
}

/// The public half of a secret key.
pub fn public_key_of(sk: &SecretKey) -> Result<PublicKey, TrustError> {
    PublicKey::from_secret_key(sk).map_err(|error| err("secret key", error))
}

/// Signs `data` (prehashed, minisign's default `ED`) and returns the `.minisig` text.
pub fn sign(sk: &SecretKey, data: &[u8], trusted_comment: &str) -> Result<String, TrustError> {
    if trusted_comment.contains(['\n', '\r']) {
        return Err(TrustError("a trusted comment is one line".into()));
    }
    let pk = PublicKey::from_secret_key(sk).map_err(|error| err("secret key", error))?;
    let untrusted = format!("signature from bulletproof secret key {}", key_id(&pk));
    minisign::sign(
        Some(&pk),
        sk,
        Cursor::new(data),
        Some(trusted_comment),
        Some(&untrusted),
    )
    .map(|signature| signature.into_string())
    .map_err(|error| err("signing", error))
}

/// Verifies a `.minisig` text over `data` with `pk` and returns its trusted comment
/// (verified too). Legacy `Ed` signatures are refused unless `allow_legacy`.
pub fn verify(
    pk: &PublicKey,
    data: &[u8],
    signature: &str,
    allow_legacy: bool,
) -> Result<String, TrustError> {
    let signature =
        SignatureBox::from_string(signature).map_err(|error| err("signature unreadable", error))?;
    let trusted = signature
        .trusted_comment()
        .map_err(|error| err("signature unreadable", error))?;
    minisign::verify(pk, &signature, Cursor::new(data), true, false, allow_legacy)
        .map_err(|error| TrustError(format!("signature does not verify: {error}")))?;
    Ok(trusted)
}

/// The image id a verified trusted comment vouches for: its `image_id:<id>` token
/// (tokens are separated by tabs or spaces, as in `image_id:ID<TAB>timestamp:TS`).
pub fn image_id_of(trusted_comment: &str) -> Option<&str> {
    trusted_comment
        .split(['\t', ' '])
        .find_map(|token| token.strip_prefix("image_id:"))
}

/// A `.minisig` text as one HTTP header value (standard base64), for uploads that
/// carry the signature with the baseline.
pub fn to_header(signature: &str) -> String {
    use ct_codecs::{Base64, Encoder};
    Base64::encode_to_string(signature.as_bytes()).unwrap_or_default()
}

/// The `.minisig` text of a header made by [`to_header`].
pub fn from_header(value: &str) -> Result<String, TrustError> {
    use ct_codecs::{Base64, Decoder};
    let bytes = Base64::decode_to_vec(value.trim(), None)
        .map_err(|_| TrustError("the signature header is not base64".into()))?;
    String::from_utf8(bytes).map_err(|_| TrustError("the signature header is not text".into()))
}

/// The checks of the `minisign` fuzz target (`fuzz/`), here so the corpus replay test
/// runs them without libFuzzer: hostile key and signature text never panics, and no
/// input verifies under a key whose secret nobody has.
pub mod fuzzing {
    /// A public key generated once for the fuzzer; its secret key was discarded.
    const ORPHAN_KEY: &str = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";

    pub fn check_key_and_signature_text(data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        let _ = super::parse_public_key(&text);
        let _ = super::from_header(&text);
        let key = super::parse_public_key(ORPHAN_KEY).expect("the orphan key parses");
        let (signature, signed) = match text.split_once("\n\n") {
            Some((signature, signed)) => (signature, signed.as_bytes()),
            None => (&*text, &b""[..]),
        };
        for legacy in [false, true] {
            assert!(
                super::verify(&key, signed, signature, legacy).is_err(),
                "a signature verified under a key nobody holds"
            );
        }
        if let Ok(trusted) = minisign::SignatureBox::from_string(signature)
            .and_then(|signature| signature.trusted_comment())
        {
            let _ = super::image_id_of(&trusted);
        }
    }
}

/// The default trusted comment of `bulletproofctl sign`, as the `minisign` command
/// writes it.
pub fn default_trusted_comment(file_name: &str, unix_time: u64) -> String {
    format!("timestamp:{unix_time}\tfile:{file_name}\thashed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify_and_refuse_forgeries() {
        let KeyPair { pk, sk } = KeyPair::generate_unencrypted_keypair().unwrap();
        let sig = sign(&sk, b"data", "image:a").unwrap();
        assert_eq!(verify(&pk, b"data", &sig, false).unwrap(), "image:a");
        assert!(verify(&pk, b"datA", &sig, false).is_err());
        let edited = sig.replace("trusted comment: image:a", "trusted comment: image:b");
        assert!(verify(&pk, b"data", &edited, false).is_err());
        let KeyPair { pk: other, .. } = KeyPair::generate_unencrypted_keypair().unwrap();
        assert!(verify(&other, b"data", &sig, false).is_err());
        assert!(verify(&pk, b"data", "garbage", false).is_err());
        assert!(verify(&pk, b"data", &sig[..sig.len() / 2], false).is_err());
        assert!(sign(&sk, b"x", "two\nlines").is_err());
        assert_eq!(from_header(&to_header(&sig)).unwrap(), sig);
        assert!(from_header("%%%").is_err());
    }

    #[test]
    fn key_and_password_files_others_can_write_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let chmod = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("pw");
        std::fs::write(&password, "pw-do-not-print\n").unwrap();
        let (sk, pk) = (dir.path().join("k.key"), dir.path().join("k.pub"));
        for mode in [0o666, 0o620] {
            chmod(&password, mode);
            let error = keygen(&sk, &pk, Some(&password)).unwrap_err().0;
            assert!(error.contains(&format!("mode {mode:04o}")), "{error}");
            assert!(error.contains("chmod 600"), "{error}");
            assert!(!error.contains("pw-do-not-print"), "{error}");
            assert!(!sk.exists() && !pk.exists());
        }
        chmod(&password, 0o644);
        let mut warnings = Vec::new();
        keygen_with(&sk, &pk, Some(&password), &mut |w| warnings.push(w.clone())).unwrap();
        assert_eq!(warnings.len(), 1);
        assert_eq!((warnings[0].mode, &*warnings[0].path), (0o644, &*password));
        // The key written is private; loading it with a private password file: silent.
        chmod(&password, 0o600);
        let mut warn = |w: &SecretWarning| panic!("unexpected warning: {w}");
        load_secret_key_with(&sk, Password::File(&password), &mut warn).unwrap();
        // The key file itself: readable by others warns, writable by others refuses.
        chmod(&sk, 0o644);
        let mut warnings = Vec::new();
        load_secret_key_with(&sk, Password::File(&password), &mut |w| {
            warnings.push(w.to_string())
        })
        .unwrap();
        assert!(warnings[0].contains("secret key"), "{warnings:?}");
        chmod(&sk, 0o646);
        let error = load_secret_key(&sk, Password::File(&password))
            .unwrap_err()
            .0;
        assert!(error.contains("mode 0646"), "{error}");
    }

    #[test]
    fn image_id_of_trusted_comments() {
        assert_eq!(image_id_of("image_id:a\ttimestamp:t"), Some("a"));
        assert_eq!(image_id_of("timestamp:t image_id:b"), Some("b"));
        assert_eq!(image_id_of("timestamp:t\tfile:x"), None);
        assert_eq!(image_id_of("ximage_id:c"), None);
    }
}
