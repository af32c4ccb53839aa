//! The pages that read: overview, image, drift group, host. Each takes
//! its data from the same functions as the JSON API (`app::hosts::hosts_page`,
//! `host_detail`, `report_history`, `fleet::views`), then renders it.

use super::chart;
use super::layout::{count, csrf_field, head, is_admin, page, problem, respond, text};
use super::session::Session;
use super::text::{change_text, clip, current_text};
use crate::app::{hosts, reports, AppState};
use crate::fleet::drift::GroupKey;
use crate::fleet::host::Status;
use crate::fleet::{now_secs, views};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Extension;
use http::StatusCode;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// Hosts per page of an image.
pub const HOSTS_PER_PAGE: usize = 50;
/// Drift groups shown on an image's page (the largest first).
pub const GROUPS_PER_PAGE: usize = 100;
/// Hosts listed on a drift group's page.
pub const GROUP_HOSTS: usize = 1000;
/// Reports in a host's history.
pub const HISTORY: usize = 20;
/// Findings of the latest report shown on a host's page.
pub const FINDINGS: usize = 200;

const KINDS: [(&str, &str); 4] = [
    ("modified", "modified"),
    ("metadata_changed", "metadata"),
    ("added", "added"),
    ("deleted", "deleted"),
];

fn status_counts(counts: Option<&views::ImageCounts>) -> [(&'static str, u64); 4] {
    Status::ALL.map(|status| {
        (
            status.as_str(),
            counts
                .and_then(|counts| counts.by_status.get(&status).copied())
                .unwrap_or(0),
        )
    })
}

pub(super) async fn overview(
    State(state): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    let baselines = state.baselines_signed().await;
    let counts = state.image_counts();
    let today = crate::fleet::daily::day_of(now_secs());
    let series: Vec<_> = {
        let fleet = state.fleet.state();
        counts
            .keys()
            .map(|image| fleet.daily.series(image, today))
            .collect()
    };
    let body = html! {
        @if counts.is_empty() {
            p { "No baseline is stored and no host has reported yet." }
        } @else {
            table #images {
                caption { "Images, their baselines and their hosts" }
                (head(&["Image", "Baseline", "Hosts"].into_iter().chain(Status::ALL.map(Status::as_str)).chain(["Last report", "Drifted hosts, 14 days"]).collect::<Vec<_>>()))
                tbody {
                    @for ((image, counts), series) in counts.iter().zip(&series) {
                        @let statuses = status_counts(Some(counts));
                        tr data-image=(image) {
                            th scope="row" { a.image href={ "/ui/images/" (image) } { (image) } }
                            td.baseline {
                                @match baselines.iter().find(|(meta, _)| &meta.image_id == image) {
                                    Some((meta, signed)) => {
                                        (meta.timestamp) br;
                                        (meta.entries) " entries, "
                                        @if *signed { "signed" } @else { span.warn { "unsigned" } }
                                    }
                                    None => { span.warn { "no baseline" } }
                                }
                            }
                            td { (chart::status_bar(statuses)) }
                            @for (status, n) in statuses { td class=(status) { (n) } }
                            td { (counts.last_report.as_deref().unwrap_or("never")) }
                            td { (chart::drift_chart(series, today)) }
                        }
                    }
                }
            }
        }
    };
    respond(StatusCode::OK, page("Images", Some(&session), body))
}

#[derive(Deserialize)]
pub(super) struct ImageQuery {
    status: Option<String>,
    after: Option<String>,
}

fn image_id(path: Result<Path<String>, PathRejection>) -> Result<String, String> {
    let Path(id) = path.map_err(|rejection| rejection.body_text())?;
    integrity_common::validate_image_id(&id).map_err(|why| why.to_string())?;
    Ok(id)
}

