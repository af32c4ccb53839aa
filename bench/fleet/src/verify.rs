//! After a run: what the service stored against what it acknowledged, and the timed
//! reads (`GET /fleet`, `GET /drift`).

use crate::stats::Percentiles;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::sim::*;

/// What the service stored for a host: its last seq and its gaps.
pub(crate) struct Stored {
    pub(crate) last_seq: u64,
    pub(crate) gaps: Vec<(u64, u64)>,
}

pub(crate) fn stored_of(host: &Value) -> Option<(String, Stored)> {
    let id = host.get("host_id")?.as_str()?.to_owned();
    let last_seq = host.get("last_seq").and_then(Value::as_u64).unwrap_or(0);
    let gaps = host
        .get("gaps")
        .and_then(Value::as_array)
        .map(|gaps| {
            gaps.iter()
                .filter_map(|gap| Some((gap.get(0)?.as_u64()?, gap.get(1)?.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    Some((id, Stored { last_seq, gaps }))
}

/// Compares acknowledged reports with what the service stored. With several servers
/// (replicas), after a few seconds (each follows the others' writes every second),
/// through each one that answers: lost is the most any of them misses.
pub(crate) async fn verify(sim: &Arc<Sim>) -> Value {
    let count = sim.http.bases.len();
    if count == 1 {
        return verify_at(sim, 0).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let mut each = Vec::new();
    for at in 0..count {
        let base = &sim.http.bases[at];
        match sim.http.get_at(at, "/healthz", false).await {
            Ok(answer) if answer.status == 200 => {
                let mut found = verify_at(sim, at).await;
                found["server"] = json!(base);
                each.push(found);
            }
            answer => {
                let why = answer.map_or_else(|error| error, |a| format!("status {}", a.status));
                println!("        verify: {base} does not answer ({why}): not asked");
                each.push(json!({"server": base, "unreachable": why}));
            }
        }
    }
    let asked: Vec<&Value> = each.iter().filter(|v| v.get("lost").is_some()).collect();
    let Some(worst) = asked
        .iter()
        .max_by_key(|v| v["lost"].as_u64().unwrap_or(u64::MAX))
    else {
        return json!({"method": "no server answered", "acknowledged": 0, "lost": null,
                      "servers": each});
    };
    let mut value = (*worst).clone();
    value["method"] = json!(format!(
        "{} via each of the {} of {count} servers answering",
        worst["method"].as_str().unwrap_or("?"),
        asked.len()
    ));
    value["servers"] = json!(each);
    value
}

/// Compares acknowledged reports with what server `at` stored. Uses the paged
/// `GET /hosts?image_id=` listing when it gives `last_seq`, else `GET /hosts/{id}` for
/// every host.
pub(crate) async fn verify_at(sim: &Arc<Sim>, at: usize) -> Value {
    let start = Instant::now();
    let mut stored: HashMap<String, Stored> = HashMap::new();
    let mut method = "GET /hosts?image_id= (paged)";
    let mut after: Option<String> = None;
    let mut listing_ok = true;
    loop {
        let mut path = format!("/hosts?image_id={}&limit=1000", sim.baseline.image_id);
        if let Some(cursor) = &after {
            path.push_str(&format!("&after={cursor}"));
        }
        let page = match sim.http.get_at(at, &path, true).await {
            Ok(answer) if answer.status == 200 => {
                serde_json::from_slice::<Value>(&answer.body).ok()
            }
            _ => None,
        };
        let Some(page) = page else {
            listing_ok = false;
            break;
        };
        let hosts = page
            .get("hosts")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if hosts.first().is_some_and(|h| h.get("last_seq").is_none()) {
            listing_ok = false;
            break;
        }
        stored.extend(hosts.iter().filter_map(stored_of));
        match page.get("next").and_then(Value::as_str) {
            Some(next) if !hosts.is_empty() => after = Some(next.to_owned()),
            _ => break,
        }
    }
    if !listing_ok {
        method = "GET /hosts/{id} per host";
        stored.clear();
        let mut tasks = JoinSet::new();
        for index in 0..sim.hosts.len() {
            let permit = sim.slots.clone().acquire_owned().await.expect("open");
            let sim = sim.clone();
            tasks.spawn(async move {
                let answer = sim
                    .http
                    .get_at(at, &format!("/hosts/{}", sim.hosts[index].id), true)
                    .await;
                drop(permit);
                match answer {
                    Ok(answer) if answer.status == 200 => {
                        serde_json::from_slice::<Value>(&answer.body)
                            .ok()
                            .and_then(|host| stored_of(&host))
                    }
                    _ => None,
                }
            });
        }
        while let Some(found) = tasks.join_next().await {
            if let Ok(Some((id, host))) = found {
                stored.insert(id, host);
            }
        }
    }
    let (mut acked, mut lost, mut hosts_missing, mut lost_samples) = (0u64, 0u64, 0u64, vec![]);
    for host in &sim.hosts {
        let state = host.state.lock().expect("host lock");
        acked += state.acked.len() as u64;
        let Some(found) = stored.get(&host.id) else {
            if !state.acked.is_empty() {
                hosts_missing += 1;
                lost += state.acked.len() as u64;
            }
            continue;
        };
        for &(seq, _) in &state.acked {
            let in_gap = found
                .gaps
                .iter()
                .any(|&(from, to)| (from..=to).contains(&seq));
            if seq > found.last_seq || in_gap {
                lost += 1;
                if lost_samples.len() < 5 {
                    lost_samples.push(format!(
                        "{} seq {seq} (last_seq {})",
                        host.id, found.last_seq
                    ));
                }
            }
        }
    }
    println!(
        "        verify: {acked} acknowledged, {lost} lost ({hosts_missing} hosts unknown to the service) via {method} of {}, {:.1} s",
        sim.http.bases[at],
        start.elapsed().as_secs_f64()
    );
    for sample in &lost_samples {
        println!("        verify  ! lost: {sample}");
    }
    json!({"method": method, "acknowledged": acked, "lost": lost,
           "hosts_missing": hosts_missing, "hosts_seen": stored.len(), "lost_samples": lost_samples})
}

/// Times a read `runs` times; the median and the last body.
pub(crate) async fn time_read(sim: &Arc<Sim>, path: &str, runs: usize) -> (Value, Option<Value>) {
    let mut times = Vec::new();
    let mut statuses = std::collections::BTreeMap::<String, u64>::new();
    let mut last = None;
    let mut bytes = 0;
    for _ in 0..runs.max(1) {
        let sent = Instant::now();
        let answer = sim.http.get(path, true).await;
        times.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
        let key = answer
            .as_ref()
            .map_or("error".to_owned(), |a| a.status.to_string());
        *statuses.entry(key).or_default() += 1;
        if let Ok(answer) = answer {
            bytes = answer.body.len();
            if answer.status == 200 {
                last = serde_json::from_slice::<Value>(&answer.body).ok();
            }
        }
    }
    let p = Percentiles::of(&times);
    println!(
        "{:>14}: median {:.1} ms, max {:.1} ms, {bytes} bytes, {statuses:?}",
        path.split('?').next().unwrap_or(path),
        p.p50,
        p.max
    );
    (
        json!({"path": path, "runs": p.count, "median_ms": p.p50, "max_ms": p.max,
               "bytes": bytes, "statuses": statuses}),
        last,
    )
}

/// Writes every acknowledged report as `host_id<TAB>seq<TAB>sha256` (for a check
/// against the database itself: `\copy` into a table, join with `reports`).
pub(crate) fn write_acked(sim: &Arc<Sim>, path: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let mut lines = 0u64;
    for host in &sim.hosts {
        let state = host.state.lock().expect("host lock");
        for (seq, digest) in &state.acked {
            writeln!(
                out,
                "{}\t{seq}\t{}",
                host.id,
                integrity_common::digest::Sha256Digest(*digest).to_hex()
            )?;
            lines += 1;
        }
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "         acked: {lines} acknowledged reports written to {}",
        path.display()
    );
    Ok(())
}
