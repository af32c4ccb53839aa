//! The admin's pages: accepted drift (with revoke forms) and the audit log with its
//! verification state.

use super::layout::{csrf_field, head, is_admin, page, problem, respond, text};
use super::session::Session;
use super::text::{clip, current_text};
use crate::app::{accepts, AppState};
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use http::StatusCode;
use maud::html;
use std::sync::Arc;

/// Audit records shown.
pub const AUDIT: usize = 200;

/// The page for a session that is not an admin's (these pages are admin-only, as
/// `GET /accepts` and `GET /audit` are).
fn admin_only(session: &Session) -> Option<Response> {
    (!is_admin(session)).then(|| {
        problem(
            StatusCode::FORBIDDEN,
            Some(session),
            "This needs an admin token.",
        )
    })
}

pub(super) async fn accepts(
    State(state): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    if let Some(refused) = admin_only(&session) {
        return refused;
    }
    let list = accepts::accepts(&state, None);
    let body = html! {
        @if list.is_empty() {
            p { "Nothing is accepted." }
        } @else {
            table #accepts {
                (head(&["Image", "Host", "Path", "Finding", "Values", "Comment", "By, when", "Action"]))
                tbody {
                    @for accept in &list {
                        tr data-accept=(accept.id) {
                            td { a href={ "/ui/images/" (accept.image_id) } { (accept.image_id) } }
                            td { @match &accept.host_id {
                                Some(host) => { a href={ "/ui/hosts/" (host) } { code { (host) } } }
                                None => { "every host" }
                            } }
                            td.path { code { (clip(&accept.path)) } }
                            td { (accept.anomaly) }
                            td { (clip(&current_text(&accept.current))) }
                            td { (clip(&accept.comment)) }
                            td { (accept.created_by.strip_prefix("name:").unwrap_or(&accept.created_by)) ", " (accept.created) }
                            td {
                                form.revoke method="post" action={ "/ui/accepts/" (accept.id) "/revoke" } {
                                    (csrf_field(&session))
                                    button.revoke type="submit" { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    respond(StatusCode::OK, page("Accepted drift", Some(&session), body))
}

pub(super) async fn audit(
    State(state): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    if let Some(refused) = admin_only(&session) {
        return refused;
    }
    let Some(audit) = state.fleet.audit.clone() else {
        return problem(
            StatusCode::NOT_FOUND,
            Some(&session),
            "This service keeps no audit log.",
        );
    };
    let worker = state.clone();
    let checked =
        tokio::task::spawn_blocking(move || (audit.verify(), worker.fleet.audit_records(AUDIT)))
            .await;
    let (verdict, records) = match checked {
        Ok((verdict, Ok(records))) => (verdict, records),
        Ok((_, Err(error))) => {
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                Some(&session),
                &format!("{error:#}"),
            )
        }
        Err(error) => {
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                Some(&session),
                &error.to_string(),
            )
        }
    };
    let shared = state.fleet.follow_from.is_some();
    let body = html! {
        @if shared {
            p.hint { "Records of every replica, from the shared database. Each replica keeps its own tamper-evident chain; the check below is this replica's." }
        }
        p #verification {
            @match &verdict {
                Ok(verdict) => @match &verdict.problem {
                    None => { span.st.st-clean { "intact" } ": " (verdict.records) " records, their chain and MACs check with the initial key kept on this host" }
                    Some((_, line, what)) => { span.st.st-drifted { "broken" } ": line " (line) ": " (what) }
                },
                Err(error) => { span.st.st-failing { "not checked" } ": " (format!("{error:#}")) }
            }
        }
        p.hint { "A copy of the initial key kept off this host proves more: bulletproofctl log verify." }
        table #audit {
            @if shared {
                (head(&["Seq", "Replica", "Time", "Event", "What"]))
            } @else {
                (head(&["Seq", "Time", "Event", "What"]))
            }
            tbody {
                @for record in &records {
                    tr {
                        td.num { (text(&record["seq"])) }
                        @if shared { td { (text(&record["replica"])) } }
                        td { (text(&record["ts"])) }
                        td { (text(&record["event"])) }
                        td { (clip(&text(&record["msg"]))) }
                    }
                }
            }
        }
    };
    respond(StatusCode::OK, page("Audit", Some(&session), body))
}