pub(super) async fn image(
    State(state): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ImageQuery>, QueryRejection>,
) -> Response {
    let image = match image_id(path) {
        Ok(image) => image,
        Err(why) => return problem(StatusCode::BAD_REQUEST, Some(&session), &why),
    };
    let Ok(Query(query)) = query else {
        return problem(StatusCode::BAD_REQUEST, Some(&session), "bad query");
    };
    let counts = state.image_counts();
    let Some(image_counts) = counts.get(&image) else {
        return problem(
            StatusCode::NOT_FOUND,
            Some(&session),
            "No baseline and no host for this image.",
        );
    };
    let status = query.status.filter(|status| !status.is_empty());
    let listing = hosts::hosts_page(
        &state,
        &hosts::HostsQuery {
            image_id: Some(image.clone()),
            status: status.clone(),
            limit: Some(HOSTS_PER_PAGE),
            after: query.after.clone(),
        },
    );
    let listing = match listing {
        Ok(listing) => listing,
        Err(error) => return problem(error.status, Some(&session), &error.detail),
    };
    let (drift, total_groups) = {
        let fleet = state.fleet.state();
        let total = fleet.drift.groups(Some(&image)).len();
        (views::drift(&fleet, Some(&image), GROUPS_PER_PAGE), total)
    };
    let groups = drift["groups"].as_array().cloned().unwrap_or_default();
    let statuses = status_counts(Some(image_counts));
    let admin = is_admin(&session);
    let back = format!("/ui/images/{image}");
    let body = html! {
        section #counts aria-label="Hosts by status" {
            (chart::status_bar(statuses))
            ul.counts {
                @for (name, n) in statuses {
                    li data-status=(name) { span.count { (n) } " " (name) }
                }
            }
        }
        section {
            h2 { "Hosts" }
            form #filter method="get" action=(back) {
                label for="status" { "Status" }
                select #status name="status" {
                    option value="" selected[status.is_none()] { "all" }
                    @for each in Status::ALL {
                        option value=(each.as_str()) selected[status.as_deref() == Some(each.as_str())] {
                            (each.as_str())
                        }
                    }
                }
                button type="submit" { "Filter" }
            }
            (host_table("hosts", listing["hosts"].as_array().map_or(&[][..], |hosts| hosts)))
            @if let Some(next) = listing["next"].as_str() {
                @let href = match &status {
                    Some(status) => format!("{back}?status={status}&after={next}"),
                    None => format!("{back}?after={next}"),
                };
                p { a #next href=(href) rel="next" { "Next " (HOSTS_PER_PAGE) " hosts" } }
            }
        }
        section {
            h2 { "Drift groups" }
            p.hint { "The same finding on several hosts of this image is one group." }
            @if groups.is_empty() {
                p { "No drift." }
            } @else {
                @if total_groups > groups.len() {
                    p { "The " (groups.len()) " largest of " (total_groups) " groups (all of them: GET /drift)." }
                }
                @if admin {
                    // One form for the table, each row's button naming its group: the
                    // CSRF token once, not once per row (the page stays small).
                    form.accept-group method="post" action="/ui/accepts" {
                        (csrf_field(&session))
                        input type="hidden" name="image_id" value=(image);
                        input type="hidden" name="host_id" value="";
                        input type="hidden" name="back" value=(back);
                        (drift_table(&groups, &back, true))
                    }
                } @else {
                    (drift_table(&groups, &back, false))
                }
            }
        }
    };
    respond(
        StatusCode::OK,
        page(&format!("Image {image}"), Some(&session), body),
    )
}

/// An image's drift groups (`views::drift` values); with `accept`, a button per group
/// not yet accepted, submitting the form around the table with the group's id.
fn drift_table(groups: &[Value], back: &str, accept: bool) -> Markup {
    html! {
        table #drift {
            (head(&["Path", "Finding", "Now", "Hosts", "Accepted", "Action"][..if accept { 6 } else { 5 }]))
            tbody {
                @for group in groups {
                    @let id = group["id"].as_str().unwrap_or_default();
                    @let accepted = !group["accepted"].is_null();
                    tr.group data-group=(id) {
                        td.path { a.group href={ (back) "/drift/" (id) } { (clip(&text(&group["path"]))) } }
                        td.anomaly { (text(&group["anomaly"])) }
                        td.current { (clip(&current_text(&group["current"]))) }
                        td.hosts { (count(group, "hosts")) }
                        td.accepted { @if accepted { "yes" } @else { "no" } }
                        @if accept {
                            td { @if !accepted {
                                button.accept type="submit" name="finding" value=(id) { "Accept for all hosts" }
                            } }
                        }
                    }
                }
            }
        }
    }
}

