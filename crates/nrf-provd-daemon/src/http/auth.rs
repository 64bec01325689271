//! Who may see and do what. Three roles, as nRF Cloud's Identity Service
//! has viewers and editors: a **viewer** (the page, `/metrics`, run
//! summaries), an **operator** (also the shift: work order, lot, operator,
//! product) and an **engineer** (also whole records: token text, JWTs,
//! certificates; and the shift). Each role has a bearer token in a file
//! that the daemon refuses when group or others can read it, or when a
//! directory on its path lets them replace it (like the CA key):
//! `[http] token_file` for viewers, `operator_token_file` for operators,
//! `engineer_token_file` for engineers.
//!
//! - With a viewer token, every request must carry it or the engineer's
//!   (401 otherwise); without one (loopback only), every request is a
//!   viewer's.
//! - Only a request carrying the engineer's token is an engineer's; with
//!   none configured, nobody is, and no HTTP answer holds token text or a
//!   certificate.
//! - A request carrying the operator's token is an operator's. With no
//!   operator token configured, a request from this machine (loopback)
//!   may change the shift, as `nrf-provd shift set` does; no other may.
//!
//! Machines send `Authorization: Bearer <token>`; a browser, which cannot
//! add a header to the page's own requests, answers the Basic prompt with
//! the token as password (any user name). Tokens are compared by SHA-256
//! digest in constant time.

use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::App;
use super::metrics::Refusal;
use crate::config::HttpConfig;

use secure_file::{self, Holds, UnsafeFile};

/// Shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a request may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The page, `/metrics`, ports and run summaries.
    Viewer,
    /// Also the shift (work order, lot, operator, product).
    Operator,
    /// Also token text, JWTs and certificates, and the shift.
    Engineer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Engineer => "engineer",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("http token file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Others could read or replace it (its mode, or a directory on its path).
    #[error(transparent)]
    Unsafe(#[from] UnsafeFile),
    #[error(
        "http token file {}: the token must be one line of at least {MIN_TOKEN_LEN} printable characters without spaces (e.g. `openssl rand -hex 32`)",
        path.display()
    )]
    Unusable { path: PathBuf },
    #[error(
        "http engineer_token_file {} holds the same token as token_file {}: a viewer would see what only an engineer may; give the engineer a token of its own",
        engineer.display(),
        viewer.display()
    )]
    Same { viewer: PathBuf, engineer: PathBuf },
    #[error(
        "http operator_token_file {} holds the same token as {other_key} {}: give each role a token of its own",
        operator.display(),
        other.display()
    )]
    SameAsOperator {
        operator: PathBuf,
        other_key: &'static str,
        other: PathBuf,
    },
}

/// The token's SHA-256: requests are compared by digest, so the comparison
/// time tells nothing about the token itself.
#[derive(Clone)]
pub struct AccessToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(..)")
    }
}

impl AccessToken {
    /// Read the token from `path`, refusing a file group or others can read
    /// or replace ([`secure_file`]).
    pub fn load(path: &Path) -> Result<AccessToken, TokenError> {
        read_token(path).map(|token| AccessToken::new(&token))
    }

    pub fn new(token: &str) -> AccessToken {
        AccessToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.digest).into()
    }

    /// Whether the request carries the token, as a bearer token or as the
    /// password of Basic credentials.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        presented(headers).is_some_and(|p| self.matches(&p))
    }
}

/// The token in `path` (a file only its owner may read), as a client
/// sends it (`nrf-provd shift`) and the server compares it.
pub fn read_token(path: &Path) -> Result<String, TokenError> {
    let read = |source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = secure_file::open(path, "http token file", Holds::Secret)
        .map_err(|refusal| refusal.into_error(read))?;
    let text = std::io::read_to_string(file).map_err(read)?;
    let token = text.trim();
    let printable = token.chars().all(|c| c.is_ascii_graphic());
    if token.len() < MIN_TOKEN_LEN || !printable {
        return Err(TokenError::Unusable {
            path: path.to_path_buf(),
        });
    }
    Ok(token.to_string())
}

/// The token a request carries: a bearer token, or the password of Basic
/// credentials.
fn presented(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(credentials.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())?;
        return decoded
            .split_once(':')
            .map(|(_user, password)| password.to_string());
    }
    None
}

/// The tokens of every role, as configured.
#[derive(Debug, Clone, Default)]
pub struct Access {
    viewer: Option<AccessToken>,
    operator: Option<AccessToken>,
    engineer: Option<AccessToken>,
}

