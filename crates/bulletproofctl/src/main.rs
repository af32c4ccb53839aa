//! `bulletproofctl`: the operator's tool. This issue: minisign keys and signatures
//! (`keygen`, `sign`, `verify`), byte-compatible with the `minisign` command. Bundles,
//! updates, recovery, the guard and logs come with their issues.

use anyhow::Context;
use clap::{Parser, Subcommand};
use integrity_trust::Password;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A signature or key that does not verify.
const EXIT_VERIFY: u8 = 1;
/// Bad arguments, unreadable files, anything else.
const EXIT_ERROR: u8 = 2;

const AFTER_HELP: &str = "\
Keys and signatures are minisign's formats: `minisign -V` verifies what `sign` writes,
and `verify` checks what `minisign -S` writes (prehashed by default; legacy signatures
only with --allow-legacy).

Exit status: 0 success, 1 a signature that does not verify, 2 any other error.";

#[derive(Parser, Debug)]
#[command(version, about = "Bulletproof control tool: keys, signatures", after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a minisign key pair (unencrypted without --password-file, like minisign -W)
    Keygen {
        /// Where to write the secret key (mode 0600; never overwritten)
        #[arg(long, value_name = "FILE")]
        secret_key: PathBuf,
        /// Where to write the public key
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// Encrypt the secret key with the password on this file's first line
        #[arg(long, value_name = "F")]
        password_file: Option<PathBuf>,
    },
    /// Sign FILE, writing FILE.minisig
    Sign {
        /// The file to sign
        file: PathBuf,
        /// The secret key
        #[arg(long, value_name = "FILE")]
        secret_key: PathBuf,
        /// Password of an encrypted secret key (first line); without it the password is
        /// asked on the terminal, and refused when there is none
        #[arg(long, value_name = "F")]
        password_file: Option<PathBuf>,
        /// The trusted comment [default: timestamp:NOW<TAB>file:NAME<TAB>hashed]
        #[arg(long, value_name = "TEXT")]
        trusted_comment: Option<String>,
    },
    /// Verify FILE against its signature; prints the trusted comment
    Verify {
        /// The signed file
        file: PathBuf,
        /// The public key (minisign .pub file, or the bare base64 line)
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// The signature [default: FILE.minisig]
        #[arg(long, value_name = "SIG")]
        signature: Option<PathBuf>,
        /// Accept legacy (non-prehashed) signatures
        #[arg(long)]
        allow_legacy: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("bulletproofctl: error: {error:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn signature_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".minisig");
    PathBuf::from(name)
}

fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Keygen {
            secret_key,
            public_key,
            password_file,
        } => {
            let id = integrity_trust::keygen(&secret_key, &public_key, password_file.as_deref())?;
            eprintln!(
                "bulletproofctl: key {id}: secret key {} ({}), public key {}",
                secret_key.display(),
                if password_file.is_some() {
                    "encrypted"
                } else {
                    "unencrypted"
                },
                public_key.display()
            );
            Ok(0)
        }
        Command::Sign {
            file,
            secret_key,
            password_file,
            trusted_comment,
        } => {
            let password = match &password_file {
                Some(path) => Password::File(path),
                None => Password::PromptIfTerminal,
            };
            let sk = integrity_trust::load_secret_key(&secret_key, password)?;
            let data =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let comment = trusted_comment.unwrap_or_else(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let name = file
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default();
                integrity_trust::default_trusted_comment(&name, now)
            });
            let signature = integrity_trust::sign(&sk, &data, &comment)?;
            let out = signature_path(&file);
            write_atomically(&out, signature.as_bytes())?;
            eprintln!("bulletproofctl: wrote {}", out.display());
            Ok(0)
        }
        Command::Verify {
            file,
            public_key,
            signature,
            allow_legacy,
        } => {
            let pk = integrity_trust::load_public_key(&public_key)?;
            let data =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let sig_path = signature.unwrap_or_else(|| signature_path(&file));
            let text = std::fs::read(&sig_path)
                .with_context(|| format!("cannot read signature {}", sig_path.display()))?;
            let Ok(text) = String::from_utf8(text) else {
                eprintln!(
                    "bulletproofctl: {}: not a minisign signature",
                    sig_path.display()
                );
                return Ok(EXIT_VERIFY);
            };
            match integrity_trust::verify(&pk, &data, &text, allow_legacy) {
                Ok(trusted) => {
                    println!("Signature and comment signature verified");
                    println!("Trusted comment: {trusted}");
                    Ok(0)
                }
                Err(error) => {
                    eprintln!("bulletproofctl: {}: {error}", file.display());
                    Ok(EXIT_VERIFY)
                }
            }
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".minisig.")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write {}", path.display()))?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
