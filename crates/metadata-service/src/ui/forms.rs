//! Login, logout, and the forms that change something. Every change is a POST that
//! carries the session's CSRF token, comes from our own origin (when the browser says
//! where it comes from), and needs an `admin` session; it goes through the same code as
//! the JSON API (`app::accepts`), so it is validated and audited the same way.

use super::layout::{self, page, problem, respond};
use super::session::Session;
use crate::app::{accepts, AppState};
use crate::auth::{AuthError, Caller, Scope, LOOPBACK};
use crate::fleet::drift::GroupKey;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{Path, RawForm, State};
use axum::response::Response;
use axum::{Extension, Form};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use maud::{html, Markup};
use serde::Deserialize;
use std::sync::Arc;

/// Longest token accepted at login (configured ones are far shorter).
const MAX_TOKEN: usize = 4096;

fn login_form(error: Option<&str>) -> Markup {
    page(
        "Log in",
        None,
        html! {
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
            form #login method="post" action="/ui/login" {
                label for="token" { "Token (scope read or admin)" }
                input #token name="token" type="password" autocomplete="current-password"
                    required autofocus;
                button #login-submit type="submit" { "Log in" }
            }
            p.hint { "The token is sent once; the browser keeps only a session cookie." }
        },
    )
}

pub(super) async fn login_page() -> Response {
    respond(StatusCode::OK, login_form(None))
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

pub(super) async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    if !same_origin(&headers) {
        return problem(StatusCode::FORBIDDEN, None, "cross-origin form refused");
    }
    let refused = |detail: &str| respond(StatusCode::UNAUTHORIZED, login_form(Some(detail)));
    let Ok(Form(form)) = form else {
        return refused("Give a token.");
    };
    let token = form.token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN {
        return refused("Give a token.");
    }
    let caller = if state.tokens().is_empty() {
        // No tokens configured: the service listens on loopback only, and every
        // request already passes (REFERENCE §5).
        Caller {
            scope: Scope::Admin,
            id: LOOPBACK.to_owned(),
        }
    } else {
        match state.tokens().check_secret(token, Scope::Read) {
            Ok(caller) => caller,
            Err(AuthError::Scope) => {
                return refused("This token cannot read the fleet: it needs scope read or admin.")
            }
            Err(_) => {
                tracing::warn!("page login refused: unknown token");
                return refused("This token is not one the service accepts.");
            }
        }
    };
    let id = match state.sessions().login(caller).await {
        Ok(id) => id,
        Err(error) => {
            // 503 while the shared store is unreachable, else 500 (logged).
            let error = crate::app::ApiError::store(error);
            return problem(error.status, None, &error.detail);
        }
    };
    with_cookie("/ui/", &state.sessions().cookie(&id))
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    csrf: Option<String>,
}

pub(super) async fn logout(
    State(state): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let csrf = form.ok().and_then(|Form(form)| form.csrf);
    if let Some(refused) = refusal(&session, &headers, csrf.as_deref(), Scope::Read) {
        return refused;
    }
    if let Err(error) = state.sessions().logout(&headers).await {
        let error = crate::app::ApiError::store(error);
        return problem(error.status, Some(&session), &error.detail);
    }
    with_cookie("/ui/login", &state.sessions().removal())
}

/// An accept form names a finding by its id (`GroupKey::id`), never by the agent's
/// text: the finding is looked up here, in the host's latest report or in the image's
/// drift groups, so what is accepted is exactly what the page showed.
#[derive(Deserialize)]
pub(super) struct AcceptForm {
    image_id: String,
    #[serde(default)]
    host_id: String,
    finding: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    back: String,
}

