//! The pages (`/ui/`, REFERENCE §8): server-rendered HTML over the same code
//! paths as the JSON API (`crate::app`'s query functions and `fleet::views`), usable
//! without JavaScript (there is none). Templates are maud macros compiled into the
//! binary; the stylesheet is ours and embedded.
//!
//! * `session.rs` — login sessions, cookies, CSRF tokens.
//! * `layout.rs` — the shell every page shares, headers (CSP), small helpers.
//! * `pages.rs` — the pages that read: overview, image, drift group, host;
//!   `admin.rs` — accepts (with revoke) and the audit log; `text.rs` — how values show.
//! * `forms.rs` — login, logout and the forms that change something (accept, revoke).
//! * `chart.rs` — the SVG drawn on the server (status bars, 14 days of drift).

mod admin;
pub mod chart;
mod forms;
pub(crate) mod layout;
mod pages;
pub mod session;
#[cfg(test)]
mod tests;
mod text;

use crate::app::AppState;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http::{header, HeaderValue, Method, StatusCode};
use std::sync::Arc;

/// The pages' route templates (also the metrics' `route` labels).
pub const ROUTES: [&str; 11] = [
    "/ui",
    "/ui/",
    "/ui/login",
    "/ui/logout",
    "/ui/style.css",
    "/ui/images/{image_id}",
    "/ui/images/{image_id}/drift/{group_id}",
    "/ui/hosts/{host_id}",
    "/ui/accepts",
    "/ui/accepts/{id}/revoke",
    "/ui/audit",
];

const STYLE: &str = include_str!("style.css");

/// The pages' routes; those after login need a session ([`with_session`]).
pub fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let session = middleware::from_fn_with_state(state, with_session);
    let open = Router::new()
        .route(ROUTES[0], get(|| async { layout::redirect("/ui/") }))
        .route(ROUTES[2], get(forms::login_page).post(forms::login))
        .route(ROUTES[4], get(style));
    let closed = Router::new()
        .route(ROUTES[1], get(pages::overview))
        .route(ROUTES[3], post(forms::logout))
        .route(ROUTES[5], get(pages::image))
        .route(ROUTES[6], get(pages::group))
        .route(ROUTES[7], get(pages::host))
        .route(ROUTES[8], get(admin::accepts).post(forms::accept))
        .route(ROUTES[9], post(forms::revoke))
        .route(ROUTES[10], get(admin::audit))
        .layer(session);
    open.merge(closed)
}

/// Finds the request's session: pages without one go to the login page; a POST without
/// one is refused.
async fn with_session(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    match state.sessions().lookup(request.headers()).await {
        Err(error) => {
            let error = crate::app::ApiError::store(error);
            layout::problem(error.status, None, &error.detail)
        }
        Ok(Some(session)) => {
            request.extensions_mut().insert(session);
            next.run(request).await
        }
        Ok(None) if matches!(*request.method(), Method::GET | Method::HEAD) => {
            layout::redirect("/ui/login")
        }
        Ok(None) => layout::problem(
            StatusCode::FORBIDDEN,
            None,
            "This needs a session: log in first.",
        ),
    }
}

async fn style() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        STYLE,
    )
        .into_response()
}
