//! Man pages and shell completions generated from a binary's own clap definition, so
//! the packaged documentation cannot drift from the flags. Each binary calls
//! [`maybe_generate`] first thing in `main`: `BINARY --generate-dist DIR` (not shown in
//! `--help`) writes `DIR/man/BINARY.1` and `DIR/completions/{bash/BINARY,zsh/_BINARY,fish/BINARY.fish}`
//! and exits. The .deb build (`scripts/deb`) runs it for the four binaries.

use std::path::Path;

/// The hidden first argument that asks for generation.
pub const FLAG: &str = "--generate-dist";

/// Generates and exits when the first argument is [`FLAG`]; returns otherwise.
pub fn maybe_generate(command: impl FnOnce() -> clap::Command) {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(FLAG)) {
        return;
    }
    let Some(dir) = args.next() else {
        eprintln!("usage: {FLAG} DIR");
        std::process::exit(2);
    };
    match generate(command(), Path::new(&dir)) {
        Ok(()) => std::process::exit(0),
        Err(error) => {
            eprintln!("{FLAG}: {error}");
            std::process::exit(2);
        }
    }
}

/// Writes the man page (section 1) and bash, zsh and fish completions of `command`.
pub fn generate(mut command: clap::Command, dir: &Path) -> std::io::Result<()> {
    let name = command.get_name().to_owned();
    let man_dir = dir.join("man");
    let completion_dir = dir.join("completions");
    std::fs::create_dir_all(&man_dir)?;
    command.build();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    std::fs::write(man_dir.join(format!("{name}.1")), page)?;
    // Debian's names: bash-completion/completions/NAME, zsh _NAME, fish NAME.fish.
    for (shell, sub, file) in [
        (clap_complete::Shell::Bash, "bash", name.clone()),
        (clap_complete::Shell::Zsh, "zsh", format!("_{name}")),
        (clap_complete::Shell::Fish, "fish", format!("{name}.fish")),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut command, &name, &mut out);
        std::fs::create_dir_all(completion_dir.join(sub))?;
        std::fs::write(completion_dir.join(sub).join(file), out)?;
    }
    // Subcommands get their own pages (bulletproofctl-update.1, …), as git does.
    for sub in command.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let sub_name = format!("{name}-{}", sub.get_name());
        let mut page = Vec::new();
        clap_mangen::Man::new(sub.clone().name(sub_name.clone())).render(&mut page)?;
        std::fs::write(man_dir.join(format!("{sub_name}.1")), page)?;
    }
    Ok(())
}
