//! The browser dashboard: the files of `web/dist/`, built from the
//! TypeScript sources in `web/` and embedded in the binary (gzipped, see
//! [`crate::embedded`]), served at `/ui/` on the API port: as they are
//! stored to clients that accept gzip (every browser), inflated for the
//! rest.
//!
//! The files hold no data, so they are served without credentials (see
//! [`is_exempt`]); the page then calls the API with the user's bearer
//! token, and authentication, RBAC and admission apply as for kubectl.
//! Everything the page needs is here: a strict Content-Security-Policy
//! (`default-src 'self'`, no inline script or style) keeps it from loading
//! anything from elsewhere.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::ApiState;

/// Where the dashboard lives on the API port.
pub const PREFIX: &str = "/ui/";

/// No script, style, image or connection from elsewhere; no inline code;
/// no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    /// The file, gzipped.
    gz: &'static [u8],
}

/// The built bundle, as checked in (`scripts/test` fails when it is stale).
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        gz: crate::embedded!("index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        gz: crate::embedded!("app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        gz: crate::embedded!("app.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        gz: crate::embedded!("icon.svg"),
    },
];

/// Strong validators, one per asset and encoding, computed once: the files
/// change only with the binary, and the page revalidates them on each
/// load. The gzipped and the inflated body are different representations,
/// so they have different tags.
fn etags() -> &'static [(String, String)] {
    static ETAGS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let hash = &hex::encode(Sha256::digest(a.gz))[..32];
                (format!("\"{hash}-gzip\""), format!("\"{hash}\""))
            })
            .collect()
    })
}

/// Whether the request's `Accept-Encoding` takes gzip: gzip named with a
/// weight above 0, or not named and `*` with a weight above 0.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for coding in headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = coding.split(';');
        let name = parts.next().unwrap_or_default().trim();
        // A weight that does not parse counts as refusal.
        let weight = parts
            .find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case("q").then(|| v.trim())
            })
            .map_or(1.0, |q| q.parse::<f32>().unwrap_or(0.0));
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(gzip.map_or(weight, |w: f32| w.max(weight)));
        } else if name == "*" {
            any = Some(weight);
        }
    }
    gzip.or(any).is_some_and(|w| w > 0.0)
}

/// The files inflated, for the clients that do not take gzip; inflated
/// once, when the first such client asks.
fn inflated(i: usize) -> &'static [u8] {
    static INFLATED: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    &INFLATED.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| crate::embedded::inflate(a.gz))
            .collect()
    })[i]
}

/// Whether a request may skip authentication: a read of the dashboard's
/// files, or a browser opening the server's root (which is sent on to
/// `/ui/`). Only GET and HEAD; nothing under `/api` or `/apis`.
pub fn is_exempt(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    path == "/ui" || path.starts_with(PREFIX) || (path == "/" && is_browser(headers))
}

/// A page load by a browser: it asks for HTML and sends no credential.
/// API clients (kubectl among them) send a credential and ask for JSON,
/// so `/` answers them as before.
fn is_browser(headers: &HeaderMap) -> bool {
    !headers.contains_key(header::AUTHORIZATION)
        && headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

/// `/`: browsers are sent to the dashboard; anyone else gets what the API
/// answers for it.
pub async fn root(state: State<Arc<ApiState>>, req: Request) -> Response {
    if is_exempt(req.method(), req.uri().path(), req.headers()) {
        return redirect(PREFIX);
    }
    super::resource(state, req).await
}

/// `/ui`, `/ui/` and `/ui/FILE`.
pub async fn serve(req: Request) -> Response {
    let path = req.uri().path();
    let Some(name) = path.strip_prefix(PREFIX) else {
        // `/ui` without the slash: relative URLs in the page need it.
        return redirect(PREFIX);
    };
    let name = if name.is_empty() { "index.html" } else { name };
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return with_security_headers(
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain")],
                "not found\n",
            )
                .into_response(),
        );
    };
    let asset = &ASSETS[i];
    let gzip = accepts_gzip(req.headers());
    let etag = if gzip { &etags()[i].0 } else { &etags()[i].1 };
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let body = if gzip {
            Body::from(asset.gz)
        } else {
            Body::from(inflated(i))
        };
        let mut r = Response::new(body);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        if gzip {
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        r
    };
    let h = resp.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    // Revalidated on every load (a 304 costs a round trip, no bytes), so a
    // new binary's files are picked up at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    with_security_headers(resp)
}

fn redirect(to: &'static str) -> Response {
    with_security_headers(
        (
            StatusCode::FOUND,
            [(header::LOCATION, HeaderValue::from_static(to))],
        )
            .into_response(),
    )
}

fn with_security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_reads_of_the_dashboard_skip_authentication() {
        let none = HeaderMap::new();
        assert!(is_exempt(&Method::GET, "/ui/", &none));
        assert!(is_exempt(&Method::HEAD, "/ui/app.js", &none));
        assert!(is_exempt(&Method::GET, "/ui", &none));
        assert!(!is_exempt(&Method::POST, "/ui/", &none));
        assert!(!is_exempt(&Method::GET, "/uix", &none));
        assert!(!is_exempt(&Method::GET, "/api/v1/pods", &none));
        assert!(!is_exempt(&Method::GET, "/", &none));
    }

    #[test]
    fn gzip_is_sent_to_clients_that_take_it() {
        let with = |v: &'static str| headers(&[(header::ACCEPT_ENCODING, v)]);
        assert!(accepts_gzip(&with("gzip, deflate, br, zstd")));
        assert!(accepts_gzip(&with("br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&with("*")));
        assert!(!accepts_gzip(&HeaderMap::new()));
        assert!(!accepts_gzip(&with("identity")));
        assert!(!accepts_gzip(&with("gzip;q=0")));
        assert!(!accepts_gzip(&with("br, gzip; q=0.0")));
        assert!(!accepts_gzip(&with("x-gzip-not")));
        // Named, gzip's own weight counts, whatever `*` says.
        assert!(!accepts_gzip(&with("gzip;q=0, *")));
        assert!(!accepts_gzip(&with("*, gzip;Q=0")));
        assert!(accepts_gzip(&with("*;q=0, gzip")));
        assert!(!accepts_gzip(&with("*;q=0")));
        assert!(!accepts_gzip(&with("gzip;q=zero")));
    }

    #[test]
    fn the_root_redirects_browsers_only() {
        let browser = headers(&[(header::ACCEPT, "text/html,application/xhtml+xml")]);
        assert!(is_exempt(&Method::GET, "/", &browser));
        let kubectl = headers(&[
            (header::ACCEPT, "application/json"),
            (header::AUTHORIZATION, "Bearer x"),
        ]);
        assert!(!is_exempt(&Method::GET, "/", &kubectl));
        let html_with_token = headers(&[
            (header::ACCEPT, "text/html"),
            (header::AUTHORIZATION, "Bearer x"),
        ]);
        assert!(!is_exempt(&Method::GET, "/", &html_with_token));
    }

    #[test]
    fn every_embedded_file_is_built_and_the_page_loads_no_inline_code() {
        for a in ASSETS {
            assert!(
                !crate::embedded::inflate(a.gz).is_empty(),
                "web/dist/{} is empty",
                a.name
            );
        }
        let index = crate::embedded::inflate(ASSETS[0].gz);
        let index = std::str::from_utf8(&index).expect("utf-8 index.html");
        assert!(index.contains("src=\"app.js\""));
        assert!(!index.contains("<script>"), "inline script in index.html");
        assert!(!index.contains("<style"), "inline style in index.html");
    }
}
