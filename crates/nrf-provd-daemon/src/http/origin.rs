//! Only the station's own origins. A request must name, in its `Host` (or
//! its absolute URI), a loopback name or address, the address it arrived
//! at, or a host listed in `[http] allowed_hosts`; anything else gets 421
//! before any other check. A web page elsewhere that rebinds its DNS name
//! to 127.0.0.1 still sends its own name, so a browser on the station
//! cannot be turned against the page. A request whose `Origin` names
//! another site, or that a browser marks as made by another site's page
//! (`Sec-Fetch-Site`, unless it is a plain navigation to the page), gets
//! 403 and its connection closed; no answer carries CORS headers, so no
//! other site's script may read one.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::App;
use super::metrics::Refusal;
use crate::config::normal_host;

/// The connection a request came on (set by [`super::conn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// The station's own address the client connected to.
    pub local: IpAddr,
    /// The client's address.
    pub peer: IpAddr,
}

/// The hosts a request may name.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// `[http] allowed_hosts`, as [`normal_host`] writes them.
    allowed: Arc<[String]>,
}

impl Origins {
    pub fn new(allowed_hosts: &[String]) -> Origins {
        Origins {
            allowed: allowed_hosts
                .iter()
                .filter_map(|h| normal_host(h))
                .collect(),
        }
    }

    /// Whether `authority` (`host[:port]`) is one of the station's own
    /// for a request that arrived at `local`.
    pub fn allows(&self, authority: &str, local: Option<IpAddr>) -> bool {
        // A Host never carries user information.
        if authority.contains('@') {
            return false;
        }
        let Ok(authority) = authority.parse::<Authority>() else {
            return false;
        };
        let Some(host) = normal_host(authority.host()) else {
            return false;
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            let ip = ip.to_canonical();
            return ip.is_loopback()
                || local.is_some_and(|local| local.to_canonical() == ip)
                || self.listed(&host);
        }
        // RFC 6761: browsers resolve these to loopback themselves, so no
        // one else's DNS can answer for them.
        host == "localhost" || host.ends_with(".localhost") || self.listed(&host)
    }

    fn listed(&self, host: &str) -> bool {
        self.allowed.iter().any(|a| a == host)
    }
}

/// Middleware: 421 for a foreign `Host`, 403 for a foreign `Origin`.
pub async fn require_own_origin(State(app): State<App>, request: Request, next: Next) -> Response {
    let local = request.extensions().get::<Arrival>().map(|a| a.local);
    // An absolute request URI overrides Host (RFC 9112 §3.2.2).
    let host = match request.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok()),
    };
    if !host.is_some_and(|h| app.origins.allows(h, local)) {
        app.metrics.refused(Refusal::ForeignHost);
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "421: this station answers only to its own names: loopback, the address it was reached at, or [http] allowed_hosts\n",
        );
    }
    let foreign_origin = request.headers().get(header::ORIGIN).is_some_and(|origin| {
        !origin
            .to_str()
            .ok()
            .and_then(|o| o.parse::<Uri>().ok())
            .and_then(|uri| {
                uri.authority()
                    .map(|a| app.origins.allows(a.as_str(), local))
            })
            .unwrap_or(false)
    });
    // A change (the shift) never comes from another site's page, not even
    // by a form it submits as a navigation.
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
    if foreign_origin || from_another_site(request.headers(), changes) {
        app.metrics.refused(Refusal::ForeignOrigin);
        return refuse(
            StatusCode::FORBIDDEN,
            "403: requests from another site's pages are refused\n",
        );
    }
    next.run(request).await
}

/// Whether a browser says another site's page made the request (Fetch
/// Metadata), other than by navigating to the page: an `<img>` or a
/// `<script>` pointed at the station sends no `Origin`, but this. A
/// request that `changes` something is another site's even as a
/// navigation (a form posted at the station).
fn from_another_site(headers: &axum::http::HeaderMap, changes: bool) -> bool {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match value("sec-fetch-site") {
        None | Some("same-origin" | "none") => false,
        Some(_) => {
            changes
                || !(value("sec-fetch-mode") == Some("navigate")
                    && value("sec-fetch-dest") == Some("document"))
        }
    }
}

fn refuse(status: StatusCode, text: &'static str) -> Response {
    let mut response = (status, text).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_the_arrival_address_and_listed_hosts_only() {
        let origins = Origins::new(&["Station07.line.example.".into(), "192.0.2.7".into()]);
        let lan: IpAddr = "192.0.2.9".parse().expect("ip");
        for own in [
            "127.0.0.1:9091",
            "127.9.9.9",
            "[::1]:9091",
            "[::ffff:127.0.0.1]:9091",
            "localhost:9091",
            "LOCALHOST",
            "localhost.",
            "station.localhost:80",
            "station07.line.example:9091",
            "STATION07.line.example",
            "192.0.2.7:9091",
            "192.0.2.9:9091",
        ] {
            assert!(origins.allows(own, Some(lan)), "{own}");
        }
        for foreign in [
            "evil.example",
            "evil.example:9091",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "station07.line.example.evil.example",
            "192.0.2.8:9091",
            "0.0.0.0:9091",
            "",
            "a b",
            "user@127.0.0.1",
            "[::1",
        ] {
            assert!(!origins.allows(foreign, Some(lan)), "{foreign}");
        }
        assert!(!Origins::default().allows("192.0.2.9:9091", None));
    }

    fn from_another_site_get(headers: &axum::http::HeaderMap) -> bool {
        from_another_site(headers, false)
    }

    #[test]
    fn a_change_from_another_site_is_refused_even_as_a_navigation() {
        let mut map = axum::http::HeaderMap::new();
        for (name, value) in [
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
        ] {
            map.insert(name, HeaderValue::from_static(value));
        }
        assert!(!from_another_site(&map, false));
        assert!(from_another_site(&map, true));
        map.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(!from_another_site(&map, true));
    }

    #[test]
    fn another_sites_requests_are_known_by_their_fetch_metadata() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = axum::http::HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_static(value));
            }
            map
        };
        assert!(!from_another_site_get(&headers(&[])), "not a browser");
        assert!(!from_another_site_get(&headers(&[(
            "sec-fetch-site",
            "same-origin"
        )])));
        assert!(!from_another_site_get(&headers(&[(
            "sec-fetch-site",
            "none"
        )])));
        assert!(
            !from_another_site_get(&headers(&[
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "document"),
            ])),
            "a link followed to the page"
        );
        assert!(from_another_site_get(&headers(&[
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "no-cors"),
            ("sec-fetch-dest", "image"),
        ])));
        assert!(from_another_site_get(&headers(&[
            ("sec-fetch-site", "same-site"),
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-dest", "empty"),
        ])));
        assert!(from_another_site_get(&headers(&[
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "iframe"),
        ])));
    }
}
