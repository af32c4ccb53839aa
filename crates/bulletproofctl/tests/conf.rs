//! `render` and `flags`: the core's templates rendered into state/conf.d without
//! touching the core, feature flags round-tripped, every change a verified record in
//! the tamper-evident log.

use std::fs;
use std::process::Output;

mod common;
use common::{ctl, p, text, Root};

/// What a command that must have succeeded said.
fn ok(output: Output) -> String {
    text(&common::ok(output))
}

#[test]
fn render_and_flags_round_trip() {
    let f = Root::new();
    let root = f.root();
    let r = &f.r();
    let core = f.path("core");
    fs::create_dir_all(core.join("conf/nested")).unwrap();
    fs::create_dir_all(f.path("modules")).unwrap();
    fs::write(
        core.join("conf/app.toml.j2"),
        "port = {{ port }}\nversion = \"{{ version }}\"\n{% if flags.beta %}beta = true\n{% endif %}",
    )
    .unwrap();
    fs::write(core.join("conf/nested/log.conf.j2"), "root={{ root }}\n").unwrap();
    fs::write(core.join("conf/static.conf"), "not a template\n").unwrap();
    f.build("1.0.0", &core, &f.path("modules"), &f.path("b"));
    f.install(&["--no-venv"]);
    ok(f.update(&f.path("b")));

    // A variable the template needs and nobody gave is an error, nothing written.
    let missing = ctl(&["render", "--root", r]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("port"));
    assert!(!root.join("state/conf.d/app.toml").exists());

    let out = ok(ctl(&["render", "--root", r, "--var", "port=8080"]));
    assert!(out.contains("rendered"), "{out}");
    let conf = root.join("state/conf.d");
    assert_eq!(
        fs::read_to_string(conf.join("app.toml")).unwrap(),
        "port = 8080\nversion = \"1.0.0\"\n"
    );
    assert_eq!(
        fs::read_to_string(conf.join("nested/log.conf")).unwrap(),
        format!("root={r}\n")
    );
    assert!(
        !conf.join("static.conf").exists(),
        "only .j2 files are templates"
    );
    let again = ok(ctl(&["render", "--root", r, "--var", "port=8080"]));
    assert!(
        again.contains("unchanged") && !again.contains("rendered"),
        "{again}"
    );

    // Flags: set, get, list, unset; types kept; bad names refused.
    ok(ctl(&["flags", "set", "beta", "true", "--root", r]));
    ok(ctl(&["flags", "set", "workers", "4", "--root", r]));
    ok(ctl(&["flags", "set", "motd", "hello world", "--root", r]));
    assert_eq!(
        ok(ctl(&["flags", "get", "beta", "--root", r])).trim(),
        "true"
    );
    assert_eq!(
        ok(ctl(&["flags", "get", "motd", "--root", r])).trim(),
        "\"hello world\""
    );
    let list: serde_json::Value =
        serde_json::from_str(&ok(ctl(&["flags", "list", "--root", r]))).unwrap();
    assert_eq!(
        list,
        serde_json::json!({"beta": true, "workers": 4, "motd": "hello world"})
    );
    let on_disk: serde_json::Value =
        serde_json::from_slice(&fs::read(conf.join("flags.json")).unwrap()).unwrap();
    assert_eq!(on_disk, list);
    let unchanged = ok(ctl(&["flags", "set", "beta", "true", "--root", r]));
    assert!(unchanged.contains("unchanged"), "{unchanged}");
    assert_eq!(
        ctl(&["flags", "set", "../x", "1", "--root", r])
            .status
            .code(),
        Some(2)
    );
    ok(ctl(&["flags", "unset", "workers", "--root", r]));
    assert_eq!(
        ctl(&["flags", "get", "workers", "--root", r]).status.code(),
        Some(1)
    );

    // Flags reach the templates; the core was never written to.
    ok(ctl(&["render", "--root", r, "--var", "port=8080"]));
    assert!(fs::read_to_string(conf.join("app.toml"))
        .unwrap()
        .contains("beta = true"));
    assert!(!root.join("core/conf/app.toml").exists());
    ok(ctl(&["guard", "--once", "--root", r]));

    // Every change is in the tamper-evident log, which verifies.
    let log = fs::read_to_string(root.join("logs/security/bulletproofctl.jsonl")).unwrap();
    assert_eq!(log.matches("\"event\":\"flag\"").count(), 4, "{log}");
    assert!(log.contains("\"event\":\"render\""));
    ok(ctl(&[
        "log",
        "verify",
        p(&root.join("logs/security/bulletproofctl.jsonl")),
        "--root",
        r,
    ]));
}
