//! Admin authentication: Argon2id password hashes, HS256 JWTs with an expiry
//! and a per-user generation (a password reset bumps it, which voids every
//! earlier token), and the extractors that guard the admin routes.

use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm as Argon2Algorithm, Params, Version};
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

/// The fixed cost of admin password hashes: Argon2id v0x13, 19 MiB
/// (19456 KiB), 2 passes, 1 lane, 32-byte output — OWASP's recommended
/// minimum and the `argon2` crate's default, written out so a crate upgrade
/// cannot change it. Hashes stored before are exactly these
/// (`$argon2id$v=19$m=19456,t=2,p=1$…`).
pub const PASSWORD_M_COST_KIB: u32 = 19 * 1024;
pub const PASSWORD_T_COST: u32 = 2;
pub const PASSWORD_P_COST: u32 = 1;
const PASSWORD_OUTPUT_LEN: usize = 32;
/// A stored hash asking for more memory than this is refused rather than
/// computed: verifying must not be a way to make the daemon allocate
/// without bound.
const MAX_VERIFY_M_COST_KIB: u32 = 256 * 1024;

/// One Argon2 computation at a time: each takes 19 MiB for its duration,
/// so a burst of logins queues here instead of multiplying the memory.
static ARGON2_TURN: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

fn password_params() -> Params {
    Params::new(
        PASSWORD_M_COST_KIB,
        PASSWORD_T_COST,
        PASSWORD_P_COST,
        Some(PASSWORD_OUTPUT_LEN),
    )
    .expect("the fixed password cost is valid")
}

/// Runs `work` on a blocking thread, one at a time (see [`ARGON2_TURN`]).
async fn argon2_turn<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    // The semaphore is never closed.
    let _turn = ARGON2_TURN.acquire().await;
    tokio::task::spawn_blocking(work).await
}

/// Hashes a password with Argon2id at the fixed cost above, on a blocking
/// thread (it is meant to be slow) and in memory handed back to the OS
/// afterwards ([`hangar_store::seal::argon2id_released`]).
pub async fn hash_password(password: &str) -> ApiResult<String> {
    let password = password.to_owned();
    argon2_turn(move || hash_now(password.as_bytes()))
        .await
        .map_err(|e| {
            ApiError::internal("password hashing task failed").with_details(e.to_string())
        })?
        .map_err(|e| ApiError::internal("cannot hash the password").with_details(e))
}

fn hash_now(password: &[u8]) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_buf)
        .map_err(|e| e.to_string())?;
    let params = password_params();
    let mut out = [0u8; PASSWORD_OUTPUT_LEN];
    hangar_store::seal::argon2id_released(params.clone(), password, salt_bytes, &mut out)
        .map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: Argon2Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

/// Checks `password` against a stored PHC string. Only Argon2id v0x13
/// hashes (what [`hash_password`] writes) verify; their own cost is used,
/// up to [`MAX_VERIFY_M_COST_KIB`].
pub async fn verify_password(password: &str, hash: &str) -> bool {
    let password = password.to_owned();
    let hash = hash.to_owned();
    argon2_turn(move || verify_now(password.as_bytes(), &hash))
        .await
        .unwrap_or(false)
}

fn verify_now(password: &[u8], phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    if parsed.algorithm != Argon2Algorithm::Argon2id.ident()
        || parsed
            .version
            .is_some_and(|v| v != u32::from(Version::V0x13))
    {
        return false;
    }
    let (Ok(params), Some(salt), Some(expected)) =
        (Params::try_from(&parsed), parsed.salt, parsed.hash)
    else {
        return false;
    };
    if params.m_cost() > MAX_VERIFY_M_COST_KIB {
        return false;
    }
    let mut salt_buf = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    if hangar_store::seal::argon2id_released(params, password, salt_bytes, &mut out).is_err() {
        return false;
    }
    // `Output`'s equality is constant-time.
    Output::new(&out).is_ok_and(|computed| computed == expected)
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
        assert!(
            a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "the documented fixed cost: {a}"
        );
    }

    #[tokio::test]
    async fn hashes_stay_compatible_with_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        // A hash written before (by `Argon2::default()`) still verifies …
        let salt = SaltString::generate(&mut OsRng);
        let old = argon2::Argon2::default()
            .hash_password(b"an older password", &salt)
            .unwrap()
            .to_string();
        assert!(old.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password("an older password", &old).await);
        assert!(!verify_password("an older passwore", &old).await);
        // … and ours verifies with the crate's own verifier.
        let ours = hash_password("a newer password").await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            argon2::Argon2::default()
                .verify_password(b"a newer password", &parsed)
                .is_ok()
        );
    }

    #[tokio::test]
    async fn other_algorithms_and_huge_costs_are_refused() {
        use argon2::password_hash::PasswordHasher;
        let salt = SaltString::generate(&mut OsRng);
        let small = Params::new(1024, 1, 1, None).unwrap();
        let argon2i = argon2::Argon2::new(Argon2Algorithm::Argon2i, Version::V0x13, small)
            .hash_password(b"a password here", &salt)
            .unwrap()
            .to_string();
        assert!(!verify_password("a password here", &argon2i).await);
        let huge = "$argon2id$v=19$m=4194304,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$\
                    AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(!verify_password("a password here", huge).await);
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
