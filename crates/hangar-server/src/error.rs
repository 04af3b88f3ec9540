//! One error type for every handler: a status, a message and details,
//! rendered as `{"error": "...", "details": "..."}`. Server faults are
//! logged once, here.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hangar_api::ErrorBody;
use hangar_scheduler::SchedulerError;
use hangar_store::StoreError;

use hangar_scheduler::IntakeError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub details: Option<String>,
    /// Sent as `Retry-After` (whole seconds, rounded up).
    pub retry_after: Option<std::time::Duration>,
    /// Why a webhook delivery was refused, when the status alone does not
    /// say it (its metrics label; not sent).
    pub reason: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            details: None,
            retry_after: None,
            reason: None,
        }
    }

    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    pub fn with_retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }

    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, msg)
    }

    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, msg)
    }

    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, msg)
    }

    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, msg)
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, msg)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), error = %self.error, details = ?self.details, "request failed");
        }
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.error,
                details: self.details,
            }),
        )
            .into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs.max(1)),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Invalid(m) => ApiError::bad_request(m),
            StoreError::Transition(t) => ApiError::conflict(t.to_string()),
            other => ApiError::internal("database error").with_details(other.to_string()),
        }
    }
}

impl From<SchedulerError> for ApiError {
    fn from(e: SchedulerError) -> Self {
        match e {
            SchedulerError::Store(s) => s.into(),
            SchedulerError::Busy(m) => ApiError::conflict(m),
            e @ SchedulerError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            SchedulerError::Invalid(m) => ApiError::bad_request(m),
        }
    }
}

/// GitHub redelivers on a 5xx, so both failures answer one.
impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "cannot record the job")
                    .with_details(e.to_string())
            }
            IntakeError::Commit(e) => {
                ApiError::internal("database error").with_details(e.to_string())
            }
        }
    }
}

/// A JSON body extractor whose rejections use [`ApiError`]'s shape: a body
/// that is JSON but not the expected one (an unknown or missing field, a
/// wrong type) is a 400 whose `error` names the field.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::rejection::JsonRejection;
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(JsonRejection::JsonDataError(e)) => {
                let text = e.body_text();
                Err(ApiError::bad_request(body_error_summary(&text)).with_details(text))
            }
            Err(rej) => {
                Err(ApiError::new(rej.status(), "invalid request body")
                    .with_details(rej.body_text()))
            }
        }
    }
}

/// The headline of a body that does not fit its type, from serde's
/// message: the unknown or missing field by name when that is the fault.
pub fn body_error_summary(serde_message: &str) -> String {
    for (marker, what) in [
        ("unknown field `", "unknown field"),
        ("missing field `", "missing field"),
    ] {
        if let Some(rest) = serde_message.split(marker).nth(1)
            && let Some(name) = rest.split('`').next()
        {
            return format!("{what} \"{name}\" in the request body");
        }
    }
    "invalid request body".into()
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_errors_map_to_what_the_caller_can_do() {
        let status = |e: SchedulerError| ApiError::from(e).status;
        assert_eq!(
            status(SchedulerError::Busy("later".into())),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status(SchedulerError::ShuttingDown),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(SchedulerError::Invalid("name".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(SchedulerError::Store(StoreError::NotFound(
                "instance".into()
            ))),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn body_errors_name_the_field() {
        let unknown = "Failed to deserialize the JSON body into the target type: unknown field `max_runer`, expected one of `provider_name`, `image` at line 1 column 12";
        assert_eq!(
            body_error_summary(unknown),
            "unknown field \"max_runer\" in the request body"
        );
        assert_eq!(
            body_error_summary("missing field `name` at line 1 column 2"),
            "missing field \"name\" in the request body"
        );
        assert_eq!(
            body_error_summary("invalid type: string \"x\", expected u32"),
            "invalid request body"
        );
    }

    #[test]
    fn intake_failures_answer_5xx_so_github_redelivers() {
        assert_eq!(
            ApiError::from(IntakeError::ShuttingDown).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let commit = ApiError::from(IntakeError::Commit(std::sync::Arc::new(
            StoreError::Invalid("disk full".into()),
        )));
        assert_eq!(commit.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(commit.error, "database error");
    }
}