/// A table of hosts (`views::host` values).
fn host_table(id: &str, hosts: &[Value]) -> Markup {
    html! {
        @if hosts.is_empty() {
            p { "No host." }
        } @else {
            table id=(id) {
                (head(&["Host", "Status", "Hostname", "Last seen"].into_iter().chain(KINDS.map(|(_, label)| label)).chain(["Agent", "Gaps"]).collect::<Vec<_>>()))
                tbody {
                    @for host in hosts {
                        @let host_id = host["host_id"].as_str().unwrap_or_default();
                        tr data-host=(host_id) {
                            td { a.host href={ "/ui/hosts/" (host_id) } { code { (host_id) } } }
                            td.status { span class={ "st st-" (text(&host["status"])) } { (text(&host["status"])) } }
                            td { (clip(&text(&host["hostname"]))) }
                            td { (text(&host["last_seen"])) }
                            @for (kind, _) in KINDS { td.num { (count(&host["summary"], kind)) } }
                            td { (clip(&text(&host["agent_version"]))) }
                            td.num { (host["gaps"].as_array().map_or(0, Vec::len)) }
                        }
                    }
                }
            }
        }
    }
}

/// The id of a finding (`GroupKey::id`): what an accept form names, so the finding is
/// looked up on the server and the agent's text never travels back through a form.
fn finding_id(finding: &Value) -> String {
    GroupKey {
        path: text(&finding["path"]),
        anomaly: text(&finding["anomaly"]),
        current: integrity_common::report::canonical_current(&finding["current"]),
    }
    .id()
}

/// The form that accepts a finding (for one host, or every host of the image).
fn accept_form(
    session: &Session,
    class: &str,
    image: &str,
    host: Option<&str>,
    finding: &str,
    back: &str,
    label: &str,
) -> Markup {
    html! {
        form class=(class) method="post" action="/ui/accepts" {
            (csrf_field(session))
            input type="hidden" name="image_id" value=(image);
            input type="hidden" name="host_id" value=(host.unwrap_or(""));
            input type="hidden" name="finding" value=(finding);
            input type="hidden" name="back" value=(back);
            button.accept type="submit" { (label) }
        }
    }
}

pub(super) async fn group(
    State(state): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let Ok(Path((image, group_id))) = path else {
        return problem(StatusCode::BAD_REQUEST, Some(&session), "bad path");
    };
    if let Err(why) = integrity_common::validate_image_id(&image) {
        return problem(StatusCode::BAD_REQUEST, Some(&session), &why.to_string());
    }
    let now = now_secs();
    let stale_after = state.fleet.config.stale_after.as_secs();
    let found = {
        let fleet = state.fleet.state();
        fleet
            .drift
            .groups(Some(&image))
            .into_iter()
            .find(|(_, key, _)| key.id() == group_id)
            .map(|(_, key, members)| {
                let hosts: Vec<Value> = members
                    .iter()
                    .take(GROUP_HOSTS)
                    .filter_map(|host_id| fleet.hosts.get(host_id))
                    .map(|host| views::host(host, &fleet, now, stale_after))
                    .collect();
                (key.clone(), members.len(), hosts)
            })
    };
    let Some((key, total, hosts)) = found else {
        return problem(
            StatusCode::NOT_FOUND,
            Some(&session),
            "No such drift group (it may have gone: hosts reported again).",
        );
    };
    let current: Value = serde_json::from_str(&key.current).unwrap_or(Value::Null);
    let body = html! {
        dl.facts {
            dt { "Image" } dd { a href={ "/ui/images/" (image) } { (image) } }
            dt { "Path" } dd.path { code { (clip(&key.path)) } }
            dt { "Finding" } dd { (key.anomaly) }
            dt { "Now" } dd { (clip(&current_text(&current))) }
            dt { "Hosts" } dd { (total) }
        }
        @if total > hosts.len() { p { "The first " (hosts.len()) " of " (total) " hosts." } }
        (host_table("group-hosts", &hosts))
    };
    respond(StatusCode::OK, page("Drift group", Some(&session), body))
}