impl Access {
    /// Read `[http] token_file`, `operator_token_file` and
    /// `engineer_token_file`.
    pub fn load(http: &HttpConfig) -> Result<Access, TokenError> {
        let load = |path: &Option<PathBuf>| path.as_deref().map(AccessToken::load).transpose();
        let access = Access {
            viewer: load(&http.token_file)?,
            operator: load(&http.operator_token_file)?,
            engineer: load(&http.engineer_token_file)?,
        };
        if let Some(operator) = &access.operator {
            for (other, key, path) in [
                (&access.viewer, "token_file", &http.token_file),
                (
                    &access.engineer,
                    "engineer_token_file",
                    &http.engineer_token_file,
                ),
            ] {
                if other
                    .as_ref()
                    .is_some_and(|o| bool::from(o.digest.ct_eq(&operator.digest)))
                {
                    return Err(TokenError::SameAsOperator {
                        operator: http.operator_token_file.clone().unwrap_or_default(),
                        other_key: key,
                        other: path.clone().unwrap_or_default(),
                    });
                }
            }
        }
        if let (Some(viewer), Some(engineer)) = (&access.viewer, &access.engineer) {
            if bool::from(viewer.digest.ct_eq(&engineer.digest)) {
                return Err(TokenError::Same {
                    viewer: http.token_file.clone().unwrap_or_default(),
                    engineer: http.engineer_token_file.clone().unwrap_or_default(),
                });
            }
        }
        Ok(access)
    }

    /// What a request with `headers` may see; `None` when it may see
    /// nothing (a viewer token is configured and it carries neither).
    pub fn role(&self, headers: &HeaderMap) -> Option<Role> {
        let presented = presented(headers);
        let carries = |token: &Option<AccessToken>| {
            token
                .as_ref()
                .zip(presented.as_deref())
                .is_some_and(|(token, p)| token.matches(p))
        };
        if carries(&self.engineer) {
            return Some(Role::Engineer);
        }
        if carries(&self.operator) {
            return Some(Role::Operator);
        }
        match self.viewer {
            None => Some(Role::Viewer),
            Some(_) => carries(&self.viewer).then_some(Role::Viewer),
        }
    }
}

impl Access {
    /// Whether a request of `role` from `peer` may change the shift: an
    /// operator or an engineer; with no operator token configured, anyone
    /// on this machine (the CLI on loopback).
    pub fn may_change_shift(&self, role: Role, peer: Option<std::net::IpAddr>) -> bool {
        match role {
            Role::Operator | Role::Engineer => true,
            Role::Viewer => {
                self.operator.is_none() && peer.is_some_and(|p| p.to_canonical().is_loopback())
            }
        }
    }
}

/// Middleware: the request's [`Role`] as an extension for the handlers, or
/// 401.
pub async fn require_access(State(app): State<App>, mut request: Request, next: Next) -> Response {
    match app.access.role(request.headers()) {
        Some(role) => {
            request.extensions_mut().insert(role);
            next.run(request).await
        }
        None => {
            app.metrics.refused(Refusal::NoToken);
            unauthorized()
        }
    }
}

