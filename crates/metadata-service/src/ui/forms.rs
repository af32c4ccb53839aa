//! Login, logout, and the forms that change something. Every change is a POST that
//! carries the session's CSRF token, comes from our own origin (when the browser says
//! where it comes from), and needs an `admin` session; it goes through the same code as
//! the JSON API (`app::accepts`), so it is validated and audited the same way.

use super::layout::{self, page, problem, respond};
use super::session::Session;
use crate::app::{accepts, AppState};
use crate::auth::{AuthError, Caller, Scope, LOOPBACK};
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
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
    let (id, _) = match state.sessions().start(caller) {
        Ok(started) => started,
        Err(error) => {
            tracing::error!("cannot start a session: {error}");
            return problem(StatusCode::INTERNAL_SERVER_ERROR, None, "no session");
        }
    };
    with_cookie(Redirect::to("/ui/"), &state.sessions().cookie(&id))
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
    state.sessions().end(&headers);
    with_cookie(Redirect::to("/ui/login"), &state.sessions().removal())
}

#[derive(Deserialize)]
pub(super) struct AcceptForm {
    csrf: Option<String>,
    image_id: String,
    #[serde(default)]
    host_id: String,
    path: String,
    anomaly: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    back: String,
}

pub(super) async fn accept(
    State(state): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    form: Result<Form<AcceptForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            // The CSRF check comes first even for a malformed form.
            if let Some(refused) = refusal(&session, &headers, None, Scope::Admin) {
                return refused;
            }
            return problem(
                StatusCode::BAD_REQUEST,
                Some(&session),
                &rejection.body_text(),
            );
        }
    };
    if let Some(refused) = refusal(&session, &headers, form.csrf.as_deref(), Scope::Admin) {
        return refused;
    }
    let current = if form.current.trim().is_empty() {
        serde_json::Value::Null
    } else {
        match serde_json::from_str(&form.current) {
            Ok(current) => current,
            Err(error) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    Some(&session),
                    &format!("current: {error}"),
                )
            }
        }
    };
    let new = accepts::NewAccept {
        image_id: form.image_id,
        host_id: (!form.host_id.is_empty()).then_some(form.host_id),
        path: form.path,
        anomaly: form.anomaly,
        current,
        comment: form.comment,
    };
    match accepts::create_accept(state, &session.caller, new).await {
        Ok(_) => Redirect::to(back(&form.back)).into_response(),
        Err(error) => problem(error.status, Some(&session), &error.detail),
    }
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
        Ok(()) => Redirect::to("/ui/accepts").into_response(),
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
        && !back.starts_with("//")
        && !back.contains(['\\', '\r', '\n'])
        && back.len() <= 2048;
    if local {
        back
    } else {
        "/ui/"
    }
}

fn with_cookie(redirect: Redirect, cookie: &str) -> Response {
    let mut response = redirect.into_response();
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    for (name, value) in layout::headers().into_iter().skip(1) {
        response.headers_mut().insert(name, value);
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
