//! Who may read the station page: the bearer token from `[http]
//! token_file`, refused when group or others can read the file or a
//! directory on its path lets them replace it (like the CA key). Machines send `Authorization: Bearer <token>`; a browser, which
//! cannot add a header to the page's own requests, answers the Basic prompt
//! with the token as password (any user name).

use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::secure_file::{self, Holds, UnsafeFile};

/// Shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

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
        Ok(AccessToken::new(token))
    }

    pub fn new(token: &str) -> AccessToken {
        AccessToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest == self.digest
    }

    /// Whether the request carries the token, as a bearer token or as the
    /// password of Basic credentials.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value, ""));
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self.matches(credentials);
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(credentials)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            return decoded
                .as_deref()
                .and_then(|pair| pair.split_once(':'))
                .is_some_and(|(_user, password)| self.matches(password));
        }
        false
    }
}

/// Middleware: every request needs the token when one is configured.
pub async fn require_token(
    State(token): State<Option<AccessToken>>,
    request: Request,
    next: Next,
) -> Response {
    match &token {
        Some(token) if !token.admits(request.headers()) => unauthorized(),
        _ => next.run(request).await,
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
}
