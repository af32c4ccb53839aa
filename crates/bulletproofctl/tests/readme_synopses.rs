//! README.md's `bulletproofctl` synopses match `bulletproofctl --help` (every flag both
//! ways, subcommands included), and every flag and argument of its `--help` has a
//! help text.

#[path = "../../../tests-support/readme_synopses.rs"]
mod readme_synopses;

use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_bulletproofctl");

#[test]
fn readme_synopses_match_help() {
    readme_synopses::assert_readme_matches(BIN, "bulletproofctl");
}

#[test]
fn a_drifted_synopsis_is_caught() {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    let drifted = text
        .replace("[--no-checkpoint]", "[--no-such-flag]")
        .replace("status [--json] |", "status [--jsn] |");
    assert_ne!(text, drifted, "the README lines this test edits are gone");
    let copy = std::env::temp_dir().join(format!("readme-synopses-{}.md", std::process::id()));
    std::fs::write(&copy, drifted).unwrap();
    let problems = readme_synopses::check(BIN, "bulletproofctl", &copy);
    std::fs::remove_file(&copy).unwrap();
    let has = |needle: &str| problems.iter().any(|p| p.contains(needle));
    assert!(has("`--no-such-flag` is in no --help"), "{problems:#?}");
    assert!(has("`--jsn` is in no --help"), "{problems:#?}");
    assert!(
        has("`bulletproofctl log verify` synopsis lacks `--no-checkpoint`"),
        "{problems:#?}"
    );
    assert!(
        has("`bulletproofctl status` synopsis lacks `--json`"),
        "{problems:#?}"
    );
}

#[test]
fn help_without_text_is_caught() {
    let help = readme_synopses::parse_help(
        "Usage: x [OPTIONS]\n\nOptions:\n      --documented <F>  Says what\n      --bare <F>\n      --only-default  [default: 3]\n  -h, --help  Print help\n",
    );
    assert!(help.flags.contains("--documented") && help.flags.contains("--bare"));
    assert_eq!(help.undocumented, ["--bare <F>", "--only-default"]);
}
