//! The page shell every page shares (header, navigation, logout form) and the small
//! pieces pages repeat. maud escapes every value it renders unless told otherwise
//! (`PreEscaped` is never used on data), so a path named `<script>…` is text.

use super::session::Session;
use crate::auth::Scope;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};
use http::StatusCode;
use maud::{html, Markup, DOCTYPE};

/// Headers of every page: no caching of what a session saw, nothing loaded or run from
/// elsewhere (no script at all), never framed. The referrer policy is `same-origin`,
/// not `no-referrer`: under `no-referrer` browsers send `Origin: null` with every form,
/// which the forms' origin check must refuse.
pub fn headers() -> [(header::HeaderName, HeaderValue); 5] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                 frame-ancestors 'none'; base-uri 'none'",
            ),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
    ]
}

/// `303 See Other` to one of our pages, with the pages' headers.
pub fn redirect(to: &str) -> Response {
    let mut response = axum::response::Redirect::to(to).into_response();
    for (name, value) in headers().into_iter().skip(1) {
        response.headers_mut().insert(name, value);
    }
    response
}

/// A whole page with the given status.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, headers(), markup.into_string()).into_response()
}

/// The shell: `title`, then `body`; the header has the navigation and, with a session,
/// who is logged in and the logout form.
pub fn page(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Bulletproof" }
                link rel="stylesheet" href="/ui/style.css";
            }
            body {
                header {
                    nav aria-label="Main" {
                        a.brand href="/ui/" { "Bulletproof" }
                        @if let Some(session) = session {
                            a href="/ui/" { "Images" }
                            @if session.caller.scope == Scope::Admin {
                                a href="/ui/accepts" { "Accepts" }
                                a href="/ui/audit" { "Audit" }
                            }
                        }
                    }
                    @if let Some(session) = session {
                        div.who {
                            span #whoami { (who(session)) }
                            form #logout method="post" action="/ui/logout" {
                                (csrf_field(session))
                                button #logout-submit type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// Whether the session may change something (accept, revoke).
pub fn is_admin(session: &Session) -> bool {
    session.caller.scope == Scope::Admin
}

/// "ops (read)": the token's name and scope, never its secret.
pub fn who(session: &Session) -> String {
    let name = session
        .caller
        .id
        .strip_prefix("name:")
        .unwrap_or(&session.caller.id);
    format!("{name} ({})", session.caller.scope.as_str())
}

/// A table's header row, one column header per name.
pub fn head(columns: &[&str]) -> Markup {
    html! { thead { tr { @for column in columns { th scope="col" { (column) } } } } }
}

pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A page that says why something was refused or not found.
pub fn problem(status: StatusCode, session: Option<&Session>, detail: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    respond(
        status,
        page(title, session, html! { p.error role="alert" { (detail) } }),
    )
}

/// A JSON value as short text: strings bare, `null` as "—", others as JSON.
pub fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "—".to_owned(),
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A count of a JSON object field, 0 when absent.
pub fn count(value: &serde_json::Value, field: &str) -> u64 {
    value
        .get(field)
        .and_then(|count| count.as_u64())
        .unwrap_or(0)
}
