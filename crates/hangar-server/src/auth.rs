//! Admin authentication: Argon2id password hashes, HS256 JWTs with an expiry
//! and a per-user generation (a password reset bumps it, which voids every
//! earlier token), and the extractors that guard the admin routes.

use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::Utc;
use hangar_api::{FirstRunRequest, LoginRequest, LoginResponse, UserResponse};
use hangar_core::Secret;
use hangar_store::User;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiError, ApiResult, JsonBody};

pub const MIN_PASSWORD_LEN: usize = 12;
const AUDIENCE: &str = "hangar-admin";

/// Signing keys and token lifetime.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKeys(ttl = {:?})", self.ttl)
    }
}

impl TokenKeys {
    pub fn new(secret: &Secret, ttl: Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            ttl,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    name: String,
    #[serde(rename = "gen")]
    generation: i64,
    iat: i64,
    exp: i64,
    aud: String,
}

/// Hashes a password with Argon2id (on a blocking thread: it is meant to be
/// slow).
pub async fn hash_password(password: &str) -> ApiResult<String> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::internal("cannot hash the password").with_details(e.to_string()))
    })
    .await
    .map_err(|e| ApiError::internal("password hashing task failed").with_details(e.to_string()))?
}

pub async fn verify_password(password: &str, hash: &str) -> bool {
    let password = password.to_owned();
    let hash = hash.to_owned();
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// Checks a new password against the policy.
pub fn check_password_policy(password: &str) -> ApiResult<()> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(ApiError::bad_request(format!(
            "the password must be at least {MIN_PASSWORD_LEN} characters long"
        )));
    }
    Ok(())
}

fn check_username(username: &str) -> ApiResult<()> {
    let ok = !username.is_empty()
        && username.len() <= 64
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "the username must be 1-64 ASCII letters, digits, '-', '_', '.' or '@'",
        ))
    }
}

fn issue(keys: &TokenKeys, user: &User) -> ApiResult<LoginResponse> {
    let now = Utc::now();
    let exp = now + chrono::Duration::from_std(keys.ttl).unwrap_or(chrono::Duration::hours(24));
    let claims = Claims {
        sub: user.id.to_string(),
        name: user.username.clone(),
        generation: user.token_generation,
        iat: now.timestamp(),
        exp: exp.timestamp(),
        aud: AUDIENCE.into(),
    };
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding)
        .map_err(|e| ApiError::internal("cannot sign the token").with_details(e.to_string()))?;
    Ok(LoginResponse {
        token,
        expires_at: exp,
    })
}

pub fn user_response(u: &User) -> UserResponse {
    UserResponse {
        id: u.id,
        username: u.username.clone(),
        email: u.email.clone(),
        full_name: u.full_name.clone(),
        is_admin: u.is_admin,
        created_at: u.created_at,
    }
}

/// The endpoint first run creates.
fn github_com() -> hangar_core::Endpoint {
    hangar_core::Endpoint {
        name: hangar_core::ResourceName::parse("github.com").expect("a valid name"),
        description: "GitHub.com".into(),
        base_url: "https://github.com".into(),
        api_base_url: "https://api.github.com".into(),
        ca_bundle: None,
    }
}

/// Creates the first admin (and the `github.com` endpoint). Only while no
/// admin exists.
#[utoipa::path(
    post,
    path = "/api/v1/first-run",
    tag = "auth",
    request_body = FirstRunRequest,
    responses(
        (status = 201, body = UserResponse),
        (status = 400, body = hangar_api::ErrorBody),
        (status = 409, description = "An admin already exists", body = hangar_api::ErrorBody),
    )
)]
pub async fn first_run(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<FirstRunRequest>,
) -> ApiResult<(StatusCode, Json<UserResponse>)> {
    if state.store.has_admin().await? {
        return Err(ApiError::conflict(
            "Hangar is already initialised; log in instead",
        ));
    }
    check_username(&req.username)?;
    check_password_policy(&req.password)?;
    let hash = hash_password(&req.password).await?;
    let user = state
        .store
        .create_first_admin(
            &req.username,
            req.email.as_deref(),
            req.full_name.as_deref(),
            &hash,
        )
        .await?;
    tracing::info!(user.name = %user.username, "first admin created");
    // garm's habit: `credentials add --endpoint github.com` works at once.
    match state.store.create_endpoint(&github_com()).await {
        Ok(_) => tracing::info!("default endpoint github.com created"),
        Err(hangar_store::StoreError::Conflict(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok((StatusCode::CREATED, Json(user_response(&user))))
}

/// Exchanges a username and password for a token.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse),
        (status = 401, body = hangar_api::ErrorBody),
        (status = 429, description = "Too many failed logins for this user or from this address; see Retry-After",
            body = hangar_api::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until a login may be tried again"))),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    peer: PeerAddr,
    JsonBody(req): JsonBody<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let throttle = &state.login_throttle;
    if let Err(wait) = throttle.check(&req.username, peer.0) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins; try again later",
        )
        .with_details(format!(
            "logins for this user or from this address are paused for {}s",
            wait.as_secs_f64().ceil() as u64
        ))
        .with_retry_after(wait));
    }
    let denied = || {
        throttle.failed(&req.username, peer.0);
        ApiError::unauthorized("invalid username or password")
    };
    let Some(user) = state.store.user_by_name(&req.username).await? else {
        // Spend the same time as a real check, so names cannot be probed.
        let _ = hash_password(&req.password).await;
        return Err(denied());
    };
    if !verify_password(&req.password, &user.password_hash).await {
        return Err(denied());
    }
    throttle.succeeded(&req.username);
    Ok(Json(issue(&state.tokens, &user)?))
}

/// The client's address, when the listener recorded it (`ConnectInfo`);
/// `None` for requests that did not come over a socket (tests'
/// `oneshot`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// An authenticated admin. Put it in a handler's arguments to guard it.
#[derive(Debug, Clone)]
pub struct Admin(#[allow(dead_code)] pub User);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("missing bearer token").with_details(
                "send Authorization: Bearer <token> (hangar init / hangar profile login)",
            )
        })?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        let data = jsonwebtoken::decode::<Claims>(token, &state.tokens.decoding, &validation)
            .map_err(|e| {
                ApiError::unauthorized("invalid or expired token").with_details(e.to_string())
            })?;
        let id = data
            .claims
            .sub
            .parse()
            .map_err(|_| ApiError::unauthorized("invalid token subject"))?;
        let user = match state.store.user_by_id(id).await {
            Ok(u) => u,
            Err(hangar_store::StoreError::NotFound(_)) => {
                return Err(ApiError::unauthorized("the token's user no longer exists"));
            }
            Err(e) => return Err(e.into()),
        };
        if user.token_generation != data.claims.generation {
            return Err(ApiError::unauthorized(
                "token revoked by a password change; log in again",
            ));
        }
        if !user.is_admin {
            return Err(ApiError::forbidden("admin rights required"));
        }
        Ok(Admin(user))
    }
}

pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ() {
        let a = hash_password("correct horse battery").await.unwrap();
        let b = hash_password("correct horse battery").await.unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &a).await);
        assert!(!verify_password("wrong horse battery", &a).await);
        assert!(!verify_password("x", "not a hash").await);
    }

    #[test]
    fn policy() {
        assert!(check_password_policy("short").is_err());
        assert!(check_password_policy("twelve chars").is_ok());
        assert!(check_username("admin").is_ok());
        assert!(check_username("").is_err());
        assert!(check_username("has space").is_err());
    }
}
