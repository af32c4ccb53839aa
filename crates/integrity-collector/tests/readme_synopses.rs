//! README.md's `integrity-collector` synopses match `integrity-collector --help` (every flag both ways), and every
//! flag and argument of its `--help` has a help text.

#[path = "../../../tests-support/readme_synopses.rs"]
mod readme_synopses;

#[test]
fn readme_synopses_match_help() {
    readme_synopses::assert_readme_matches(
        env!("CARGO_BIN_EXE_integrity-collector"),
        "integrity-collector",
    );
}