pub(super) async fn host(
    State(state): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(host_id)) = path else {
        return problem(StatusCode::BAD_REQUEST, Some(&session), "bad host id");
    };
    if let Err(why) = integrity_common::report::validate_host_id(&host_id) {
        return problem(StatusCode::BAD_REQUEST, Some(&session), &why.to_string());
    }
    let detail = match hosts::host_detail(&state, host_id.clone()).await {
        Ok(detail) => detail,
        Err(error) => return problem(error.status, Some(&session), &error.detail),
    };
    let history = reports::report_history(&state, host_id.clone(), None, Some(HISTORY))
        .await
        .unwrap_or_default();
    let image = detail["image_id"].as_str().unwrap_or_default().to_owned();
    let latest = &detail["latest"];
    let all_findings = latest["anomalies"].as_array().map_or(&[][..], |all| all);
    let findings = &all_findings[..all_findings.len().min(FINDINGS)];
    let admin = is_admin(&session);
    let back = format!("/ui/hosts/{host_id}");
    let status = text(&detail["status"]);
    let body = html! {
        p { "Status: " strong #status class={ "st st-" (status) } { (status) } }
        @if let Some(error) = latest["error"].as_str() {
            p.error { "The latest check could not run: " (error) }
        }
        dl #identity .facts {
            dt { "Host id" } dd { code { (host_id) } }
            dt { "Hostname" } dd { (text(&detail["hostname"])) }
            dt { "Image" } dd { a href={ "/ui/images/" (image) } { (image) } }
            dt { "Key fingerprint" } dd { code { (text(&detail["key_fingerprint"])) } }
            dt { "Enrolled" } dd { (text(&detail["enrolled"])) }
            dt { "First seen" } dd { (text(&detail["first_seen"])) }
            dt { "Last seen" } dd { (text(&detail["last_seen"])) }
            dt { "Last seq" } dd { (text(&detail["last_seq"])) }
            dt { "Agent" } dd { (text(&detail["agent_version"])) ", " (text(&detail["mode"])) " check" }
            dt { "Last full check" } dd { (text(&detail["last_full"])) }
            dt { "Gaps" } dd #gaps {
                @match detail["gaps"].as_array() {
                    Some(gaps) if !gaps.is_empty() => {
                        @for gap in gaps { span.gap { (text(&gap[0])) "–" (text(&gap[1])) } " " }
                    }
                    _ => { "none" }
                }
            }
            dt { "Reports dropped by its spool" } dd { (text(&detail["spool_dropped"])) }
        }
        section {
            h2 { "Findings of the latest report" }
            @if findings.is_empty() {
                p { "None." }
            } @else {
                @if all_findings.len() > findings.len() {
                    p { "The first " (findings.len()) " of " (all_findings.len()) " findings (all of them: GET /hosts/" (host_id) ")." }
                }
                @if count(latest, "truncated") > 0 {
                    p { (count(latest, "truncated")) " more findings were not sent (the report's limit)." }
                }
                table #findings {
                    (head(&["Path", "Finding", "Change", "Accepted", "Action"][..if admin { 5 } else { 4 }]))
                    tbody {
                        @for finding in findings {
                            @let accepted = !finding["accepted"].is_null();
                            tr.finding {
                                td.path { code { (clip(&text(&finding["path"]))) } }
                                td.anomaly { (text(&finding["anomaly"])) }
                                td.change { (clip(&change_text(finding))) }
                                td.accepted { @if accepted { "yes" } @else { "no" } }
                                @if admin {
                                    td { @if !accepted {
                                        (accept_form(&session, "accept-finding", &image, Some(&host_id),
                                            &finding_id(finding), &back, "Accept"))
                                    } }
                                }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Reports" }
            table #history {
                (head(&["Seq", "Finished", "Mode"].into_iter().chain(KINDS.map(|(_, label)| label)).chain(["Error"]).collect::<Vec<_>>()))
                tbody {
                    @for report in history["reports"].as_array().map_or(&[][..], |all| all) {
                        tr {
                            td.num { (text(&report["seq"])) }
                            td { (text(&report["finished"])) }
                            td { (text(&report["mode"])) }
                            @for (kind, _) in KINDS { td.num { (count(&report["summary"], kind)) } }
                            td { @if !report["error"].is_null() { (text(&report["error"])) } }
                        }
                    }
                }
            }
        }
    };
    respond(
        StatusCode::OK,
        page(
            &format!("Host {}", text(&detail["hostname"])),
            Some(&session),
            body,
        ),
    )
}
