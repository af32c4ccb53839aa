//! `status`: what is active, what is kept and archived, the last operations, and
//! whether the active version is the one the last signed operation activated
//! (ARCHITECTURE.md: the root; exit 4 when it is not, or when that cannot be told).

use crate::{activation, layout};
use anyhow::Context;

pub fn status(layout: &layout::Layout, json: bool) -> anyhow::Result<u8> {
    let active = layout.active_version()?.with_context(|| {
        format!(
            "{} is not installed (bulletproofctl install --root {})",
            layout.root.display(),
            layout.root.display()
        )
    })?;
    let state = layout::State::load(layout)?;
    let kept: Vec<String> = layout
        .kept_versions()?
        .iter()
        .map(|v| v.to_string())
        .collect();
    let archived: Vec<String> = layout
        .archived_versions()?
        .iter()
        .map(|v| v.to_string())
        .collect();
    let key = integrity_trust::load_public_key(&layout.pinned_key())
        .ok()
        .map(|k| integrity_trust::key_id(&k));
    let txn = layout::Txn::load(layout)?;
    // Is the active version the one the last signed operation activated? (ARCHITECTURE.md: the root)
    let (activation, recorded, problem) = match activation::check(layout, &active) {
        activation::Check::Authorized => ("authorized", Some(active.clone()), None),
        activation::Check::Unrecorded => (
            "unrecorded",
            None,
            (active != layout::EMPTY_RELEASE).then(|| {
                "no signed operation recorded an activation (install/activated.json is missing)"
                    .to_string()
            }),
        ),
        // An interrupted operation's journal explains the difference (the next command
        // undoes it): not an unauthorized activation.
        activation::Check::Unauthorized { recorded, .. }
            if txn
                .as_ref()
                .is_some_and(|t| t.from == recorded && (t.to == active || t.from == active)) =>
        {
            ("interrupted", Some(recorded), None)
        }
        activation::Check::Unauthorized { recorded, .. } => {
            let message = format!("UNAUTHORIZED ACTIVATION: {active} is active, but the last signed operation activated {recorded} (the guard re-activates {recorded})");
            ("unauthorized", Some(recorded), Some(message))
        }
        activation::Check::Unverifiable(why) => (
            "unverifiable",
            None,
            Some(format!("the activation record cannot be trusted: {why}")),
        ),
    };
    let code = if problem.is_some() { 4 } else { 0 };
    if let Some(problem) = &problem {
        eprintln!("bulletproofctl status: {problem}");
    }
    if json {
        let value = serde_json::json!({
            "root": layout.root,
            "active": active,
            "activation": { "status": activation, "recorded": recorded, "problem": problem },
            "previous": state.previous,
            "highest": state.highest,
            "kept": kept,
            "archived": archived,
            "release_key": key,
            "last_update": state.last_update,
            "last_verification": state.last_verification,
            "interrupted": txn.map(|t| serde_json::json!({"op": t.op, "from": t.from, "to": t.to})),
        });
        println!("{value}");
        return Ok(code);
    }
    let none = || "-".to_string();
    let listed = |versions: &[String]| {
        if versions.is_empty() {
            none()
        } else {
            versions.join(", ")
        }
    };
    println!("root:              {}", layout.root.display());
    println!("active:            {active}");
    match &problem {
        Some(problem) => println!("activation:        !!! {problem}"),
        None => println!("activation:        {activation}"),
    }
    println!(
        "previous:          {}",
        state.previous.clone().unwrap_or_else(none)
    );
    println!(
        "highest installed: {}",
        state.highest.clone().unwrap_or_else(none)
    );
    println!("kept:              {}", listed(&kept));
    println!("archived:          {}", listed(&archived));
    println!(
        "release key:       {}",
        key.unwrap_or_else(|| "none pinned".into())
    );
    let event = |e: &Option<layout::Event>| match e {
        Some(e) => format!("{} {} {}: {}", e.at, e.op, e.result, e.detail),
        None => none(),
    };
    println!("last update:       {}", event(&state.last_update));
    println!("last verification: {}", event(&state.last_verification));
    if let Some(txn) = txn {
        println!(
            "interrupted:       {} {} -> {} (undone by the next update, rollback or recover)",
            txn.op, txn.from, txn.to
        );
    }
    Ok(code)
}