pub(super) async fn accept(
    State(state): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Response {
    // The CSRF token is checked before anything else of the form is looked at.
    let csrf = serde_urlencoded::from_bytes::<CsrfForm>(&body)
        .ok()
        .and_then(|form| form.csrf);
    if let Some(refused) = refusal(&session, &headers, csrf.as_deref(), Scope::Admin) {
        return refused;
    }
    let form: AcceptForm = match serde_urlencoded::from_bytes(&body) {
        Ok(form) => form,
        Err(error) => {
            return problem(
                StatusCode::BAD_REQUEST,
                Some(&session),
                &format!("this form is incomplete or malformed: {error}"),
            )
        }
    };
    let host = (!form.host_id.is_empty()).then_some(form.host_id);
    let Some(key) = finding(&state, &form.image_id, host.as_deref(), &form.finding) else {
        return problem(
            StatusCode::CONFLICT,
            Some(&session),
            "This finding is no longer in the latest report (the host reported again). \
             Reload the page.",
        );
    };
    let new = accepts::NewAccept {
        image_id: form.image_id,
        host_id: host,
        path: key.path,
        anomaly: key.anomaly,
        current: serde_json::from_str(&key.current).unwrap_or(serde_json::Value::Null),
        comment: form.comment,
    };
    match accepts::create_accept(state, &session.caller, new).await {
        Ok(_) => layout::redirect(back(&form.back)),
        Err(error) => problem(error.status, Some(&session), &error.detail),
    }
}

/// The finding `id` of a host's latest report (of image `image`), or of the image's
/// drift groups when no host is named.
fn finding(state: &AppState, image: &str, host: Option<&str>, id: &str) -> Option<GroupKey> {
    let fleet = state.fleet.state();
    let found = match host {
        Some(host) => {
            let host = fleet.hosts.get(host)?;
            if host.record.image_id != image {
                return None;
            }
            host.latest
                .as_ref()?
                .findings
                .iter()
                .find(|key| key.id() == id)
                .map(|key| (**key).clone())
        }
        None => fleet
            .drift
            .groups(Some(image))
            .into_iter()
            .find(|(_, key, _)| key.id() == id)
            .map(|(_, key, _)| key.clone()),
    };
    found
}

pub(super) async fn revoke(
    State(state): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let csrf = form.ok().and_then(|Form(form)| form.csrf);
    if let Some(refused) = refusal(&session, &headers, csrf.as_deref(), Scope::Admin) {
        return refused;
    }
    let Ok(Path(id)) = path else {
        return problem(StatusCode::BAD_REQUEST, Some(&session), "bad accept id");
    };
    match accepts::revoke_accept(state, &session.caller, id).await {
        Ok(()) => layout::redirect("/ui/accepts"),
        Err(error) => problem(error.status, Some(&session), &error.detail),
    }
}

/// A form that changes something: same origin, this session's CSRF token, and a
/// session allowed to do it; the page that refuses it otherwise.
fn refusal(
    session: &Session,
    headers: &HeaderMap,
    csrf: Option<&str>,
    needed: Scope,
) -> Option<Response> {
    if !same_origin(headers) {
        return Some(problem(
            StatusCode::FORBIDDEN,
            Some(session),
            "cross-origin form refused",
        ));
    }
    if !session.csrf_matches(csrf) {
        return Some(problem(
            StatusCode::FORBIDDEN,
            Some(session),
            "This form is not from this session (CSRF token missing or wrong). Reload the page.",
        ));
    }
    if !session.caller.scope.allows(needed) {
        return Some(problem(
            StatusCode::FORBIDDEN,
            Some(session),
            "This needs an admin token.",
        ));
    }
    None
}

/// When the browser says where a POST comes from (`Origin`), it must be this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
    else {
        return false;
    };
    origin.to_str().is_ok_and(|origin| {
        origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
    })
}

/// Where a form returns to: a page of ours, never another site.
fn back(back: &str) -> &str {
    let local = back.starts_with("/ui/")
        && back.len() <= 2048
        && back
            .bytes()
            .all(|byte| (0x21..=0x7e).contains(&byte) && byte != b'\\');
    if local {
        back
    } else {
        "/ui/"
    }
}

fn with_cookie(to: &str, cookie: &str) -> Response {
    let mut response = layout::redirect(to);
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_return_only_to_our_pages() {
        assert_eq!(back("/ui/hosts/ab"), "/ui/hosts/ab");
        for hostile in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/baselines",
            "",
            "/ui/\r\nX: y",
        ] {
            assert_eq!(back(hostile), "/ui/", "{hostile:?}");
        }
    }

    #[test]
    fn only_our_origin_may_post() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&headers));
        headers.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(!same_origin(&headers));
    }
}
