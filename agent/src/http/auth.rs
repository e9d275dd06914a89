//! Basic authentication against `basic_auth_users` (bcrypt hashes), for
//! every path, as the exporter-toolkit does.
//!
//! bcrypt is slow on purpose (~70 ms at cost 10 here): it runs on a
//! blocking thread, one at a time, and a user and password that matched
//! are remembered (as a SHA-256, not the password) so a scraper pays it
//! once. A failure is never remembered: each guess costs a bcrypt, in turn.
//! An unknown user is checked against a configured hash too, so the time
//! of the answer does not tell which users exist.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
};

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::Engine;

/// Matched credentials remembered at most; past it the memory starts over.
const MAX_REMEMBERED: usize = 1024;

#[derive(Debug)]
pub struct BasicAuth {
    /// Username -> bcrypt hash.
    users: BTreeMap<String, String>,
    /// SHA-256 of (user, password) pairs that matched.
    remembered: Mutex<HashSet<[u8; 32]>>,
    /// One bcrypt at a time: a flood of wrong passwords takes one CPU, not all.
    bcrypt_turn: tokio::sync::Mutex<()>,
}

impl BasicAuth {
    /// None when there are no users (no authentication).
    pub fn new(users: BTreeMap<String, String>) -> Option<Arc<BasicAuth>> {
        (!users.is_empty()).then(|| {
            Arc::new(BasicAuth {
                users,
                remembered: Mutex::default(),
                bcrypt_turn: tokio::sync::Mutex::new(()),
            })
        })
    }

    /// Whether `authorization` (the header's value) names a user and its password.
    pub async fn allows(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return false;
        };
        let fingerprint = fingerprint(&user, &password);
        if self.remembered().contains(&fingerprint) {
            return true;
        }
        let known = self.users.get(&user);
        // An unknown user costs the same bcrypt as a known one.
        let Some(hash) = known.or_else(|| self.users.values().next()).cloned() else {
            return false;
        };
        let matched = {
            let _turn = self.bcrypt_turn.lock().await;
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
                .await
                .is_ok_and(|verified| verified.unwrap_or(false))
        };
        let allowed = matched && known.is_some();
        if allowed {
            let mut remembered = self.remembered();
            if remembered.len() >= MAX_REMEMBERED {
                remembered.clear();
            }
            remembered.insert(fingerprint);
        }
        allowed
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.remembered.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The user and password of a `Basic` authorization.
fn credentials(authorization: &HeaderValue) -> Option<(String, String)> {
    let text = authorization.to_str().ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn fingerprint(user: &str, password: &str) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    // The length first: ("ab", "c") and ("a", "bc") differ.
    context.update(&(user.len() as u64).to_le_bytes());
    context.update(user.as_bytes());
    context.update(password.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The middleware: 401 with a Basic challenge unless the request authenticates.
pub async fn require(State(auth): State<Arc<BasicAuth>>, request: Request, next: Next) -> Response {
    if auth.allows(request.headers().get(header::AUTHORIZATION)).await {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"golens\""))],
        "401 Unauthorized: golens asks for a user and password (--web.config.file's \
         basic_auth_users)\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_password: &str) -> HeaderValue {
        let encoded = base64::engine::general_purpose::STANDARD.encode(user_password);
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    fn auth() -> Arc<BasicAuth> {
        let users = BTreeMap::from([
            ("alice".to_string(), bcrypt::hash("s3cret:with colon", 4).unwrap()),
            ("bob".to_string(), bcrypt::hash("other", 4).unwrap()),
        ]);
        BasicAuth::new(users).unwrap()
    }

    #[tokio::test]
    async fn the_right_password_of_a_known_user_and_nothing_else() {
        let auth = auth();
        assert!(auth.allows(Some(&basic("alice:s3cret:with colon"))).await);
        assert!(auth.allows(Some(&basic("bob:other"))).await);
        assert!(!auth.allows(Some(&basic("alice:other"))).await, "bob's password");
        assert!(!auth.allows(Some(&basic("alice:s3cret"))).await);
        assert!(!auth.allows(Some(&basic("carol:s3cret:with colon"))).await, "unknown user");
        assert!(!auth.allows(Some(&basic("alice"))).await, "no colon");
        assert!(!auth.allows(None).await);
        let bearer = HeaderValue::from_static("Bearer abc");
        assert!(!auth.allows(Some(&bearer)).await);
        let lowercase =
            HeaderValue::from_str(&basic("bob:other").to_str().unwrap().replace("Basic", "basic"))
                .unwrap();
        assert!(auth.allows(Some(&lowercase)).await, "the scheme is case-insensitive");
    }

    #[tokio::test]
    async fn matches_are_remembered_and_failures_are_not() {
        let auth = auth();
        assert!(auth.allows(Some(&basic("alice:s3cret:with colon"))).await);
        assert!(!auth.allows(Some(&basic("alice:wrong"))).await);
        let remembered = auth.remembered().clone();
        assert_eq!(remembered.len(), 1);
        assert!(remembered.contains(&fingerprint("alice", "s3cret:with colon")));
        assert_ne!(fingerprint("ab", "c"), fingerprint("a", "bc"));
    }

    #[test]
    fn no_users_no_authentication() {
        assert!(BasicAuth::new(BTreeMap::new()).is_none());
    }
}