fn unauthorized() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "401: this station's page needs its access token (Authorization: Bearer <token>, or the token as password)\n",
    )
        .into_response();
    // Bearer for machines; Basic makes a browser ask for the token.
    let headers = response.headers_mut();
    // The slot goes to the next client, not to a retry on this connection.
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"nrf-provd\""),
    );
    headers.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Basic realm=\"nrf-provd station (password: the access token)\", charset=\"UTF-8\"",
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(header::AUTHORIZATION, value);
        }
        headers
    }

    #[test]
    fn bearer_and_basic_password_are_admitted_nothing_else() {
        let token = AccessToken::new("0123456789abcdef0123");
        assert!(token.admits(&headers("Bearer 0123456789abcdef0123")));
        assert!(token.admits(&headers("bearer  0123456789abcdef0123 ")));
        let basic = base64::engine::general_purpose::STANDARD.encode("op:0123456789abcdef0123");
        assert!(token.admits(&headers(&format!("Basic {basic}"))));
        assert!(!token.admits(&HeaderMap::new()));
        assert!(!token.admits(&headers("Bearer 0123456789abcdef012")));
        assert!(!token.admits(&headers("Bearer")));
        assert!(!token.admits(&headers("Basic !!!")));
        let no_password = base64::engine::general_purpose::STANDARD.encode("0123456789abcdef0123");
        assert!(!token.admits(&headers(&format!("Basic {no_password}"))));
        assert!(!token.admits(&headers("Token 0123456789abcdef0123")));
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("http.token");
        std::fs::write(&path, "0123456789abcdef0123\n")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))?;
        let err = AccessToken::load(&path).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("mode 640") && e.contains("chmod 600")),
            "{err:?}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let token = AccessToken::load(&path)?;
        assert!(token.admits(&headers("Bearer 0123456789abcdef0123")));
        std::fs::write(&path, "short\n")?;
        assert!(matches!(
            AccessToken::load(&path),
            Err(TokenError::Unusable { .. })
        ));
        Ok(())
    }

    fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("{token}\n")).expect("write token");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    #[test]
    fn the_engineers_token_alone_makes_an_engineer() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let viewer = "v1ewer-0123456789abcdef";
        let engineer = "eng1neer-0123456789abcdef";
        let viewer_file = token_file(dir.path(), "viewer.token", viewer);
        let engineer_file = token_file(dir.path(), "engineer.token", engineer);
        let bearer = |t: &str| headers(&format!("Bearer {t}"));

        // Loopback without tokens: everyone is a viewer, nobody more.
        let open = Access::load(&HttpConfig::default())?;
        assert_eq!(open.role(&HeaderMap::new()), Some(Role::Viewer));
        assert_eq!(open.role(&bearer(engineer)), Some(Role::Viewer));

        // An engineer's token only: it alone shows token text.
        let engineer_only = Access::load(&HttpConfig {
            engineer_token_file: Some(engineer_file.clone()),
            ..HttpConfig::default()
        })?;
        assert_eq!(engineer_only.role(&HeaderMap::new()), Some(Role::Viewer));
        assert_eq!(engineer_only.role(&bearer(engineer)), Some(Role::Engineer));
        assert_eq!(engineer_only.role(&bearer(viewer)), Some(Role::Viewer));

        // Both: a request needs one of them.
        let both = Access::load(&HttpConfig {
            token_file: Some(viewer_file.clone()),
            engineer_token_file: Some(engineer_file.clone()),
            ..HttpConfig::default()
        })?;
        assert_eq!(both.role(&HeaderMap::new()), None);
        assert_eq!(both.role(&bearer("someone-else-0123456789")), None);
        assert_eq!(both.role(&bearer(viewer)), Some(Role::Viewer));
        assert_eq!(both.role(&bearer(engineer)), Some(Role::Engineer));
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("op:{engineer}"));
        assert_eq!(
            both.role(&headers(&format!("Basic {basic}"))),
            Some(Role::Engineer)
        );

        // An operator's token: its own role, the shift but no token text;
        // without one, only loopback may change the shift.
        let operator = "0perator-0123456789abcdef";
        let operator_file = token_file(dir.path(), "operator.token", operator);
        let with_operator = Access::load(&HttpConfig {
            token_file: Some(viewer_file.clone()),
            operator_token_file: Some(operator_file.clone()),
            engineer_token_file: Some(engineer_file.clone()),
            ..HttpConfig::default()
        })?;
        let lan: std::net::IpAddr = "192.0.2.9".parse()?;
        let lo: std::net::IpAddr = "127.0.0.1".parse()?;
        assert_eq!(with_operator.role(&bearer(operator)), Some(Role::Operator));
        assert!(with_operator.may_change_shift(Role::Operator, Some(lan)));
        assert!(with_operator.may_change_shift(Role::Engineer, Some(lan)));
        assert!(!with_operator.may_change_shift(Role::Viewer, Some(lo)));
        assert!(open.may_change_shift(Role::Viewer, Some(lo)));
        assert!(!open.may_change_shift(Role::Viewer, Some(lan)));
        let same = token_file(dir.path(), "same-operator.token", viewer);
        let err = Access::load(&HttpConfig {
            token_file: Some(viewer_file.clone()),
            operator_token_file: Some(same),
            ..HttpConfig::default()
        })
        .err();
        assert!(
            matches!(err, Some(TokenError::SameAsOperator { .. })),
            "{err:?}"
        );

        // One token for both roles would make every viewer an engineer.
        let same = token_file(dir.path(), "same.token", viewer);
        let err = Access::load(&HttpConfig {
            token_file: Some(viewer_file),
            engineer_token_file: Some(same),
            ..HttpConfig::default()
        })
        .err();
        assert!(matches!(err, Some(TokenError::Same { .. })), "{err:?}");

        // The engineer's file is refused when others can read it.
        std::fs::set_permissions(&engineer_file, std::fs::Permissions::from_mode(0o604))?;
        let err = Access::load(&HttpConfig {
            engineer_token_file: Some(engineer_file),
            ..HttpConfig::default()
        })
        .err();
        assert!(matches!(err, Some(TokenError::Unsafe(_))), "{err:?}");
        Ok(())
    }
}
